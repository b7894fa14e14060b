/**
 * The soak run: many jobs through the hooks (as gitlab-runner drives them) against the real
 * daemon on the AWS provider, the wire-level fake and sshd-backed instances, while a seeded fault
 * schedule kills, throttles and cuts. Afterwards the invariants are measured from the outside —
 * the fake's instances and call logs, the job and runner logs, the daemon's output and memory —
 * never from what the daemon says about itself.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TAG } from '../../manager/providers/tags.js';
import { AWS_ENV, type AwsWorld, awsToml, startAwsWorld } from '../providers/aws-harness.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type JobResult, type JobSpec, runJob, SECRET_SENTINEL } from '../support/gitlab-runner.js';
import {
  ABSORBED,
  expectedOutcome,
  FAULT_KINDS,
  type FaultKind,
  INSTANCE_LOST,
  type PlannedJob,
  planSoak,
} from './plan.js';
import { type RecordingProxy, startRecordingProxy } from './proxy.js';

export interface SoakOptions {
  readonly seed: number;
  /** Jobs of the manager under test (manager A). */
  readonly jobs: number;
  /** Jobs of the second manager (B), on the same fake account. */
  readonly secondManagerJobs: number;
  /** Jobs in flight at once for A, and for B. */
  readonly concurrency: number;
  readonly secondConcurrency: number;
  /** No new job starts after this; jobs in flight finish. */
  readonly maxWallMs: number;
  readonly faultRate: number;
  readonly minPerKind: number;
  /** After the last job: how long instances and leases get to go away. */
  readonly drainMs: number;
  /** A job running longer than this is reported hung (an invariant failure). */
  readonly jobTimeoutMs: number;
  readonly progress?: (line: string) => void;
}

export const DEFAULT_SOAK: SoakOptions = {
  seed: 20_240_917,
  jobs: 300,
  secondManagerJobs: 40,
  concurrency: 7,
  secondConcurrency: 1,
  maxWallMs: 11 * 60_000,
  faultRate: 0.3,
  minPerKind: 3,
  drainMs: 60_000,
  jobTimeoutMs: 180_000,
};

export interface JobRecord {
  readonly id: string;
  readonly manager: 'a' | 'b';
  readonly fault?: FaultKind;
  /** Whether the fault really fired (a cancel may come after prepare already finished, …). */
  readonly injected: boolean;
  readonly expected: string;
  readonly outcome: string;
  readonly ok: boolean;
  readonly why?: string;
  readonly wallMs: number;
  readonly scriptMs: number;
  readonly instanceId?: string;
}

export interface Invariant {
  readonly name: string;
  readonly value: number | string;
  readonly ok: boolean;
  readonly detail?: string;
}

export interface SoakReport {
  readonly seed: number;
  readonly wallSeconds: number;
  readonly jobsPlanned: number;
  readonly jobsRun: { readonly a: number; readonly b: number };
  readonly faultsPlanned: Record<string, number>;
  readonly faultsInjected: Record<string, number>;
  readonly daemonRestarts: number;
  readonly outcomes: Record<string, number>;
  readonly wrongOutcomes: number;
  readonly hungJobs: number;
  readonly leaks: { readonly instances: number; readonly leases: number };
  readonly launches: {
    readonly instances: number;
    readonly clientTokens: number;
    readonly runInstancesCalls: number;
    readonly doubleLaunches: number;
    readonly acquires: number;
    readonly neverReady: number;
    readonly beyondDemand: number;
  };
  readonly reuseViolations: number;
  readonly otherManagerTouched: number;
  readonly secretHits: number;
  readonly memoryMb: {
    readonly first: number;
    readonly last: number;
    readonly max: number;
    readonly samples: number;
  };
  readonly overheadMs: {
    readonly p50: number;
    readonly p95: number;
    readonly max: number;
    readonly n: number;
  };
  readonly overheadFaultedMs: { readonly p50: number; readonly p95: number; readonly n: number };
  readonly systemFailureCauses: Record<string, number>;
  readonly invariants: readonly Invariant[];
  readonly ok: boolean;
  readonly failures: readonly JobRecord[];
}

