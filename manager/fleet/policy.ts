/**
 * Scaling decisions as pure functions of a snapshot and the clock (no I/O, no mocks needed to
 * test them). The fleet gathers the snapshot, calls `planScale`, and applies the plan.
 */
import { Cron } from 'croner';
import type { InstanceState } from './states.js';

export interface PolicyInstance {
  readonly id: string;
  readonly state: InstanceState;
  readonly createdAt: number;
  /** When it last became idle (ms epoch), for idle instances. */
  readonly idleSince?: number;
  /** Fresh instances (never leased, useCount 0) can serve any credential class. */
  readonly useCount: number;
}

/** The knobs a schedule may override, with the names of gitlab-runner's `[runners.autoscaler]`. */
export interface IdleSettings {
  /** Idle job slots to keep warm. */
  readonly idleCount: number;
  /** How long an instance above the idle target may stay idle before it is scaled in. */
  readonly idleTimeMs: number;
  /** Extra idle capacity as a factor of the in-use capacity (0 = off). */
  readonly scaleFactor: number;
  /** Cap on what scale_factor adds (0 = no cap beyond max_instances). */
  readonly scaleFactorLimit: number;
}

/** One `[[pool.policy]]` block: in effect while any of its cron periods matches. */
export interface SchedulePolicy extends IdleSettings {
  readonly periods: readonly string[];
  readonly timezone: string;
}

export interface AdaptivePolicy {
  readonly enabled: boolean;
  /** Arrivals older than this no longer count towards the rate. */
  readonly windowMs: number;
  /** Head start the pool needs: the boot-to-ready time; 0 = use the observed median. */
  readonly leadTimeMs: number;
  /** How far above the mean demand to provision, in standard deviations (1.65 ≈ p95). */
  readonly headroom: number;
  /** Upper bound on the adaptive idle target (0 = max_instances). */
  readonly maxIdle: number;
}

export interface ThrottlePolicy {
  /** Instances launched per second, sustained (0 = unlimited). */
  readonly limitPerSecond: number;
  /** Instances that may be launched at once from a full bucket. */
  readonly burst: number;
}

export interface PoolPolicy extends IdleSettings {
  readonly maxInstances: number;
  readonly maxInstanceLifetimeMs: number;
  /** Schedules; the last one whose period matches wins, else the [pool] values apply. */
  readonly schedules?: readonly SchedulePolicy[];
  readonly adaptive?: AdaptivePolicy;
  readonly throttle?: ThrottlePolicy;
}

export interface PoolSnapshot {
  readonly now: number;
  readonly instances: Iterable<PolicyInstance>;
  /** Jobs waiting that no idle instance could serve. */
  readonly waiting: number;
  /** Instances asked for whose launch call has not returned yet. */
  readonly launching: number;
  /** While draining, nothing new is launched and idle instances go. */
  readonly draining: boolean;
  /** Idle slots the adaptive estimator asks for (already computed from the arrival rate). */
  readonly adaptiveIdle?: number;
  /** Launch tokens available right now (undefined = unthrottled). */
  readonly launchTokens?: number;
}

export interface ScalePlan {
  readonly launch: number;
  /** Idle instances to remove, by name (never a leased one). */
  readonly scaleIn: readonly string[];
  /** The idle target the plan aimed at, after schedule, scale factor and adaptive sizing. */
  readonly idleTarget: number;
  /** Instances the plan wants to exist once its launches land (the fleet's desired capacity). */
  readonly desired: number;
  /** The figures the decision was made from, for the one log line per decision. */
  readonly inputs: Readonly<Record<string, number | boolean | string>>;
}

const ACTIVE: ReadonlySet<InstanceState> = new Set(['creating', 'booting', 'idle', 'leased']);

// ------------------------------------------------------------------ schedules

const cronCache = new Map<string, Cron>();

function cronFor(pattern: string, timezone: string): Cron {
  const key = `${timezone}\u0000${pattern}`;
  let cron = cronCache.get(key);
  if (!cron) {
    cron = new Cron(pattern, { timezone: timezone || undefined, paused: true });
    cronCache.set(key, cron);
  }
  return cron;
}

