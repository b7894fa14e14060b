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
 * the job spacing: the steady stream (a job every half interval on average) stands for 240 jobs an
 * hour at the default 30 s interval. Its gaps and holds vary (seeded, ±50 %): a stream in lock-step
 * with the fleet's one-second timers would make the count hang on which of two timers fires first.
 *
 * `simulatedCalls` runs the same stream through the simulator (manager/simulator/), whose AWS
 * calls come from the same Fleet and AwsProvider on a simulated cloud in virtual time.
 */
import { pino } from 'pino';
import { Fleet, type FleetTuning } from '../../manager/fleet/fleet.js';
import { MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import { seededRng } from '../../manager/simulator/random.js';
import { type CloudSettings, DEFAULT_CLOUD, simulate } from '../../manager/simulator/run.js';
import { type AwsWorld, awsProvider, startAwsWorld } from './aws-harness.js';

export interface CallScenario {
  readonly name: 'burst' | 'steady';
  readonly jobs: number;
  /** Between job arrivals (0: all at once); the mean when `jitter` is set. */
  readonly spacingMs: number;
  /** How long each job holds its instance; the mean when `jitter` is set. */
  readonly holdMs: number;
  readonly reconcileMs: number;
  /** Gaps and holds drawn uniformly within ± this share of their mean (seeded). */
  readonly jitter?: number;
}

export const BURST: CallScenario = { name: 'burst', jobs: 100, spacingMs: 0, holdMs: 500, reconcileMs: 1000 };
export const STEADY: CallScenario = {
  name: 'steady',
  jobs: 60,
  spacingMs: 500,
  holdMs: 500,
  reconcileMs: 1000,
  jitter: 0.5,
};

/** The scenario's job stream: arrival offsets and holds, the same for every run. */
export function jobStream(s: CallScenario): { arrivalMs: number; durationMs: number }[] {
  const rng = seededRng(20261127);
  const vary = (mean: number) => (s.jitter ? mean * (1 - s.jitter + 2 * s.jitter * rng()) : mean);
  let at = 0;
  return Array.from({ length: s.jobs }, (_, n) => {
    if (n > 0) at += vary(s.spacingMs);
    return { arrivalMs: Math.round(at), durationMs: Math.round(vary(s.holdMs)) };
  });
}

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
  /**
   * The job stream as it ran: when each job arrived (ms after the fleet started) and how long it
   * held its instance. Real timers run late on a loaded machine; the simulator replays this.
   */
  readonly trace: { arrivalMs: number; durationMs: number }[];
  /** Every call, ms after the fleet's start: where two runs differ, this shows when. */
  readonly timeline: { at: number; action: string }[];
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
    const startedAt = Date.now();
    await fleet.start();
    const t0 = performance.now();
    const trace: CallCount['trace'] = [];
    const jobs: Promise<void>[] = [];
    for (const [n, planned] of jobStream(s).entries()) {
      const wait = t0 + planned.arrivalMs - performance.now();
      if (wait > 0) await sleep(wait);
      const id = `job-${n}`;
      const job = { arrivalMs: performance.now() - t0, durationMs: planned.durationMs };
      trace.push(job);
      jobs.push(
        fleet
          .acquire({ id }, { credentialClass: 'default', notes: [] }, () => undefined)
          .then(async () => {
            const held = performance.now();
            await sleep(planned.durationMs);
            job.durationMs = performance.now() - held;
          })
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
      trace,
      timeline: calls.map((c) => ({ at: c.at - startedAt, action: c.action })),
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

/**
 * The simulated cloud set to the wire fake's timings (test/providers/aws-harness.ts): 50 ms from
 * launch to reachable, 50 ms shutting down, 300 ms of eventual consistency, Auto Scaling launching
 * 200 ms after a raise; no faults, no throttling (the fake injects none here).
 */
export function wireLikeCloud(s: CallScenario): CloudSettings {
  return {
    ...DEFAULT_CLOUD,
    bootMedianMs: 50,
    bootSigma: 0,
    // Measured on the wire (SDK send to answer, loaded 2-core machine): median 17-23 ms a call.
    apiLatencyMs: 20,
    launchLatencyFactor: 1,
    apiBuckets: { describe: [1e6, 1e6], mutating: [1e6, 1e6], run: [1e6, 1e6], autoscaling: [1e6, 1e6] },
    capacityErrorRate: 0,
    interruptionsPerHour: 0,
    consistencyMs: 300,
    shuttingDownMs: 50,
    asgLaunchDelayMs: 200,
    asgRetryMs: 1_000,
    asgMaxSize: s.jobs + 20,
  };
}

/**
 * The same job stream through the simulator: the same Fleet tuning and `[aws]` settings, the real
 * AwsProvider on the simulated cloud in virtual time, counted from start to the last termination
 * as on the wire.
 */
export async function simulatedCalls(
  mode: 'asg' | 'fleet',
  s: CallScenario,
  /** Timing taken from a wire run of the same scenario (see wireTiming); nominal by default. */
  timing?: WireTiming,
): Promise<CallCount> {
  const started = performance.now();
  const { policy, ...tuning } = scenarioTuning(s);
  const trace = timing?.trace ?? jobStream(s);
  const timeline: CallCount['timeline'] = [];
  let t0: number | undefined;
  const r = await simulate(trace, {
    policy,
    tuning,
    mode,
    seed: 1,
    aws: { ...CALLS_AWS_CONFIG, market: 'on-demand' },
    cloud: {
      ...wireLikeCloud(s),
      ...(timing?.launchMs ? { launchLatencyFactor: timing.launchMs / wireLikeCloud(s).apiLatencyMs } : {}),
      onCall: (action, at) => {
        t0 ??= at;
        timeline.push({ at: at - t0, action });
      },
    },
    asgLaunchWaitMs: 5_000,
    untilEmpty: true,
  });
  return {
    mode,
    scenario: s.name,
    jobs: r.jobs,
    total: r.awsCalls,
    perJob: r.awsCallsPerJob,
    byAction: {
      ...r.calls,
      ...Object.fromEntries(Object.entries(r.errors).map(([k, v]) => [`error ${k}`, v])),
    },
    iamActions: [],
    wallMs: Math.round(performance.now() - started),
    trace: [...trace],
    timeline,
  };
}

export interface WireTiming {
  /** The job stream as the wire run had it (real timers run late on a loaded machine). */
  readonly trace: CallCount['trace'];
  /** How long one launch took there, the provider's own work included (key files, user data). */
  readonly launchMs?: number;
}

/** RunInstances calls in flight at once in the provider (aws-provider.ts, LAUNCH_CONCURRENCY). */
const LAUNCH_CONCURRENCY = 4;

/**
 * The timing of a wire run, for the simulator to replay: its job stream, and the pace of its
 * launches. On this machine a burst of 100 launches takes seconds on the wire (the provider writes
 * each instance's keys, the fake renders and parses user data), and the simulator only counts
 * what the same timing makes the fleet do, so it is given the pace the wire run had.
 */
export function wireTiming(w: CallCount): WireTiming {
  const launches = w.timeline.filter((c) => c.action === 'RunInstances').map((c) => c.at);
  const first = launches[0];
  const last = launches[launches.length - 1];
  const launchMs =
    launches.length >= 8 && first !== undefined && last !== undefined
      ? ((last - first) / (launches.length - 1)) * LAUNCH_CONCURRENCY
      : undefined;
  return { trace: w.trace, ...(launchMs ? { launchMs } : {}) };
}
