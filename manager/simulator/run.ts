/**
 * Replays a trace against the real Fleet (manager/fleet/fleet.ts, unchanged) with the simulated
 * provider, in virtual time. Each trace job acquires like `prepare` does, holds its instance for
 * its duration, and releases like `cleanup`; a spot interruption fails it as a system failure and
 * GitLab's retry submits it again.
 */
import { pino } from 'pino';
import type { FleetObserver, FleetTuning, InstanceRecord } from '../fleet/fleet.js';
import { Fleet } from '../fleet/fleet.js';
import { MemoryLeaseStore } from '../fleet/lease-journal.js';
import type { PoolPolicy } from '../fleet/policy.js';
import type { InstanceState } from '../fleet/states.js';
import { seededRng } from './random.js';
import { AWS_CALLS, SimProvider, type SimProviderOptions } from './sim-provider.js';
import type { TraceJob } from './trace.js';
import { VirtualClock } from './virtual-clock.js';

export interface SimulationOptions {
  readonly policy: PoolPolicy;
  readonly seed?: number;
  /** Virtual start time (schedules are evaluated against it). Default: Monday 2024-06-03 00:00 UTC. */
  readonly startMs?: number;
  readonly provider?: Partial<Omit<SimProviderOptions, 'clock' | 'rng' | 'onInterrupt'>>;
  readonly tuning?: Partial<Omit<FleetTuning, 'policy'>>;
  /** Called once per simulated reconcile-sized step, for the bench's measurements. */
  readonly onStep?: (fleet: Fleet, provider: SimProvider, clock: VirtualClock) => void;
  /** Also report waits of jobs arriving after this offset (e.g. once a cold pool has warmed up). */
  readonly steadyFromMs?: number;
}

export interface SimulationReport {
  jobs: number;
  jobsFailed: number;
  jobsRetried: number;
  waitP50s: number;
  waitP95s: number;
  waitP99s: number;
  waitMaxs: number;
  /** p95 wait of the jobs that arrived after `steadyFromMs` (equals waitP95s without it). */
  steadyWaitP95s: number;
  /** Share of jobs that found a warm instance (waited under one second). */
  warmShare: number;
  idleInstanceHours: number;
  bootingInstanceHours: number;
  instanceHours: number;
  instancesLaunched: number;
  peakInstances: number;
  peakLeased: number;
  awsCalls: number;
  awsCallsPerJob: number;
  /** AWS API calls by action: they add up to awsCalls. */
  calls: Record<string, number>;
  /** What the fleet asks the provider that is not an AWS call (SSH readiness probes, cached connect info). */
  otherCalls: Record<string, number>;
  errors: Record<string, number>;
  interruptions: number;
  simulatedHours: number;
  wallMs: number;
}

export const DEFAULT_START = Date.parse('2024-06-03T00:00:00Z');

export const DEFAULT_PROVIDER: Omit<SimProviderOptions, 'clock' | 'rng' | 'onInterrupt'> = {
  bootMedianMs: 50_000,
  bootSigma: 0.25,
  apiLatencyMs: 120,
  apiRatePerSecond: 20,
  apiBurst: 100,
  capacityErrorRate: 0.02,
  interruptionsPerHour: 0.01,
};

/** Accumulates instance-hours per state from the fleet's state changes. */
class Accounting implements FleetObserver {
  readonly hours: Partial<Record<InstanceState, number>> = {};
  private readonly since = new Map<string, { state: InstanceState; at: number }>();
  alive = 0;
  peak = 0;
  leased = 0;
  peakLeased = 0;

  instanceState(instance: InstanceRecord, from: InstanceState | undefined, now: number): void {
    const open = this.since.get(instance.id);
    if (open) this.hours[open.state] = (this.hours[open.state] ?? 0) + (now - open.at) / 3_600_000;
    if (from === undefined) this.alive++;
    if (from === 'leased') this.leased--;
    if (instance.state === 'leased') this.leased++;
    this.peakLeased = Math.max(this.peakLeased, this.leased);
    if (instance.state === 'terminated') {
      this.alive--;
      this.since.delete(instance.id);
    } else {
      this.since.set(instance.id, { state: instance.state, at: now });
    }
    this.peak = Math.max(this.peak, this.alive);
  }

  close(now: number): void {
    for (const [id, open] of this.since) {
      this.hours[open.state] = (this.hours[open.state] ?? 0) + (now - open.at) / 3_600_000;
      this.since.set(id, { state: open.state, at: now });
    }
  }
}