/** Throws with the pattern in the message, for config validation. */
export function validatePeriod(pattern: string, timezone: string): string | undefined {
  try {
    cronFor(pattern, timezone);
    return undefined;
  } catch (error) {
    return `${pattern}: ${(error as Error).message}`;
  }
}

/**
 * The idle settings in effect at `now`: the last schedule with a matching period wins (as in
 * gitlab-runner), else the [pool] values. Periods are checked at the start of the minute, so a
 * 5-field cron such as "* 8-18 * * mon-fri" covers the whole minute.
 */
export function effectiveIdleSettings(policy: PoolPolicy, now: number): IdleSettings & { schedule: number } {
  const minute = new Date(now - (now % 60_000));
  const schedules = policy.schedules ?? [];
  for (let i = schedules.length - 1; i >= 0; i--) {
    const schedule = schedules[i] as SchedulePolicy;
    if (schedule.periods.some((p) => cronFor(p, schedule.timezone).match(minute))) {
      return { ...pick(schedule), schedule: i };
    }
  }
  return { ...pick(policy), schedule: -1 };
}

function pick(s: IdleSettings): IdleSettings {
  return {
    idleCount: s.idleCount,
    idleTimeMs: s.idleTimeMs,
    scaleFactor: s.scaleFactor,
    scaleFactorLimit: s.scaleFactorLimit,
  };
}

/** taskscaler's rule: idle = max(idle_count, min(in_use × scale_factor, scale_factor_limit)). */
export function scheduledIdleTarget(settings: IdleSettings, inUse: number): number {
  if (settings.scaleFactor <= 0) return settings.idleCount;
  const byFactor = Math.ceil(inUse * settings.scaleFactor);
  const capped = settings.scaleFactorLimit > 0 ? Math.min(byFactor, settings.scaleFactorLimit) : byFactor;
  return Math.max(settings.idleCount, capped);
}

// ------------------------------------------------------------------ adaptive warm pool

/**
 * Idle slots needed so that jobs arriving while replacements boot find a warm instance: with
 * single-use instances every arrival consumes one, and a replacement takes `leadTimeMs` to be
 * ready, so the pool must cover the arrivals of one lead time. Arrivals are taken as Poisson
 * with the recent rate; `headroom` standard deviations above the mean covers the burstiness.
 */
export function adaptiveIdleTarget(ratePerMs: number, leadTimeMs: number, adaptive: AdaptivePolicy): number {
  const mean = ratePerMs * leadTimeMs;
  if (!(mean > 0)) return 0;
  const target = Math.ceil(mean + adaptive.headroom * Math.sqrt(mean));
  return adaptive.maxIdle > 0 ? Math.min(target, adaptive.maxIdle) : target;
}

/** Arrival timestamps over a sliding window; O(1) amortised per arrival. */
export class ArrivalRate {
  private times: number[] = [];
  private head = 0;

  /** `since`: when counting began. Until a full window has passed, the rate is over what has. */
  constructor(private readonly since = 0) {}

  record(now: number): void {
    this.times.push(now);
  }

  /** Arrivals per ms over the last `windowMs`. */
  rate(now: number, windowMs: number): number {
    const from = now - windowMs;
    while (this.head < this.times.length && (this.times[this.head] as number) < from) this.head++;
    // Compact now and then so the array does not grow for ever.
    if (this.head > 1024 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head);
      this.head = 0;
    }
    // A daemon that started 5 minutes ago has seen 5 minutes of arrivals, not a window's worth:
    // dividing by the whole window would hide a busy fleet right after a restart. At least a
    // minute, so that the first arrival alone does not look like a flood.
    const span = Math.max(Math.min(windowMs, now - this.since), Math.min(windowMs, 60_000));
    return span > 0 ? (this.times.length - this.head) / span : 0;
  }
}

/** Median of recent boot-to-ready times, the adaptive pool's lead time when none is configured. */
export class LeadTime {
  private readonly samples: number[] = [];
  constructor(
    private readonly fallbackMs: number,
    private readonly keep = 64,
  ) {}

  record(ms: number): void {
    this.samples.push(ms);
    if (this.samples.length > this.keep) this.samples.shift();
  }

  observed(): boolean {
    return this.samples.length > 0;
  }

  median(): number {
    if (this.samples.length === 0) return this.fallbackMs;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length / 2)] as number;
  }
}

