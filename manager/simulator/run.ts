/**
 * Replays a trace against the real Fleet (manager/fleet/fleet.ts) and the real AWS provider
 * (manager/providers/aws/, through the real SDK) on a simulated EC2 and Auto Scaling, in virtual
 * time (sim-aws.ts, sim-cloud.ts). Each trace job acquires like `prepare` does, holds its instance
 * for its duration, and releases like `cleanup`; a spot interruption fails it as a system failure
 * and GitLab's retry submits it again. AWS calls are counted where the simulated cloud answers
 * them, every attempt included: what AWS would see from the provider.
 */
import { pino } from 'pino';
import type { FleetObserver, FleetTuning, InstanceRecord } from '../fleet/fleet.js';
import { Fleet } from '../fleet/fleet.js';
import { MemoryLeaseStore } from '../fleet/lease-journal.js';
import type { PoolPolicy } from '../fleet/policy.js';
import type { InstanceState } from '../fleet/states.js';
import { type SimAws, type SimMode, simAws } from './sim-aws.js';
import type { SimCloudOptions } from './sim-cloud.js';
import type { TraceJob } from './trace.js';
import { VirtualClock } from './virtual-clock.js';

export interface SimulationOptions {
  readonly policy: PoolPolicy;
  readonly seed?: number;
  /** Virtual start time (schedules are evaluated against it). Default: Monday 2024-06-03 00:00 UTC. */
  readonly startMs?: number;
  /** The AWS provider's launch mode (default fleet). */
  readonly mode?: SimMode;
  /** `[aws]` keys over the simulator's defaults, e.g. `{ launch_rate: 4 }`. */
  readonly aws?: Record<string, unknown>;
  /** The simulated cloud's timings and faults over DEFAULT_CLOUD. */
  readonly cloud?: Partial<CloudSettings>;
  readonly tuning?: Partial<Omit<FleetTuning, 'policy'>>;
  /** asg mode: how long a raise may wait for the listing (the provider's default otherwise). */
  readonly asgLaunchWaitMs?: number;
  /** Called once per simulated reconcile-sized step, for the bench's measurements. */
  readonly onStep?: (fleet: Fleet, sim: SimAws, clock: VirtualClock) => void;
  /** Also report waits of jobs arriving after this offset (e.g. once a cold pool has warmed up). */
  readonly steadyFromMs?: number;
  /**
   * After the last job, run on until the fleet has no instance left (bounded), so the final
   * terminations and listings are counted, as the wire count does.
   */
  readonly untilEmpty?: boolean;
}

export type CloudSettings = Omit<SimCloudOptions, 'clock' | 'seed' | 'onInterrupt'>;

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
  mode: SimMode;
  /** `[aws] launch_rate` / `launch_burst` the run used. */
  launchRate: number;
  launchBurst: number;
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

export const DEFAULT_CLOUD: CloudSettings = {
  bootMedianMs: 50_000,
  bootSigma: 0.25,
  apiLatencyMs: 120,
  launchLatencyFactor: 3,
  // EC2's documented default request buckets (per API): non-mutating 100 / 20 per s, mutating
  // 200 / 5 per s, RunInstances 1,000 / 2 per s. Auto Scaling publishes none: a guess.
  apiBuckets: { describe: [100, 20], mutating: [200, 5], run: [1000, 2], autoscaling: [100, 10] },
  capacityErrorRate: 0.02,
  interruptionsPerHour: 0.01,
  consistencyMs: 2_000,
  shuttingDownMs: 30_000,
  terminatedRetentionMs: 3_600_000,
  asgLaunchDelayMs: 2_000,
  asgRetryMs: 10_000,
  asgMaxSize: 2_000,
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
  const accounting = new Accounting();
  const running = new Map<string, { jobId: string; done: unknown; job: TraceJob }>();
  const waits: number[] = [];
  const steadyWaits: number[] = [];
  const steadyFrom = start + (options.steadyFromMs ?? 0);
  let failed = 0;
  let retried = 0;
  let finished = 0;
  let attempt = 0;

  const mode = options.mode ?? 'fleet';
  const sim = simAws({
    mode,
    clock,
    seed: options.seed ?? 1,
    cloud: { ...DEFAULT_CLOUD, ...options.cloud },
    // Spot, since the simulated cloud interrupts instances.
    aws: { market: 'spot', ...options.aws },
    fleetName: 'sim',
    managerId: 'sim',
    log: pino({ level: 'silent' }),
    maxLifetimeMs: options.policy.maxInstanceLifetimeMs + 3_600_000,
    ...(options.asgLaunchWaitMs !== undefined ? { asgLaunchWaitMs: options.asgLaunchWaitMs } : {}),
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
    provider: sim.provider,
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
    options.onStep?.(fleet, sim, clock);
  }
  if (options.untilEmpty) {
    const empty = () => fleet.snapshot().instances.length === 0;
    for (let step = 0; step < 600 && !empty(); step++) await clock.runUntil(clock.now() + 1000, empty);
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
  sim.close();
  const cloud = sim.cloud;

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
    instancesLaunched: cloud.launched,
    peakInstances: accounting.peak,
    peakLeased: accounting.peakLeased,
    mode,
    launchRate: sim.config.launch_rate,
    launchBurst: sim.config.launch_burst,
    awsCalls: cloud.total,
    awsCallsPerJob: round(cloud.total / Math.max(1, trace.length)),
    calls: { ...cloud.calls },
    otherCalls: { probe: sim.probes },
    errors: { ...cloud.errors },
    interruptions: cloud.interruptions,
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
