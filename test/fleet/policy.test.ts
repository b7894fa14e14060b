/** The pure decisions, with plain values: no fleet, no provider, no timers. */
import { describe, expect, it } from 'vitest';
import {
  ArrivalRate,
  adaptiveIdleTarget,
  effectiveIdleSettings,
  orphanReason,
  type PolicyInstance,
  type PoolPolicy,
  planReap,
  planScale,
  refill,
  scheduledIdleTarget,
  take,
} from '../../manager/fleet/policy.js';

const MIN = 60_000;
const base: PoolPolicy = {
  idleCount: 2,
  idleTimeMs: 10 * MIN,
  scaleFactor: 0,
  scaleFactorLimit: 0,
  maxInstances: 10,
  maxInstanceLifetimeMs: 6 * 60 * MIN,
};
const at = (iso: string) => Date.parse(iso);
const inst = (
  id: string,
  state: PolicyInstance['state'],
  extra: Partial<PolicyInstance> = {},
): PolicyInstance => ({
  id,
  state,
  createdAt: 0,
  useCount: 0,
  ...extra,
});

describe('schedules', () => {
  const policy: PoolPolicy = {
    ...base,
    schedules: [
      // Office hours in Berlin: a warm pool of 8.
      {
        periods: ['* 8-17 * * mon-fri'],
        timezone: 'Europe/Berlin',
        idleCount: 8,
        idleTimeMs: 20 * MIN,
        scaleFactor: 0,
        scaleFactorLimit: 0,
      },
      // A later block wins where both match: the Monday-morning rush.
      {
        periods: ['* 8-9 * * mon'],
        timezone: 'Europe/Berlin',
        idleCount: 20,
        idleTimeMs: 5 * MIN,
        scaleFactor: 0.5,
        scaleFactorLimit: 4,
      },
    ],
  };

  it('uses [pool] values outside every period', () => {
    // 05:00 UTC is 07:00 in Berlin (summer time): before office hours.
    expect(effectiveIdleSettings(policy, at('2024-06-04T05:00:00Z'))).toMatchObject({
      idleCount: 2,
      schedule: -1,
    });
  });

  it('reads periods in the block time zone', () => {
    // 06:30 UTC = 08:30 Berlin on a Tuesday.
    expect(effectiveIdleSettings(policy, at('2024-06-04T06:30:00Z'))).toMatchObject({
      idleCount: 8,
      schedule: 0,
    });
  });

  it('lets the last matching block win', () => {
    // Monday 08:30 Berlin matches both blocks.
    expect(effectiveIdleSettings(policy, at('2024-06-03T06:30:20Z'))).toMatchObject({
      idleCount: 20,
      schedule: 1,
    });
  });

  it('covers the whole minute with a 5-field period', () => {
    expect(effectiveIdleSettings(policy, at('2024-06-04T06:30:59Z')).idleCount).toBe(8);
  });
});

describe('idle target', () => {
  it('follows taskscaler: max(idle_count, min(in_use × scale_factor, limit))', () => {
    const s = { idleCount: 2, idleTimeMs: 0, scaleFactor: 0.5, scaleFactorLimit: 5 };
    expect(scheduledIdleTarget(s, 0)).toBe(2);
    expect(scheduledIdleTarget(s, 7)).toBe(4);
    expect(scheduledIdleTarget(s, 100)).toBe(5);
    expect(scheduledIdleTarget({ ...s, scaleFactorLimit: 0 }, 100)).toBe(50);
    expect(scheduledIdleTarget({ ...s, scaleFactor: 0 }, 100)).toBe(2);
  });

  it('sizes the adaptive pool from the arrivals of one lead time, with headroom', () => {
    const adaptive = { enabled: true, windowMs: 10 * MIN, leadTimeMs: MIN, headroom: 1.65, maxIdle: 0 };
    expect(adaptiveIdleTarget(0, MIN, adaptive)).toBe(0);
    // 60 jobs/h and 1 min to boot: mean 1 arrival per lead time, plus 1.65 σ.
    expect(adaptiveIdleTarget(60 / 3_600_000, MIN, adaptive)).toBe(3);
    // 600 jobs/h: mean 10, σ ≈ 3.2.
    expect(adaptiveIdleTarget(600 / 3_600_000, MIN, adaptive)).toBe(16);
    expect(adaptiveIdleTarget(600 / 3_600_000, MIN, { ...adaptive, maxIdle: 5 })).toBe(5);
  });

  it('measures the arrival rate over a sliding window', () => {
    const rate = new ArrivalRate();
    for (let t = 0; t < 10 * MIN; t += MIN) rate.record(t);
    expect(rate.rate(10 * MIN, 10 * MIN)).toBeCloseTo(10 / (10 * MIN));
    expect(rate.rate(15 * MIN, 10 * MIN)).toBeCloseTo(5 / (10 * MIN));
    expect(rate.rate(60 * MIN, 10 * MIN)).toBe(0);
  });

  it('uses the adaptive estimate only above the schedule floor', () => {
    const policy: PoolPolicy = {
      ...base,
      idleCount: 3,
      adaptive: { enabled: true, windowMs: MIN, leadTimeMs: MIN, headroom: 1, maxIdle: 0 },
    };
    const snap = { now: 0, instances: [], waiting: 0, launching: 0, draining: false };
    expect(planScale({ ...snap, adaptiveIdle: 1 }, policy).idleTarget).toBe(3);
    expect(planScale({ ...snap, adaptiveIdle: 7 }, policy).idleTarget).toBe(7);
    expect(planScale({ ...snap, adaptiveIdle: 70 }, policy).idleTarget).toBe(10);
  });
});