// ------------------------------------------------------------------ launch throttle

export interface TokenBucket {
  readonly tokens: number;
  readonly at: number;
}

/** The bucket refilled up to `now`. Unlimited throttles always report a full bucket. */
export function refill(bucket: TokenBucket, now: number, throttle: ThrottlePolicy | undefined): TokenBucket {
  if (!throttle || throttle.limitPerSecond <= 0) return { tokens: Number.POSITIVE_INFINITY, at: now };
  const elapsed = Math.max(0, now - bucket.at);
  const tokens = Math.min(throttle.burst, bucket.tokens + (elapsed * throttle.limitPerSecond) / 1000);
  return { tokens: Number.isFinite(tokens) ? tokens : throttle.burst, at: now };
}

export function take(bucket: TokenBucket, n: number): TokenBucket {
  return { tokens: bucket.tokens - n, at: bucket.at };
}

// ------------------------------------------------------------------ the plan

export function planScale(snapshot: PoolSnapshot, policy: PoolPolicy): ScalePlan {
  const active: PolicyInstance[] = [];
  for (const i of snapshot.instances) if (ACTIVE.has(i.state)) active.push(i);
  let idle = 0;
  let freshIdle = 0;
  let booting = 0;
  let leased = 0;
  for (const i of active) {
    if (i.state === 'idle') {
      idle++;
      if (i.useCount === 0) freshIdle++;
    } else if (i.state === 'leased') leased++;
    else booting++;
  }
  const settings = effectiveIdleSettings(policy, snapshot.now);
  const scheduled = scheduledIdleTarget(settings, leased);
  const adaptive = policy.adaptive?.enabled ? (snapshot.adaptiveIdle ?? 0) : 0;
  // The schedule is the floor; the adaptive estimate may only add to it.
  const idleTarget = snapshot.draining ? 0 : Math.min(policy.maxInstances, Math.max(scheduled, adaptive));

  // Instances on their way serve waiting jobs first; the warm pool comes on top.
  const coming = booting + snapshot.launching;
  const spareComing = Math.max(0, coming - snapshot.waiting);
  const uncoveredWaiting = Math.max(0, snapshot.waiting - coming);
  const idleShortfall = Math.max(0, idleTarget - freshIdle - spareComing);
  const headroom = Math.max(0, policy.maxInstances - active.length - snapshot.launching);
  const tokens = Math.max(0, Math.floor(snapshot.launchTokens ?? Number.POSITIVE_INFINITY));
  const wanted = Math.min(headroom, uncoveredWaiting + idleShortfall);
  const launch = snapshot.draining ? 0 : Math.min(wanted, tokens);

  const scaleIn: string[] = [];
  const gone = new Set<string>();
  // Worn-out instances go whatever the pool needs: the dead-man switch would end them anyway.
  for (const instance of active) {
    if (instance.state !== 'idle') continue;
    if (snapshot.now - instance.createdAt >= policy.maxInstanceLifetimeMs) {
      scaleIn.push(instance.id);
      gone.add(instance.id);
    }
  }
  if (snapshot.waiting === 0) {
    // Keep the idleTarget most recently idle; let the longest-idle go once past idle_time.
    const candidates = active
      .filter((i) => i.state === 'idle' && !gone.has(i.id))
      .sort((a, b) => (b.idleSince ?? 0) - (a.idleSince ?? 0));
    for (const instance of candidates.slice(idleTarget)) {
      const idleFor = snapshot.now - (instance.idleSince ?? snapshot.now);
      if (snapshot.draining || idleFor >= settings.idleTimeMs) scaleIn.push(instance.id);
    }
  }
  return {
    launch,
    scaleIn,
    idleTarget,
    desired: active.length + snapshot.launching + launch - scaleIn.length,
    inputs: {
      instances: active.length,
      max: policy.maxInstances,
      leased,
      idle,
      booting,
      launching: snapshot.launching,
      waiting: snapshot.waiting,
      idle_count: settings.idleCount,
      scale_factor: settings.scaleFactor,
      schedule: settings.schedule,
      adaptive_idle: adaptive,
      idle_target: idleTarget,
      throttled: launch < wanted,
      draining: snapshot.draining,
    },
  };
}

// ------------------------------------------------------------------ orphans