function daemonConfig(world: AwsWorld, proxy: RecordingProxy, managerId: string, dir: string, max: number) {
  // daemon_wait far above any restart: under a load of 40 on 2 cores a SIGKILLed daemon took over
  // the default 30 s to come back. The soak asserts that a restart fails no job, not its speed.
  // The daemon reaches the fake through its own recording proxy: same fake, its own call log.
  const aws = awsToml(world, 'fleet', 'launch_rate = 20\nlaunch_burst = 20').replace(
    `endpoint = "${world.fake.url}"`,
    `endpoint = "${proxy.url}"`,
  );
  return `provider = "aws"
fleet_name = "soak"
manager_id = "${managerId}"
[executor]
builds_dir = "${dir}/builds"
cache_dir = "${dir}/cache"
kill_grace = "2s"
daemon_wait = "10m"
[pool]
max_instances = ${max}
idle_count = 0
idle_time = "3s"
instance_acquire_timeout = "150s"
instance_ready_timeout = "10s"
reconcile_interval = "2s"
reconcile_interval_fast = "300ms"
${aws}`;
}

interface Manager {
  readonly name: 'a' | 'b';
  readonly id: string;
  readonly daemon: TestDaemon;
  readonly proxy: RecordingProxy;
  restarting: boolean;
  restarts: number;
}

