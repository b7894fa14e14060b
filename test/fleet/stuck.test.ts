/**
 * Stuck instances: the pure rule (plain values) and the real Fleet in virtual time, read through
 * the real /metrics registry, so an alarm on runner_fleet_stuck_instances sees what ops would.
 */
import { describe, expect, it } from 'vitest';
import { isStuck, STUCK_AFTER_MS } from '../../manager/fleet/policy.js';
import { FleetMetrics } from '../../manager/metrics/metrics.js';
import type { VirtualClock } from '../../manager/simulator/virtual-clock.js';
import { cred, job, MemoryProvider, MIN, makeFleet, noop, startClock, tuning } from './support.js';

async function advance(clock: VirtualClock, ms: number): Promise<void> {
  await clock.runUntil(clock.now() + ms);
}

describe('isStuck', () => {
  const limits = { readyTimeoutMs: 10 * MIN, maxJobLifetimeMs: 60 * MIN };
  const at = (state: Parameters<typeof isStuck>[0]['state'], ageMs: number, extra = {}) =>
    isStuck({ state, stateSince: 0, createdAt: 0, ...extra }, ageMs, limits);

  it('counts booting past the ready timeout plus the slack, not before', () => {
    expect(at('booting', 10 * MIN + STUCK_AFTER_MS)).toBe(false);
    expect(at('booting', 10 * MIN + STUCK_AFTER_MS + 1)).toBe(true);
    expect(at('creating', 10 * MIN + STUCK_AFTER_MS + 1)).toBe(true);
  });

  it('counts a lease past max_job_lifetime only when the reaper has one', () => {
    expect(at('leased', 60 * MIN + STUCK_AFTER_MS + 1, { leasedAt: 0 })).toBe(true);
    expect(at('leased', 60 * MIN, { leasedAt: 0 })).toBe(false);
    expect(
      isStuck({ state: 'leased', stateSince: 0, createdAt: 0 }, 100 * 60 * MIN, { readyTimeoutMs: 1 }),
    ).toBe(false);
  });

  it('counts terminating, draining and failed by the time in that state; idle never', () => {
    for (const state of ['terminating', 'draining', 'failed'] as const) {
      expect(at(state, STUCK_AFTER_MS)).toBe(false);
      expect(at(state, STUCK_AFTER_MS + 1)).toBe(true);
    }
    expect(at('idle', 1000 * MIN)).toBe(false);
  });
});

/** Terminate always fails, as with a revoked permission: the instance stays `terminating`. */
class FailingTerminate extends MemoryProvider {
  override async terminate(): Promise<void> {
    throw Object.assign(new Error('not authorized'), { name: 'UnauthorizedOperation' });
  }
}

async function stuckSeries(metrics: FleetMetrics): Promise<Record<string, number>> {
  const text = await metrics.registry.metrics();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^runner_fleet_stuck_instances\{state="(\w+)"\} (\d+)$/gm))
    out[m[1]!] = Number(m[2]);
  return out;
}

describe('runner_fleet_stuck_instances', () => {
  it('shows an instance whose terminate keeps failing once it has been terminating for too long', async () => {
    const clock = startClock();
    const provider = new FailingTerminate(clock);
    const metrics = new FleetMetrics();
    const { fleet } = makeFleet(clock, provider, tuning({}, { idleCount: 0 }), { observer: metrics });
    metrics.attach(fleet);
    await fleet.start();
    const grant = fleet.acquire(job('1'), cred, noop);
    await advance(clock, MIN);
    const { instanceId } = await grant;
    // max_use_count 1: the release retires it; every terminate call fails.
    await fleet.release('1', 'done');
    await advance(clock, MIN);
    expect(fleet.snapshot().instances.find((i) => i.id === instanceId)?.state).toBe('terminating');
    // Every state is exported, zeros included, so a sum over it is never an absent series.
    expect(Object.keys(await stuckSeries(metrics)).sort()).toEqual(
      ['booting', 'creating', 'draining', 'failed', 'idle', 'leased', 'terminated', 'terminating'].sort(),
    );
    expect((await stuckSeries(metrics)).terminating).toBe(0);
    await advance(clock, STUCK_AFTER_MS);
    expect((await stuckSeries(metrics)).terminating).toBe(1);
    expect(provider.alive()).toContain(instanceId);
    await fleet.stop();
  });
});