/** What GitLab said about a lease's job: 401/403 → over; 200 → running; anything else unknown. */
export type JobVerdict = 'over' | 'running' | 'unknown';

export interface ReapPolicy {
  /** An instance that is still not ready after this long, with no lease, is an orphan. */
  readonly bootGraceMs: number;
  /** A lease older than this is over, unless GitLab says the job still runs. */
  readonly maxJobLifetimeMs: number;
  /** How long a mark must stand before the instance is terminated (the second phase). */
  readonly recheckAfterMs: number;
}

export interface ReapCandidate {
  readonly id: string;
  readonly state: InstanceState;
  readonly createdAt: number;
  readonly leasedAt?: number;
  /** The freshest GitLab verdict for the lease's job, if it was checked. */
  readonly verdict?: JobVerdict;
  readonly markedAt?: number;
}

export interface ReapPlan {
  readonly mark: readonly { id: string; reason: string }[];
  readonly unmark: readonly string[];
  readonly terminate: readonly { id: string; reason: string }[];
}

/** Why an instance looks orphaned right now, or undefined. A running job always wins. */
export function orphanReason(c: ReapCandidate, now: number, policy: ReapPolicy): string | undefined {
  if (c.state === 'creating' || c.state === 'booting') {
    return now - c.createdAt > policy.bootGraceMs
      ? 'not ready and not leased after the boot grace'
      : undefined;
  }
  if (c.state !== 'leased') return undefined;
  if (c.verdict === 'running') return undefined;
  if (c.verdict === 'over') return 'GitLab no longer accepts the job token: the job is over';
  if (c.leasedAt !== undefined && now - c.leasedAt > policy.maxJobLifetimeMs)
    return 'the lease is older than max_job_lifetime';
  return undefined;
}

/** Two phases: a first sighting marks, a second sighting at least recheckAfter later terminates. */
export function planReap(candidates: readonly ReapCandidate[], now: number, policy: ReapPolicy): ReapPlan {
  const mark: { id: string; reason: string }[] = [];
  const unmark: string[] = [];
  const terminate: { id: string; reason: string }[] = [];
  for (const c of candidates) {
    const reason = orphanReason(c, now, policy);
    if (!reason) {
      if (c.markedAt !== undefined) unmark.push(c.id);
    } else if (c.markedAt === undefined) {
      mark.push({ id: c.id, reason });
    } else if (now - c.markedAt >= policy.recheckAfterMs) {
      terminate.push({ id: c.id, reason });
    }
  }
  return { mark, unmark, terminate };
}

// ------------------------------------------------------------------ stuck instances

/**
 * How long past the point where the fleet should have moved an instance on it may stay before it
 * counts as stuck: several reconcile ticks and a re-check, so a normal retry never shows.
 */
export const STUCK_AFTER_MS = 10 * 60_000;

export interface StuckLimits {
  /** instance_ready_timeout: a creating or booting instance is retired after it. */
  readonly readyTimeoutMs: number;
  /** max_job_lifetime when the reaper runs; without it a long lease is never stuck. */
  readonly maxJobLifetimeMs?: number;
}

/**
 * Whether an instance stayed in its state well past the fleet's own deadline for it: readiness
 * (creating, booting), max_job_lifetime (leased), or a terminate that keeps failing (draining,
 * terminating, failed: those are on their way out and cost money until they go). Idle is never
 * stuck: idle_time and scale-in decide, and a warm pool may idle all day.
 */
export function isStuck(
  i: {
    readonly state: InstanceState;
    readonly stateSince: number;
    readonly createdAt: number;
    readonly leasedAt?: number;
  },
  now: number,
  limits: StuckLimits,
): boolean {
  switch (i.state) {
    case 'creating':
    case 'booting':
      return now - i.createdAt > limits.readyTimeoutMs + STUCK_AFTER_MS;
    case 'leased':
      return (
        limits.maxJobLifetimeMs !== undefined &&
        now - (i.leasedAt ?? i.stateSince) > limits.maxJobLifetimeMs + STUCK_AFTER_MS
      );
    case 'draining':
    case 'terminating':
    case 'failed':
      return now - i.stateSince > STUCK_AFTER_MS;
    case 'idle':
    case 'terminated':
      return false;
  }
}
