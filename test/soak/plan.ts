/**
 * The fault schedule: which job runs which script and which fault hits it, as a pure function of
 * the seed. Faults are tied to a job's phase (the daemon is killed while *this* job acquires) so
 * that a schedule means the same thing on a fast and on a slow machine.
 */
import type { Outcome } from '../support/gitlab-runner.js';
import { type Random, seeded } from './random.js';

export const FAULT_KINDS = [
  /** SIGKILL the manager after the fake answered RunInstances, before the daemon read the answer. */
  'daemon-kill-launch',
  /** SIGKILL the manager while this job's prepare hook waits for its lease. */
  'daemon-kill-acquire',
  /** SIGKILL the manager while this job's build_script runs on the instance. */
  'daemon-kill-stage',
  /** SIGKILL the manager while this job's cleanup hook releases the lease. */
  'daemon-kill-release',
  /**
   * The fake launched, but the answer to RunInstances is lost on the wire: the SDK retries with the
   * same ClientToken, which must not launch a second instance.
   */
  'launch-answer-lost',
  /** Every AWS action answers RequestLimitExceeded for a few seconds (both managers). */
  'throttle',
  /** InsufficientInstanceCapacity for the first instance type, sometimes for every type. */
  'insufficient-capacity',
  /** pending → running takes seconds instead of milliseconds for a while. */
  'slow-pending',
  /** The next launched instance never leaves pending, or fails its boot. */
  'never-ready',
  /** The instance is reclaimed (spot) while its build_script runs. */
  'spot-reclaim',
  /** The instance's sshd dies with its sessions mid-stage. */
  'sshd-crash',
  /** Every TCP connection to the instance is cut mid-stage; sshd stays up. */
  'connection-cut',
  /** The job is canceled while prepare waits for an instance. */
  'cancel-prepare',
  /** The job is canceled while build_script runs. */
  'cancel-build',
] as const;

export type FaultKind = (typeof FAULT_KINDS)[number];

/** Faults after which the job must still end as its script says: the claim is that they are absorbed. */
export const ABSORBED: ReadonlySet<FaultKind> = new Set([
  'daemon-kill-launch',
  'daemon-kill-acquire',
  'daemon-kill-stage',
  'daemon-kill-release',
  'launch-answer-lost',
  'throttle',
  'insufficient-capacity',
  'slow-pending',
  'never-ready',
]);

/** Faults that take the instance away mid-stage: GitLab must see a system failure (and retry). */
export const INSTANCE_LOST: ReadonlySet<FaultKind> = new Set([
  'spot-reclaim',
  'sshd-crash',
  'connection-cut',
]);

export interface PlannedFault {
  readonly kind: FaultKind;
  /** When, after the phase the fault belongs to began. */
  readonly delayMs: number;
  /** How long the fault lasts (throttle, capacity, slow pending) or the daemon stays down. */
  readonly durationMs: number;
  /** insufficient-capacity: every type, not only the first; never-ready: failBoot, not stuck. */
  readonly variant: boolean;
}

export interface PlannedJob {
  readonly index: number;
  readonly id: string;
  readonly manager: 'a' | 'b';
  readonly sleepMs: number;
  /** 0 = success; otherwise the build_script's exit code (a build failure). */
  readonly exitCode: number;
  readonly fault?: PlannedFault;
}

export interface Plan {
  readonly seed: number;
  readonly jobs: readonly PlannedJob[];
}

export interface PlanOptions {
  readonly seed: number;
  /** Jobs of the manager under test. */
  readonly jobs: number;
  /** Jobs of the second manager (plain jobs, only hit by the account-wide faults). */
  readonly secondManagerJobs: number;
  /** Share of the first manager's jobs that get a fault. */
  readonly faultRate: number;
  /** At least this many of each kind (when there are enough jobs). */
  readonly minPerKind: number;
}

export function planSoak(o: PlanOptions): Plan {
  const rnd = seeded(o.seed);
  const faults: FaultKind[] = [];
  for (let i = 0; i < o.minPerKind; i++) faults.push(...FAULT_KINDS);
  const wanted = Math.max(faults.length, Math.round(o.jobs * o.faultRate));
  while (faults.length < wanted) faults.push(rnd.pick(FAULT_KINDS));
  // Which jobs get them: the first two jobs run clean so the run starts from a known state.
  const slots = shuffle(
    rnd,
    Array.from({ length: Math.max(0, o.jobs - 2) }, (_, i) => i + 2),
  ).slice(0, Math.min(faults.length, Math.max(0, o.jobs - 2)));
  const byIndex = new Map<number, FaultKind>();
  const kinds = shuffle(rnd, faults);
  slots.forEach((slot, i) => {
    byIndex.set(slot, kinds[i] as FaultKind);
  });

  const jobs: PlannedJob[] = [];
  for (let i = 0; i < o.jobs; i++) {
    const kind = byIndex.get(i);
    jobs.push(planJob(rnd, i, `${100_000 + i}`, 'a', kind));
  }
  for (let i = 0; i < o.secondManagerJobs; i++) jobs.push(planJob(rnd, i, `${200_000 + i}`, 'b', undefined));
  return { seed: o.seed, jobs };
}

function planJob(
  rnd: Random,
  index: number,
  id: string,
  manager: 'a' | 'b',
  kind: FaultKind | undefined,
): PlannedJob {
  const exitCode = rnd.chance(0.15) ? rnd.pick([1, 3, 42, 77]) : 0;
  if (!kind) return { index, id, manager, sleepMs: rnd.int(100, 1500), exitCode };
  // Mid-stage faults need a stage that is still running when they fire.
  const midStage = INSTANCE_LOST.has(kind) || kind === 'cancel-build';
  const fault: PlannedFault = {
    kind,
    delayMs:
      kind === 'cancel-prepare'
        ? rnd.int(50, 600)
        : midStage
          ? rnd.int(800, 2500)
          : kind === 'daemon-kill-stage' || kind === 'daemon-kill-release'
            ? rnd.int(50, 400)
            : rnd.int(0, 300),
    durationMs:
      kind === 'throttle'
        ? rnd.int(1500, 4000)
        : kind === 'slow-pending'
          ? rnd.int(2000, 5000)
          : kind === 'insufficient-capacity'
            ? rnd.int(2000, 6000)
            : rnd.int(200, 1500),
    variant: rnd.chance(0.4),
  };
  return {
    index,
    id,
    manager,
    sleepMs: midStage ? 8_000 : kind === 'daemon-kill-stage' ? rnd.int(1500, 3000) : rnd.int(100, 1500),
    // The lost-instance and cancel jobs must not finish on their own before the fault.
    exitCode: midStage ? 0 : exitCodeFor(rnd),
    fault,
  };
}

function exitCodeFor(rnd: Random): number {
  return rnd.chance(0.15) ? rnd.pick([1, 3, 42]) : 0;
}

function shuffle<T>(rnd: Random, items: T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rnd.int(0, i);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/** What the job must end as, given whether its fault actually fired. */
export function expectedOutcome(
  job: PlannedJob,
  injected: boolean,
): { outcome: Outcome; buildExitCode?: number; cause?: RegExp } {
  const kind = injected ? job.fault?.kind : undefined;
  if (kind && INSTANCE_LOST.has(kind)) {
    return { outcome: 'system-failure', cause: /lost mid-stage|unreachable over SSH|SSH to \S+ failed/ };
  }
  if (kind === 'cancel-prepare' || kind === 'cancel-build') return { outcome: 'canceled' };
  return job.exitCode === 0
    ? { outcome: 'success' }
    : { outcome: 'build-failure', buildExitCode: job.exitCode };
}