export async function runSoak(options: Partial<SoakOptions> = {}): Promise<SoakReport> {
  const o: SoakOptions = { ...DEFAULT_SOAK, ...options };
  const say = o.progress ?? (() => {});
  // The daemons inherit this: tests reach only 127.0.0.0/8, never the metadata service.
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.AWS_CONFIG_FILE ??= '/dev/null';
  process.env.AWS_SHARED_CREDENTIALS_FILE ??= '/dev/null';
  const plan = planSoak(o);
  const started = Date.now();
  const scratch = mkdtempSync(join(tmpdir(), 'rf-soak-'));
  const world = await startAwsWorld();
  const managers: Manager[] = [];
  const records: JobRecord[] = [];
  const runnerLogs: string[] = [];
  const injected = new Map<string, number>();
  const rss: Array<{ pid: number; kb: number }> = [];
  let sampler: NodeJS.Timeout | undefined;
  const prepares = { a: 0, b: 0 };
  const leasedBy = new Map<string, string[]>();
  const faultWindows: Array<Promise<void>> = [];
  let neverReadyArmed = 0;
  let failBootArmed = 0;
  // The fake forgets terminated instances after a minute, as EC2 does: remember every one seen,
  // with its last state, so launches and reuse are counted over the whole run.
  const everSeen = new Map<string, ReturnType<AwsWorld['fake']['instances']>[number]>();
  const seen = () => {
    for (const inst of world.fake.instances()) everSeen.set(inst.InstanceId, inst);
  };
  let hung = 0;
  try {
    for (const [name, id, max] of [
      ['a', 'soak-a', 16],
      ['b', 'soak-b', 4],
    ] as const) {
      const proxy = await startRecordingProxy(world.fake.url);
      const daemon = await startTestDaemon(daemonConfig(world, proxy, id, scratch, max), { env: AWS_ENV });
      managers.push({ name, id, daemon, proxy, restarting: false, restarts: 0 });
    }
    const [a, b] = managers as [Manager, Manager];
    const entryA = a.daemon.entry();
    const entryB = b.daemon.entry();
    sampler = setInterval(() => {
      seen();
      const pid = a.daemon.pid();
      const kb = pid ? readRssKb(pid) : undefined;
      if (pid && kb) rss.push({ pid, kb });
    }, 1000);

    const count = (kind: FaultKind) => injected.set(kind, (injected.get(kind) ?? 0) + 1);

    /**
     * SIGKILL, stay down a moment, start again. One restart at a time: a kill that falls due while
     * another restart runs waits for it, then kills the daemon that came back (it always fires).
     */
    const killAndRestart = async (m: Manager, downMs: number): Promise<boolean> => {
      while (m.restarting) await sleep(50);
      m.restarting = true;
      try {
        await m.daemon.kill();
        await sleep(downMs);
        await m.daemon.start();
        m.restarts++;
        return true;
      } finally {
        m.restarting = false;
      }
    };

    /** Account-wide faults: on for a while, then off again, whatever else is going on. */
    const window = (on: () => void, off: () => void, ms: number) => {
      on();
      faultWindows.push(sleep(ms).then(off));
    };

    const runOne = async (job: PlannedJob): Promise<void> => {
      const m = job.manager === 'a' ? a : b;
      const fault = job.fault;
      let fired = false;
      const fire = async (action: () => Promise<boolean> | boolean) => {
        try {
          if (await action()) {
            fired = true;
            if (fault) count(fault.kind);
          }
        } catch (error) {
          say(`fault ${fault?.kind} on job ${job.id} did not fire: ${(error as Error).message}`);
        }
      };
      const later = (ms: number, action: () => Promise<boolean> | boolean) => {
        faultWindows.push(sleep(ms).then(() => fire(action)));
      };
      const scriptRuns = deferred<string>();
      const ended = deferred<void>();
      const notFired = (why: string) => {
        say(`fault ${fault?.kind} on job ${job.id} did not fire: ${why}`);
        return false;
      };
      /** Resolves true on the event, false if the job ended first (the fault then never fires). */
      const upon = (event: Promise<unknown>) =>
        Promise.race([event.then(() => true), ended.promise.then(() => false)]);
      const exitLine = job.exitCode === 0 ? '' : `\nexit ${job.exitCode}`;
      const spec: JobSpec = {
        id: job.id,
        projectPath: `soak/${job.manager}`,
        script: `echo "soak job $CI_JOB_ID on RUNNER_FLEET_INSTANCE_ID=$RUNNER_FLEET_INSTANCE_ID"\nsleep ${(job.sleepMs / 1000).toFixed(3)}${exitLine}`,
        // Every stage gitlab-runner sends costs an SSH round trip: one job in four has cache and
        // artifacts (all nine stages), the rest are plain jobs (gitlab-runner skips those stages).
        cache: job.index % 4 === 0,
        artifacts: job.index % 4 === 0,
        afterScript: 'echo "after_script on $RUNNER_FLEET_INSTANCE_ID"',
        gracefulKillTimeout: 3,
        onPhase: (phase, stage) => {
          if (phase === 'prepare') prepares[job.manager]++;
          if (!fault) return;
          const k = fault.kind;
          if (phase === 'config') {
            if (k === 'never-ready') {
              later(fault.delayMs, () => {
                neverReadyArmed++;
                if (fault.variant) failBootArmed++;
                if (fault.variant) world.fake.failBoot({ count: 1 });
                else world.fake.stuckPending({ count: 1 });
                return true;
              });
            } else if (k === 'throttle') {
              later(fault.delayMs, () => {
                world.fake.throttle('*', { forMs: fault.durationMs });
                return true;
              });
            } else if (k === 'slow-pending') {
              later(fault.delayMs, () => {
                window(
                  () => world.fake.setTiming({ pendingMs: fault.durationMs }),
                  () => world.fake.setTiming({ pendingMs: 50 }),
                  fault.durationMs * 2,
                );
                return true;
              });
            } else if (k === 'insufficient-capacity') {
              later(fault.delayMs, () => {
                const rule = fault.variant ? {} : { instanceTypes: ['t3.micro'] };
                const rules = world.fake.world.capacityRules;
                window(
                  () => rules.push(rule),
                  () => {
                    const at = world.fake.world.capacityRules.indexOf(rule);
                    if (at >= 0) world.fake.world.capacityRules.splice(at, 1);
                  },
                  fault.variant ? Math.min(fault.durationMs, 2500) : fault.durationMs,
                );
                return true;
              });
            }
          } else if (phase === 'prepare') {
            if (k === 'daemon-kill-launch') {
              // The next launch answer any job causes: the instance exists, the daemon never hears.
              // During another restart it waits for the next launch, so that it always fires.
              const strike = async (): Promise<'drop' | 'pass'> => {
                if (m.restarting) {
                  m.proxy.onceAnswered('RunInstances', strike);
                  return 'pass';
                }
                m.restarting = true;
                await m.daemon.kill();
                fired = true;
                count(k);
                faultWindows.push(
                  sleep(fault.durationMs)
                    .then(() => m.daemon.start())
                    .then(() => {
                      m.restarts++;
                    })
                    .finally(() => {
                      m.restarting = false;
                    }),
                );
                return 'drop';
              };
              m.proxy.onceAnswered('RunInstances', strike);
            } else if (k === 'launch-answer-lost') {
              m.proxy.onceAnswered('RunInstances', async () => {
                fired = true;
                count(k);
                return 'drop';
              });
            } else if (k === 'daemon-kill-acquire') {
              // Once the daemon has this job's acquire in hand (an event, not a guess of timing).
              faultWindows.push(
                upon(acquireSeen(m, job.id)).then(async (seen) => {
                  if (!seen) return;
                  await sleep(fault.delayMs);
                  await fire(() => killAndRestart(m, fault.durationMs));
                }),
              );
            }
          } else if (phase === 'run' && stage === 'build_script') {
            if (k === 'daemon-kill-stage') later(fault.delayMs, () => killAndRestart(m, fault.durationMs));
            else if (INSTANCE_LOST.has(k)) {
              // Once the script prints its first line: the stage really runs on the instance.
              faultWindows.push(
                upon(scriptRuns.promise).then(async (runs) => {
                  if (!runs) return;
                  await sleep(fault.delayMs);
                  await fire(async () => {
                    // The instance the script itself reports: no need to ask a daemon that may be restarting.
                    const id = await scriptRuns.promise;
                    if (!id) return notFired(`no instance id in job ${job.id}'s output`);
                    if (k === 'spot-reclaim') world.fake.vanish(id, 'spot');
                    else if (k === 'sshd-crash') {
                      const sshd = world.backed.get(id);
                      if (!sshd) return notFired(`no sshd backs ${id}`);
                      await sshd.crash();
                    } else if (!world.cutConnections(id)) return notFired(`no relay in front of ${id}`);
                    return true;
                  });
                }),
              );
            }
          } else if (phase === 'cleanup' && k === 'daemon-kill-release') {
            later(fault.delayMs, () => killAndRestart(m, fault.durationMs));
          }
        },
      };
      if (fault?.kind === 'cancel-build') spec.cancelAfterMs = fault.delayMs;
      // While the daemon works on this job's acquire: prepare is certainly still waiting then
      // (idle_count = 0, so every acquire waits for a launch).
      if (fault?.kind === 'cancel-prepare')
        spec.cancelPrepareWhen = acquireSeen(m, job.id).then(() => sleep(fault.delayMs));
      if (fault && INSTANCE_LOST.has(fault.kind)) {
        let out = '';
        spec.onBuildOutput = (chunk) => {
          out += chunk;
          const line = /soak job \S+ on RUNNER_FLEET_INSTANCE_ID=(\S*)\n/.exec(out);
          if (line) scriptRuns.resolve(line[1] ?? '');
        };
      }
      const t0 = Date.now();
      let result: JobResult | undefined;
      let timer: NodeJS.Timeout | undefined;
      const run = runJob(job.manager === 'a' ? entryA : entryB, spec);
      result = await Promise.race([
        run,
        new Promise<undefined>((resolve) => {
          timer = setTimeout(() => resolve(undefined), o.jobTimeoutMs);
        }),
      ]);
      clearTimeout(timer);
      ended.resolve(undefined);
      const wallMs = Date.now() - t0;
      if (!result) {
        hung++;
        records.push({
          id: job.id,
          manager: job.manager,
          ...(fault ? { fault: fault.kind } : {}),
          injected: fired,
          expected: expectedOutcome(job, fired).outcome,
          outcome: 'hung',
          ok: false,
          why: `still running after ${o.jobTimeoutMs} ms`,
          wallMs,
          scriptMs: job.sleepMs,
        });
        // Keep its result for the secret scan when it does end.
        void run.then((r) => runnerLogs.push(r.log, r.cleanup.stdout, r.cleanup.stderr));
        return;
      }
      // Cancels count as fired only when the harness delivered them.
      if (fault && (fault.kind === 'cancel-build' || fault.kind === 'cancel-prepare')) {
        fired = result.canceledAtMs !== undefined;
        if (fired) count(fault.kind);
      }
      runnerLogs.push(result.log, result.cleanup.stdout, result.cleanup.stderr);
      const want = expectedOutcome(job, fired);
      const scriptLine = /RUNNER_FLEET_INSTANCE_ID=(i-[0-9a-f]+)/.exec(result.log)?.[1];
      const leaseLine = /running on instance (i-[0-9a-f]+)/.exec(result.log)?.[1];
      const instanceId = scriptLine ?? leaseLine;
      if (instanceId) leasedBy.set(instanceId, [...(leasedBy.get(instanceId) ?? []), job.id]);
      let why: string | undefined;
      if (result.outcome !== want.outcome) why = `expected ${want.outcome}, got ${result.outcome}`;
      else if (want.buildExitCode !== undefined && result.buildExitCode !== want.buildExitCode)
        why = `expected exit code ${want.buildExitCode}, got ${result.buildExitCode}`;
      else if (want.cause && !want.cause.test(result.log)) why = 'system failure without a named cause';
      else if (scriptLine && leaseLine && scriptLine !== leaseLine)
        why = `ran on ${scriptLine} but leased ${leaseLine}`;
      if (result.cleanup.exitCode !== 0)
        why = `${why ? `${why}; ` : ''}cleanup exited ${result.cleanup.exitCode}`;
      const record: JobRecord = {
        id: job.id,
        manager: job.manager,
        ...(fault ? { fault: fault.kind } : {}),
        injected: fired,
        expected: want.outcome + (want.buildExitCode !== undefined ? `(${want.buildExitCode})` : ''),
        outcome: result.outcome + (result.buildExitCode !== undefined ? `(${result.buildExitCode})` : ''),
        ok: why === undefined,
        ...(why
          ? {
              why: `${why}\n${tail(result.log)}\n[runner log] ${tail(result.cleanup.stderr + result.cleanup.stdout)}`,
            }
          : {}),
        wallMs,
        scriptMs: job.sleepMs,
        ...(instanceId ? { instanceId } : {}),
      };
      records.push(record);
      if (!record.ok) say(`job ${job.id} (${fault?.kind ?? 'no fault'}): ${why}`);
    };

    const queue = (which: 'a' | 'b') => plan.jobs.filter((j) => j.manager === which);
    const worker = async (jobs: PlannedJob[]) => {
      for (;;) {
        if (Date.now() - started > o.maxWallMs) return;
        const job = jobs.shift();
        if (!job) return;
        await runOne(job);
        const done = records.length;
        if (done % 25 === 0) say(`${done} jobs done, ${Math.round((Date.now() - started) / 1000)} s`);
      }
    };
    const qa = queue('a');
    const qb = queue('b');
    await Promise.all([
      ...Array.from({ length: o.concurrency }, () => worker(qa)),
      ...Array.from({ length: o.secondConcurrency }, () => worker(qb)),
    ]);
    say(`all jobs ended after ${Math.round((Date.now() - started) / 1000)} s; draining`);
    await Promise.all(faultWindows);
    // Lift whatever is still armed (a stuck-pending nobody launched into) before the drain.
    world.fake.clearFaults();
    world.fake.setTiming({ pendingMs: 50 });
    for (const m of managers) while (m.restarting) await sleep(100);

    // ---------------------------------------------------------------- drain and measure
    const live = () => world.fake.instances().filter((i) => i.State !== 'terminated');
    const leases = async () => {
      let n = 0;
      for (const m of managers) n += (await m.daemon.status().catch(() => ({ leases: [1] }))).leases.length;
      return n;
    };
    const drainUntil = Date.now() + o.drainMs;
    while (Date.now() < drainUntil && (live().length > 0 || (await leases()) > 0)) await sleep(250);
    const leakedInstances = live();
    const leakedLeases = await leases();
    clearInterval(sampler);
    sampler = undefined;

    seen();
    const all = [...everSeen.values()];
    const managerOf = (inst: (typeof all)[number]) => inst.Tags.find((t) => t.Key === TAG.manager)?.Value;
    const ours = all.filter((i) => managerOf(i) === a.id);
    const theirs = new Set(all.filter((i) => managerOf(i) === b.id).map((i) => i.InstanceId));
    const oursIds = new Set(ours.map((i) => i.InstanceId));
    // Double launch: one launch token (one ClientToken) that produced more than one instance.
    const byToken = new Map<string, number>();
    for (const inst of ours) {
      const token =
        inst.Tags.find((t) => t.Key === TAG.launchToken)?.Value ?? inst.ClientToken ?? inst.InstanceId;
      byToken.set(token, (byToken.get(token) ?? 0) + 1);
    }
    const doubleLaunches = [...byToken.values()].filter((n) => n > 1).length;
    const runInstances = a.proxy.calls('RunInstances');
    // Policy asks for nothing beyond the jobs (idle_count = 0): every instance beyond one per
    // acquire is surplus, unless a boot fault took one away, or the daemon replaced an instance
    // that missed instance_ready_timeout (policy: "terminated and replaced"; a loaded machine can
    // make a slow boot miss it). Armed faults may land on B: an upper bound.
    const readinessReplacements = (
      a.daemon.output().match(/"msg":"terminating instance that failed readiness"/g) ?? []
    ).length;
    const replaced = failBootArmed + Math.max(neverReadyArmed - failBootArmed, readinessReplacements);
    const beyondDemand = Math.max(0, ours.length - prepares.a - replaced);

    const reuse = [...leasedBy.entries()].filter(([, jobs]) => jobs.length > 1);
    const touches = (calls: ReturnType<RecordingProxy['calls']>, ids: Set<string>) =>
      calls.filter((c) => c.action !== 'DescribeInstances' && Object.values(c.params).some((v) => ids.has(v)))
        .length;
    const otherTouched = touches(a.proxy.calls(), theirs) + touches(b.proxy.calls(), oursIds);

    const daemonOutput = managers.map((m) => m.daemon.output()).join('\n');
    // Kept for whoever has to read a failed run: the daemons' own account of it (no secrets: checked below).
    if (process.env.RUNNER_FLEET_SOAK_LOG) writeFileSync(process.env.RUNNER_FLEET_SOAK_LOG, daemonOutput);
    const secretHits =
      countOf(daemonOutput, SECRET_SENTINEL) +
      runnerLogs.reduce((n, l) => n + countOf(l, SECRET_SENTINEL), 0);

    const memory = memoryFigures(rss);
    const completed = records.filter(
      (r) => r.ok && (r.outcome.startsWith('success') || r.outcome.startsWith('build')),
    );
    const overhead = completed.map((r) => Math.max(0, r.wallMs - r.scriptMs));
    const faultedOverhead = completed
      .filter((r) => r.fault && r.injected && ABSORBED.has(r.fault))
      .map((r) => Math.max(0, r.wallMs - r.scriptMs));
    const outcomes: Record<string, number> = {};
    for (const r of records) {
      const key = r.outcome.replace(/\(.*\)$/, '');
      outcomes[key] = (outcomes[key] ?? 0) + 1;
    }
    const causes: Record<string, number> = {};
    const wrong = records.filter((r) => !r.ok);
    for (const r of records.filter((x) => x.outcome === 'system-failure')) {
      const key = r.fault ?? 'none';
      causes[key] = (causes[key] ?? 0) + 1;
    }
    const planned: Record<string, number> = {};
    for (const j of plan.jobs) if (j.fault) planned[j.fault.kind] = (planned[j.fault.kind] ?? 0) + 1;
    const injectedOut: Record<string, number> = {};
    for (const k of FAULT_KINDS) injectedOut[k] = injected.get(k) ?? 0;

    const invariants: Invariant[] = [
      {
        name: 'every job ended in the outcome its script or fault dictates',
        value: wrong.length,
        ok: wrong.length === 0 && records.length > 0,
      },
      { name: 'jobs hung', value: hung, ok: hung === 0 },
      {
        name: 'instances left (not terminated) after the drain',
        value: leakedInstances.length,
        ok: leakedInstances.length === 0,
        ...(leakedInstances.length
          ? { detail: leakedInstances.map((i) => `${i.InstanceId} ${i.State} ${managerOf(i)}`).join(', ') }
          : {}),
      },
      { name: 'leases left after the drain', value: leakedLeases, ok: leakedLeases === 0 },
      {
        name: 'double launches (one launch token, several instances)',
        value: doubleLaunches,
        ok: doubleLaunches === 0,
      },
      {
        name: 'launches beyond one per acquire plus boot faults',
        value: beyondDemand,
        ok: beyondDemand === 0,
        detail: `${ours.length} launched, ${prepares.a} acquires, ${neverReadyArmed} boot faults armed, ${readinessReplacements} readiness replacements`,
      },
      {
        name: 'instances that served more than one job',
        value: reuse.length,
        ok: reuse.length === 0,
        ...(reuse.length ? { detail: reuse.map(([i, j]) => `${i}: ${j.join(',')}`).join('; ') } : {}),
      },
      { name: "calls naming the other manager's instances", value: otherTouched, ok: otherTouched === 0 },
      {
        name: 'secret sentinel in daemon output or runner/job logs',
        value: secretHits,
        ok: secretHits === 0,
      },
      {
        name: 'daemon memory flat (max ≤ 2.5× first, last ≤ 2× first)',
        value: `${memory.first}/${memory.last}/${memory.max} MB`,
        ok: memory.samples > 0 && memory.max <= memory.first * 2.5 && memory.last <= memory.first * 2,
      },
    ];
    const report: SoakReport = {
      seed: o.seed,
      wallSeconds: Math.round((Date.now() - started) / 1000),
      jobsPlanned: plan.jobs.length,
      jobsRun: {
        a: records.filter((r) => r.manager === 'a').length,
        b: records.filter((r) => r.manager === 'b').length,
      },
      faultsPlanned: planned,
      faultsInjected: injectedOut,
      daemonRestarts: a.restarts + b.restarts,
      outcomes,
      wrongOutcomes: wrong.length,
      hungJobs: hung,
      leaks: { instances: leakedInstances.length, leases: leakedLeases },
      launches: {
        instances: ours.length,
        clientTokens: new Set(runInstances.map((c) => c.params.ClientToken)).size,
        runInstancesCalls: runInstances.length,
        doubleLaunches,
        acquires: prepares.a,
        neverReady: neverReadyArmed,
        beyondDemand,
      },
      reuseViolations: reuse.length,
      otherManagerTouched: otherTouched,
      secretHits,
      memoryMb: memory,
      overheadMs: { ...percentiles(overhead), n: overhead.length },
      overheadFaultedMs: { ...percentiles(faultedOverhead), n: faultedOverhead.length },
      systemFailureCauses: causes,
      invariants,
      ok: invariants.every((i) => i.ok),
      failures: wrong,
    };
    return report;
  } finally {
    if (sampler) clearInterval(sampler);
    await Promise.allSettled(faultWindows);
    for (const m of managers) {
      // cleanup() would throw on a secret; the report already counted them.
      await m.daemon.stop().catch(() => undefined);
      rmSync(m.daemon.dir, { recursive: true, force: true });
      await m.proxy.close();
    }
    await world.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** This job's acquire request, as the daemon logs it on arrival (any restart of it). */
function acquireSeen(m: Manager, jobId: string): Promise<string> {
  return m.daemon.waitForOutput(new RegExp(`"jobId":"${jobId}"[^\\n]*"acquire requested"`));
}

function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function readRssKb(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * First, last and max RSS. "First" is taken once the first process has warmed up (its fifth
 * sample): a Node process's RSS climbs in its first seconds whatever it does.
 */
function memoryFigures(samples: ReadonlyArray<{ pid: number; kb: number }>) {
  if (samples.length === 0) return { first: 0, last: 0, max: 0, samples: 0 };
  const mb = (kb: number) => Math.round(kb / 1024);
  const firstPid = samples[0]?.pid;
  const firstRun = samples.filter((s) => s.pid === firstPid);
  const first = (firstRun[Math.min(4, firstRun.length - 1)] ?? samples[0])?.kb ?? 0;
  return {
    first: mb(first),
    last: mb(samples[samples.length - 1]?.kb ?? 0),
    max: mb(Math.max(...samples.map((s) => s.kb))),
    samples: samples.length,
  };
}

function percentiles(values: number[]): { p50: number; p95: number; max: number } {
  if (values.length === 0) return { p50: 0, p95: 0, max: 0 };
  const sorted = [...values].sort((x, y) => x - y);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? 0;
  return { p50: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] ?? 0 };
}

function countOf(haystack: string, needle: string): number {
  let n = 0;
  for (let at = haystack.indexOf(needle); at >= 0; at = haystack.indexOf(needle, at + needle.length)) n++;
  return n;
}

function tail(text: string): string {
  const lines = text.trim().split('\n');
  return lines.slice(-6).join('\n');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