describe('planScale', () => {
  const snap = { now: 100 * MIN, waiting: 0, launching: 0, draining: false };

  it('launches for waiting jobs and the idle shortfall, within max_instances', () => {
    const plan = planScale({ ...snap, instances: [inst('a', 'leased')], waiting: 3 }, base);
    expect(plan.launch).toBe(5);
    const full = planScale(
      { ...snap, instances: Array.from({ length: 9 }, (_, n) => inst(`i${n}`, 'leased')), waiting: 3 },
      base,
    );
    expect(full.launch).toBe(1);
  });

  it('counts booting instances and launches in flight towards waiting jobs first', () => {
    const plan = planScale({ ...snap, instances: [inst('b', 'booting')], launching: 2, waiting: 3 }, base);
    // Three coming cover the three waiting; only the warm pool of 2 is missing.
    expect(plan.launch).toBe(2);
  });

  it('holds launches to the tokens of the throttle and says it throttled', () => {
    const plan = planScale({ ...snap, instances: [], waiting: 8, launchTokens: 3.7 }, base);
    expect(plan.launch).toBe(3);
    expect(plan.inputs.throttled).toBe(true);
  });

  it('scales in only idle instances, longest idle first, past idle_time, never while jobs wait', () => {
    const instances = [
      inst('old', 'idle', { idleSince: 80 * MIN }),
      inst('older', 'idle', { idleSince: 70 * MIN }),
      inst('fresh', 'idle', { idleSince: 99 * MIN }),
      inst('recent', 'idle', { idleSince: 98 * MIN }),
      inst('busy', 'leased'),
    ];
    expect(planScale({ ...snap, instances }, base).scaleIn).toEqual(['old', 'older']);
    expect(planScale({ ...snap, instances, waiting: 1 }, base).scaleIn).toEqual([]);
  });

  it('retires idle instances at max lifetime whatever the pool needs, and everything idle when draining', () => {
    const instances = [
      inst('ancient', 'idle', { createdAt: -400 * MIN, idleSince: 99 * MIN }),
      inst('x', 'idle', { idleSince: 99 * MIN }),
      inst('job', 'leased'),
    ];
    expect(planScale({ ...snap, instances }, base).scaleIn).toEqual(['ancient']);
    const drain = planScale({ ...snap, instances, draining: true }, base);
    expect([...drain.scaleIn].sort()).toEqual(['ancient', 'x']);
    expect(drain.launch).toBe(0);
  });
});

describe('launch throttle', () => {
  it('refills at the limit up to the burst', () => {
    const throttle = { limitPerSecond: 2, burst: 10 };
    let bucket = { tokens: 10, at: 0 };
    bucket = take(bucket, 10);
    expect(refill(bucket, 1000, throttle).tokens).toBe(2);
    expect(refill(bucket, 60_000, throttle).tokens).toBe(10);
    expect(refill(bucket, 1000, undefined).tokens).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('orphan reaping', () => {
  const policy = { bootGraceMs: 15 * MIN, maxJobLifetimeMs: 60 * MIN, recheckAfterMs: MIN };
  const now = 200 * MIN;

  it('never calls an instance whose job GitLab says runs an orphan, however old the lease', () => {
    expect(
      orphanReason({ id: 'a', state: 'leased', createdAt: 0, leasedAt: 0, verdict: 'running' }, now, policy),
    ).toBeUndefined();
  });

  it('ends leases GitLab says are over, and leases past max_job_lifetime without a running verdict', () => {
    expect(
      orphanReason(
        { id: 'a', state: 'leased', createdAt: 0, leasedAt: now - MIN, verdict: 'over' },
        now,
        policy,
      ),
    ).toMatch(/over/);
    expect(
      orphanReason(
        { id: 'a', state: 'leased', createdAt: 0, leasedAt: now - 61 * MIN, verdict: 'unknown' },
        now,
        policy,
      ),
    ).toMatch(/max_job_lifetime/);
    expect(
      orphanReason(
        { id: 'a', state: 'leased', createdAt: 0, leasedAt: now - 59 * MIN, verdict: 'unknown' },
        now,
        policy,
      ),
    ).toBeUndefined();
  });

  it('calls an instance never ready after the boot grace an orphan, and an idle one never', () => {
    expect(orphanReason({ id: 'b', state: 'booting', createdAt: now - 16 * MIN }, now, policy)).toMatch(
      /boot grace/,
    );
    expect(
      orphanReason({ id: 'b', state: 'booting', createdAt: now - 14 * MIN }, now, policy),
    ).toBeUndefined();
    expect(orphanReason({ id: 'i', state: 'idle', createdAt: 0 }, now, policy)).toBeUndefined();
  });

  it('marks first, terminates only on a second sighting after the re-check delay, unmarks when it recovers', () => {
    const over = { id: 'a', state: 'leased' as const, createdAt: 0, leasedAt: 0, verdict: 'over' as const };
    expect(planReap([over], now, policy)).toEqual({
      mark: [{ id: 'a', reason: expect.any(String) }],
      unmark: [],
      terminate: [],
    });
    expect(planReap([{ ...over, markedAt: now - 30_000 }], now, policy).terminate).toEqual([]);
    expect(planReap([{ ...over, markedAt: now - MIN }], now, policy).terminate).toEqual([
      { id: 'a', reason: expect.any(String) },
    ]);
    expect(planReap([{ ...over, verdict: 'running', markedAt: now - MIN }], now, policy)).toEqual({
      mark: [],
      unmark: ['a'],
      terminate: [],
    });
  });
});