export async function simulate(
  trace: readonly TraceJob[],
  options: SimulationOptions,
): Promise<SimulationReport> {
  const wallStart = performance.now();
  const start = options.startMs ?? DEFAULT_START;
  const clock = new VirtualClock(start);
  const rng = seededRng(options.seed ?? 1);
  const accounting = new Accounting();
  const running = new Map<string, { jobId: string; done: unknown; job: TraceJob }>();
  const waits: number[] = [];
  const steadyWaits: number[] = [];
  const steadyFrom = start + (options.steadyFromMs ?? 0);
  let failed = 0;
  let retried = 0;
  let finished = 0;
  let attempt = 0;

  const provider = new SimProvider({
    ...DEFAULT_PROVIDER,
    ...options.provider,
    clock,
    rng,
    onInterrupt: (id) => {
      const run = running.get(id);
      if (!run) return;
      // The run hook fails the stage as a system failure; cleanup releases; GitLab retries.
      running.delete(id);
      clock.clearTimeout(run.done);
      retried++;
      void fleet.release(run.jobId, 'spot interruption');
      submit(run.job);
    },
  });
  const tuning: FleetTuning = {
    policy: options.policy,
    maxUseCount: 1,
    acquireTimeoutMs: 15 * 60_000,
    readyTimeoutMs: 10 * 60_000,
    reconcileIntervalMs: 30_000,
    reconcileFastIntervalMs: 2_000,
    ...options.tuning,
  };
  const fleet = new Fleet({
    provider,
    journal: new MemoryLeaseStore(),
    log: pino({ level: 'silent' }),
    fleetName: 'sim',
    managerId: 'sim',
    tuning,
    clock,
    observer: accounting,
  });

  const submit = (job: TraceJob) => {
    const arrived = clock.now();
    const jobId = `job-${++attempt}`;
    fleet
      .acquire({ id: jobId }, { credentialClass: 'default', notes: [] }, () => undefined)
      .then(
        (grant) => {
          waits.push(clock.now() - arrived);
          if (arrived >= steadyFrom) steadyWaits.push(clock.now() - arrived);
          const done = clock.setTimeout(() => {
            running.delete(grant.instanceId);
            finished++;
            void fleet.release(jobId, 'job finished');
          }, job.durationMs);
          running.set(grant.instanceId, { jobId, done, job });
        },
        () => {
          failed++;
          finished++;
        },
      );
  };

  // Starting lists the (simulated) cloud, which answers only as virtual time moves.
  let started = false;
  const starting = fleet.start().then(() => {
    started = true;
  });
  for (let step = 0; step < 600 && !started; step++) await clock.runUntil(clock.now() + 1000, () => started);
  await starting;
  for (const job of trace) clock.setTimeout(() => submit(job), job.arrivalMs);
  const lastArrival = trace.length > 0 ? (trace[trace.length - 1] as TraceJob).arrivalMs : 0;
  const done = () => finished >= trace.length;
  // Step an hour at a time so long traces can report progress and the bench can sample.
  const hardStop = start + lastArrival + 24 * 3_600_000;
  while (!done() && clock.now() < hardStop) {
    await clock.runUntil(Math.min(hardStop, clock.now() + 60_000), done);
    options.onStep?.(fleet, provider, clock);
  }
  const end = clock.now();
  accounting.close(end);
  // Stopping waits for calls in flight, which finish only as virtual time moves on.
  let stopped = false;
  const stopping = fleet.stop().then(() => {
    stopped = true;
  });
  for (let step = 0; step < 600 && !stopped; step++) await clock.runUntil(clock.now() + 1000, () => stopped);
  await stopping;

  const sorted = [...waits].sort((a, b) => a - b);
  const q = (p: number) =>
    (sorted.length ? (sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number) : 0) /
    1000;
  const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
  const h = accounting.hours;
  const instanceHours = Object.values(h).reduce((a, b) => a + (b ?? 0), 0);
  return {
    jobs: trace.length,
    jobsFailed: failed,
    jobsRetried: retried,
    waitP50s: round(q(0.5), 1),
    waitP95s: round(q(0.95), 1),
    waitP99s: round(q(0.99), 1),
    waitMaxs: round((sorted[sorted.length - 1] ?? 0) / 1000, 1),
    steadyWaitP95s: round(quantile(steadyWaits, 0.95) / 1000, 1),
    warmShare: round(sorted.filter((w) => w < 1000).length / Math.max(1, sorted.length), 3),
    idleInstanceHours: round(h.idle ?? 0),
    bootingInstanceHours: round((h.booting ?? 0) + (h.creating ?? 0)),
    instanceHours: round(instanceHours),
    instancesLaunched: provider.launched,
    peakInstances: accounting.peak,
    peakLeased: accounting.peakLeased,
    awsCalls: provider.awsCalls,
    awsCallsPerJob: round(provider.awsCalls / Math.max(1, trace.length)),
    calls: Object.fromEntries(Object.entries(provider.calls).filter(([k]) => AWS_CALLS.has(k))),
    otherCalls: Object.fromEntries(Object.entries(provider.calls).filter(([k]) => !AWS_CALLS.has(k))),
    errors: { ...provider.errors },
    interruptions: provider.interruptions,
    simulatedHours: round((end - start) / 3_600_000),
    wallMs: Math.round(performance.now() - wallStart),
  };
}

/** The pool policy the simulator starts from; `idleCount` and `adaptive` are what runs compare. */
export function simPolicy(overrides: Partial<PoolPolicy> = {}): PoolPolicy {
  return {
    idleCount: 0,
    idleTimeMs: 5 * 60_000,
    scaleFactor: 0,
    scaleFactorLimit: 0,
    maxInstances: 400,
    maxInstanceLifetimeMs: 6 * 3_600_000,
    throttle: { limitPerSecond: 100, burst: 400 },
    ...overrides,
  };
}

function quantile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}
