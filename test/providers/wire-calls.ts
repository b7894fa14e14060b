/**
 * AWS calls per job, counted on the wire: the real Fleet and the real AwsProvider (real SDK
 * clients) against the wire-level fake, which logs every request it answers. Jobs acquire and
 * release as `prepare` and `cleanup` do. Only the SSH part of readiness is replaced (no sshd per
 * instance: it makes no AWS call); an instance counts as reachable once the fake runs it.
 *
 * Everything from the daemon's start to the last termination is counted, start-up calls and
 * every listing included, failed and retried attempts included, and divided by the jobs.
 *
 * Time is scaled down (reconcile every second, boots of 50 ms, jobs of half a second) so a run
 * takes seconds. What matters for the listing's share is the ratio of the reconcile interval to
 * the job spacing: the steady stream (a job every half interval) stands for 240 jobs an hour at
 * the default 30 s interval.
 */
import { pino } from 'pino';
import { Fleet, type FleetTuning } from '../../manager/fleet/fleet.js';
import { MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import { type AwsWorld, awsProvider, startAwsWorld } from './aws-harness.js';

export interface CallScenario {
  readonly name: 'burst' | 'steady';
  readonly jobs: number;
  /** Between job arrivals (0: all at once). */
  readonly spacingMs: number;
  /** How long each job holds its instance. */
  readonly holdMs: number;
  readonly reconcileMs: number;
}

export const BURST: CallScenario = { name: 'burst', jobs: 100, spacingMs: 0, holdMs: 500, reconcileMs: 1000 };
export const STEADY: CallScenario = {
  name: 'steady',
  jobs: 60,
  spacingMs: 500,
  holdMs: 500,
  reconcileMs: 1000,
};

/** Provider settings of the run: a launch rate that does not hold the burst back. */
export const CALLS_AWS_CONFIG = { launch_rate: 50, launch_burst: 100 };

export interface CallCount {
  readonly mode: 'asg' | 'fleet';
  readonly scenario: CallScenario['name'];
  readonly jobs: number;
  readonly total: number;
  readonly perJob: number;
  readonly byAction: Record<string, number>;
  /** IAM actions of every call (see the fake's CallRecord.iamActions). */
  readonly iamActions: string[];
  readonly wallMs: number;
}

export function scenarioTuning(s: CallScenario): FleetTuning {
  return {
    policy: {
      idleCount: 0,
      idleTimeMs: 60_000,
      scaleFactor: 0,
      scaleFactorLimit: 0,
      maxInstances: s.jobs + 10,
      maxInstanceLifetimeMs: 6 * 3_600_000,
    },
    maxUseCount: 1,
    acquireTimeoutMs: 120_000,
    readyTimeoutMs: 60_000,
    reconcileIntervalMs: s.reconcileMs,
    reconcileFastIntervalMs: Math.max(100, s.reconcileMs / 5),
  };
}

export async function wireCalls(mode: 'asg' | 'fleet', s: CallScenario): Promise<CallCount> {
  const started = performance.now();
  const world: AwsWorld = await startAwsWorld({
    backing: false,
    eventualConsistencyMs: 300,
    maxGroupSize: s.jobs + 20,
  });
  const fake = world.fake;
  const handle = awsProvider(world, mode, {
    fleetName: 'calls',
    managerId: 'm1',
    config: CALLS_AWS_CONFIG,
    // Reachable once EC2 says running (the fake's instances have no sshd here).
    sshProbe: async (info) =>
      fake.instances().some((i) => i.PrivateIpAddress === info.host && i.State === 'running')
        ? { ready: true }
        : { ready: false, reason: 'not running yet' },
  });
  const fleet = new Fleet({
    provider: handle.provider,
    journal: new MemoryLeaseStore(),
    log: pino({ level: 'silent' }),
    fleetName: 'calls',
    managerId: 'm1',
    tuning: scenarioTuning(s),
  });
  try {
    fake.clearCalls();
    await fleet.start();
    const jobs: Promise<void>[] = [];
    for (let n = 0; n < s.jobs; n++) {
      if (n > 0 && s.spacingMs > 0) await sleep(s.spacingMs);
      const id = `job-${n}`;
      jobs.push(
        fleet
          .acquire({ id }, { credentialClass: 'default', notes: [] }, () => undefined)
          .then(() => sleep(s.holdMs))
          .then(() => fleet.release(id, 'job finished'))
          .then(() => undefined),
      );
    }
    await Promise.all(jobs);
    // Until the last instance is terminated and the fleet has forgotten it (bounded).
    for (let i = 0; i < 600 && fleet.snapshot().instances.length > 0; i++) {
      await sleep(100);
    }
    if (fleet.snapshot().instances.length > 0) throw new Error('instances left after the run');
    await fleet.stop();
    const calls = fake.calls();
    const byAction: Record<string, number> = {};
    for (const c of calls) {
      const key = c.error ? `${c.action}(${c.error})` : c.action;
      byAction[key] = (byAction[key] ?? 0) + 1;
    }
    return {
      mode,
      scenario: s.name,
      jobs: s.jobs,
      total: calls.length,
      perJob: Math.round((calls.length / s.jobs) * 100) / 100,
      byAction,
      iamActions: [...new Set(calls.flatMap((c) => c.iamActions))].sort(),
      wallMs: Math.round(performance.now() - started),
    };
  } finally {
    await fleet.stop();
    await world.close();
    handle.cleanup();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
