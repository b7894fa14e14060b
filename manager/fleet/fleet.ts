/**
 * The fleet: instances and their leases, the acquire queue, scaling, and the reconcile loop that
 * applies what reconcile.ts (listing merge, orphans) and adoption.ts (instances we did not know)
 * decide.
 *
 * All state changes happen synchronously on the event loop, so "check the instance is idle, then
 * lease it" is a compare-and-set: a scale-in that runs meanwhile sees `leased` and leaves it. Cloud
 * calls (launch, terminate, tag writes) happen around those changes, never inside them.
 */
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { JobInfo } from '../control/protocol.js';
import type {
  ConnectInfo,
  LaunchFailure,
  LaunchShape,
  Provider,
  ProviderInstance,
} from '../providers/provider.js';
import { TAG } from '../providers/tags.js';
import { adoptionOf, provenanceOf } from './adoption.js';
import { type Clock, sleep, systemClock } from './clock.js';
import { type InstanceRecord, recordFrom, tagsOf } from './instance.js';
import type { JobChecker } from './job-check.js';
import type { LeaseEntry, LeaseStore } from './lease-journal.js';
import {
  ArrivalRate,
  adaptiveIdleTarget,
  isStuck,
  LeadTime,
  type PoolPolicy,
  type PoolSnapshot,
  planScale,
  type ReapPolicy,
  refill,
  type ScalePlan,
  type TokenBucket,
  take,
} from './policy.js';
import { LaunchSigner } from './provenance.js';
import { checkLeasedJobs, LISTING_GRACE_MS, mergeListing, planOrphans } from './reconcile.js';
import { DEFAULT_SHAPE } from './shape.js';
import { canTransition, type InstanceState } from './states.js';

export type { InstanceRecord } from './instance.js';

/** Hooks for metrics and the simulator; every one is optional and must not throw. */
export interface FleetObserver {
  /** `from` is undefined for an instance the fleet just learned about. */
  instanceState?(instance: InstanceRecord, from: InstanceState | undefined, now: number): void;
  launched?(requested: number, launched: number, failures: readonly LaunchFailure[], callMs: number): void;
  ready?(instance: InstanceRecord, readyMs: number): void;
  acquired?(waitMs: number, fromIdle: boolean): void;
  acquireFailed?(code: string): void;
  reaped?(instanceId: string, reason: string): void;
  decision?(plan: ScalePlan): void;
}

export interface CredentialChoice {
  readonly credentialClass: string;
  readonly instanceProfile?: string;
  readonly hopLimit?: number;
  /** Reuse stays within this scope (verified project, or project id from the job response). */
  readonly reuseScope?: string;
  /** The rule's launch settings (shape.ts); absent: the provider's defaults. */
  readonly shape?: LaunchShape;
  readonly notes: readonly string[];
}

export interface LeaseGrant {
  readonly jobId: string;
  readonly instanceId: string;
  readonly connect: ConnectInfo;
  readonly leasedAt: number;
  /** How long the job waited for the instance, in ms. */
  readonly waitedMs: number;
}

/** Figures read at every metrics scrape. */
export interface FleetGauges {
  byState: Record<InstanceState, number>;
  waiting: number;
  launching: number;
  desired: number;
  idleTarget: number;
  maxInstances: number;
  draining: boolean;
  /** Instances with our tags that failed provenance (adoption.ts): never used nor terminated. */
  foreign: number;
  /** Instances by state that stayed in it well past the fleet's deadline for it (policy.ts isStuck). */
  stuck: Partial<Record<InstanceState, number>>;
}

/** An instance that carries this manager's tags but was not launched by it. */
export interface ForeignInstance {
  readonly id: string;
  readonly why: string;
  /** When this daemon first saw it. */
  readonly seenAt: number;
  readonly launchedAt: number;
}

/** A job's instance the provider reported gone while the job held it. */
export interface LeaseLoss {
  readonly instanceId: string;
  readonly why: string;
}

export class FleetError extends Error {
  override name = 'FleetError';
  constructor(
    message: string,
    /** `draining`, `timeout`, `canceled`, `provider`: the hook maps them to exit codes. */
    readonly code: string,
  ) {
    super(message);
  }
}

/** The knobs a SIGHUP reload may change; everything else needs a restart. */
export interface FleetTuning {
  readonly policy: PoolPolicy;
  readonly maxUseCount: number;
  readonly acquireTimeoutMs: number;
  readonly readyTimeoutMs: number;
  readonly reconcileIntervalMs: number;
  readonly reconcileFastIntervalMs: number;
  /** Orphan reaping; undefined turns the reaper off (the simulator's default). */
  readonly reap?: ReapPolicy;
  /** A lease's job is asked about at most this often (and not before the lease is this old). */
  readonly jobCheckIntervalMs?: number;
}

export interface FleetOptions {
  readonly provider: Provider;
  readonly journal: LeaseStore;
  readonly log: Logger;
  readonly fleetName: string;
  readonly managerId: string;
  readonly tuning: FleetTuning;
  readonly clock?: Clock;
  readonly observer?: FleetObserver;
  /** Asks GitLab whether a job still runs; without it only max_job_lifetime ends leases. */
  readonly jobChecker?: JobChecker;
  /** Launch requests within this window go out as one call (default 200 ms). */
  readonly launchBatchMs?: number;
  /** Terminations within this window go out as one call (default 1 s). */
  readonly terminateBatchMs?: number;
  /**
   * This manager's launch key (provenance.ts, kept in the state directory). Without one the key
   * lives in memory only: after a restart only the launch journal proves provenance.
   */
  readonly launchKey?: Buffer;
}

interface Waiter {
  readonly job: JobInfo;
  readonly credentials: CredentialChoice;
  readonly enqueuedAt: number;
  readonly onProgress: (message: string) => void;
  resolve(grant: LeaseGrant): void;
  reject(error: Error): void;
}

/**
 * Launches and terminations that come close together go out as one call: at most one launch call
 * per window (a burst of 200 acquires becomes the first launch at once, the rest in one more
 * call), and a wave of releases one terminate. The first launch after a quiet spell is not
 * delayed: with no idle instance it is on a job's critical path (a local launch takes
 * milliseconds); terminations are off it.
 */
const LAUNCH_BATCH_MS = 200;
const TERMINATE_BATCH_MS = 1000;
/** Used as the adaptive pool's lead time until some boot has been observed. */
const DEFAULT_LEAD_TIME_MS = 60_000;

/**
 * Reuse stays within one credential class and one scope: the verified project, else the project
 * id from gitlab-runner's job response. Never CI_PROJECT_PATH: a job sets its own variables.
 */
function scopeOf(_job: JobInfo, credentials: CredentialChoice): string | undefined {
  return credentials.reuseScope;
}

export class Fleet {
  private readonly instances = new Map<string, InstanceRecord>();
  private waiters: Waiter[] = [];
  private launching = 0;
  /** Of `launching`, those for rule-shaped jobs, in total and by shape key. */
  private launchingShaped = 0;
  private readonly shapedInFlight = new Map<string, number>();
  /** Launch tokens of provider.launch calls not yet answered: their instances are the call's to record. */
  private readonly tokensInFlight = new Set<string>();
  private draining = false;
  private stopped = false;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly observer: FleetObserver;
  private readonly pendingTerminations = new Set<string>();
  /**
   * Terminate calls in flight: a tick must not send them again while the first call still runs
   * (on Auto Scaling, one call per instance, so a wave of them takes a while).
   */
  private readonly terminatingNow = new Set<string>();
  private terminateTimer: unknown;
  private launchTimer: unknown;
  private reconcileTimer: unknown;
  private reconcileAt = Number.POSITIVE_INFINITY;
  private reconciling: Promise<void> | undefined;
  private readonly tagWrites = new Map<string, Promise<void>>();
  /** Instances with a tag write queued but not started: the queued write reads the latest state. */
  private readonly tagQueued = new Set<string>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly stopController = new AbortController();
  private readonly arrivals: ArrivalRate;
  private readonly leadTime = new LeadTime(DEFAULT_LEAD_TIME_MS);
  private bucket: TokenBucket;
  private lastPlan: ScalePlan | undefined;
  private readonly launchBatchMs: number;
  private lastLaunchFlushAt = Number.NEGATIVE_INFINITY;
  private readonly terminateBatchMs: number;

  private tuning: FleetTuning;
  /** When a listing last succeeded: /healthz reports the loop stuck when this gets old. */
  private lastListedAt: number | undefined;
  private readonly signer: LaunchSigner;
  /** Listed instances that failed provenance, by id: logged once, then only counted. */
  private readonly foreign = new Map<string, ForeignInstance>();
  /** Job id → its lost instance, until the job releases (cleanup). */
  private readonly lostLeases = new Map<string, LeaseLoss>();
  private readonly lossWatchers = new Map<string, Set<(loss?: LeaseLoss) => void>>();

  constructor(private readonly options: FleetOptions) {
    this.clock = options.clock ?? systemClock;
    this.log = options.log.child({ module: 'fleet' });
    this.tuning = options.tuning;
    this.observer = options.observer ?? {};
    this.launchBatchMs = options.launchBatchMs ?? LAUNCH_BATCH_MS;
    this.terminateBatchMs = options.terminateBatchMs ?? TERMINATE_BATCH_MS;
    this.bucket = { tokens: options.tuning.policy.throttle?.burst ?? 0, at: this.clock.now() };
    this.arrivals = new ArrivalRate(this.clock.now());
    this.signer = new LaunchSigner(
      options.launchKey ?? randomBytes(32),
      `${options.fleetName}\n${options.managerId}`,
    );
    // One sleep per booting instance listens on this signal; a thousand are normal at scale.
    setMaxListeners(0, this.stopController.signal);
  }

  get policy(): PoolPolicy {
    return this.tuning.policy;
  }

  /** Apply reloaded knobs. Leases and instances are untouched; the next decision uses them. */
  updateTuning(tuning: FleetTuning): void {
    this.tuning = tuning;
    const p = tuning.policy;
    this.log.info(
      {
        idleCount: p.idleCount,
        idleTimeMs: p.idleTimeMs,
        scaleFactor: p.scaleFactor,
        scaleFactorLimit: p.scaleFactorLimit,
        maxInstances: p.maxInstances,
        schedules: p.schedules?.length ?? 0,
        adaptive: p.adaptive?.enabled ?? false,
        maxUseCount: tuning.maxUseCount,
      },
      'pool policy updated',
    );
    this.scaleNow('policy reloaded');
  }

  /** Rebuild the view from the provider (tags) and the lease journal, then start the loop. */
  async start(): Promise<void> {
    if (this.options.journal.loadProblem)
      this.log.warn({ problem: this.options.journal.loadProblem }, 'lease journal');
    await this.options.provider.start?.();
    await this.reconcile();
    this.scheduleReconcile();
  }

  /** Stop the loop. Instances and leases stay as they are: a restart picks them up again. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopController.abort();
    this.clock.clearTimeout(this.reconcileTimer);
    this.clock.clearTimeout(this.launchTimer);
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(
        new FleetError('the runner-fleet daemon is stopping; the job will be retried', 'stopping'),
      );
    }
    await this.reconciling;
    await Promise.allSettled([...this.inFlight]);
    await this.flushTerminations();
    await Promise.allSettled(this.tagWrites.values());
  }

  // ---------------------------------------------------------------- acquire / release

  async acquire(
    job: JobInfo,
    credentials: CredentialChoice,
    onProgress: (message: string) => void,
    signal?: AbortSignal,
  ): Promise<LeaseGrant> {
    const started = this.clock.now();
    // A retried prepare (or a daemon restart mid-prepare) gets the lease it already has.
    const existing = this.options.journal.get(job.id);
    if (existing) {
      const instance = this.instances.get(existing.instanceId);
      if (instance && instance.state === 'leased' && instance.jobId === job.id) {
        // The first answer may have died with the daemon halfway through preparing the instance
        // (e.g. its instance profile): finish that again (idempotent) before answering.
        await this.prepareLeased(instance, job, credentials);
        return this.grantFor(instance, existing, started);
      }
      this.options.journal.delete(job.id);
    }
    if (this.draining) {
      this.observer.acquireFailed?.('draining');
      throw new FleetError('this runner-fleet manager is draining and takes no new jobs', 'draining');
    }
    this.arrivals.record(started);
    this.waiters = this.waiters.filter((w) => {
      if (w.job.id !== job.id) return true;
      w.reject(new FleetError('superseded by a newer acquire for the same job', 'canceled'));
      return false;
    });
    // Earlier waiters go first: only take an idle instance directly when nobody queues before us.
    const idle =
      this.waiters.length === 0 ? this.pickIdle(credentials, scopeOf(job, credentials)) : undefined;
    if (idle) {
      const grant = await this.lease(idle, job, credentials, started);
      this.observer.acquired?.(grant.waitedMs, true);
      // Top the warm pool back up now rather than at the next tick.
      this.scaleNow('instance leased');
      return grant;
    }

    return new Promise<LeaseGrant>((resolve, reject) => {
      let timer: unknown;
      const cleanup = () => {
        this.clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      const waiter: Waiter = {
        job,
        credentials,
        enqueuedAt: started,
        onProgress,
        resolve: (grant) => {
          cleanup();
          this.observer.acquired?.(grant.waitedMs, false);
          resolve(grant);
        },
        reject: (error) => {
          cleanup();
          this.observer.acquireFailed?.(error instanceof FleetError ? error.code : 'error');
          reject(error);
        },
      };
      const onAbort = () => waiter.reject(new FleetError('acquire canceled by the client', 'canceled'));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      timer = this.clock.setTimeout(() => {
        waiter.reject(
          new FleetError(
            `no instance became available within instance_acquire_timeout (${Math.round(this.tuning.acquireTimeoutMs / 1000)} s); ` +
              `${this.describeCapacity()}`,
            'timeout',
          ),
        );
      }, this.tuning.acquireTimeoutMs);
      this.waiters.push(waiter);
      // Someone queued earlier may be unable to use an idle instance this job can use.
      this.dispatch();
      if (!this.waiters.includes(waiter)) return;
      onProgress(
        `No idle instance; waiting for one (${this.waiters.length} job(s) waiting, ${this.describeCapacity()})`,
      );
      this.scaleNow('job waiting');
    });
  }

  /** End a job's lease. Idempotent: releasing twice, or a job that never got a lease, is fine. */
  async release(
    jobId: string,
    reason: string,
    leaseFileInstanceId?: string,
  ): Promise<{ released: boolean; instanceId?: string }> {
    for (const waiter of this.waiters.filter((w) => w.job.id === jobId)) {
      waiter.reject(new FleetError('the job was cleaned up while it waited', 'canceled'));
    }
    this.lostLeases.delete(jobId);
    const entry = this.options.journal.get(jobId);
    let instance = entry ? this.instances.get(entry.instanceId) : undefined;
    if (!instance && !entry) {
      for (const i of this.instances.values()) if (i.jobId === jobId && i.state === 'leased') instance = i;
    }
    if (!entry && !instance && leaseFileInstanceId) {
      // After an unreadable lease journal every adopted instance is leased by an unknown job. The
      // job's own lease file (written by its prepare) names its instance: only such an instance,
      // with no job of its own, may be claimed this way.
      const unclaimed = this.instances.get(leaseFileInstanceId);
      if (unclaimed?.state === 'leased' && unclaimed.jobId === undefined) {
        unclaimed.jobId = jobId;
        instance = unclaimed;
        this.log.info(
          { jobId, instanceId: unclaimed.id },
          'lease of an unknown job claimed by its lease file',
        );
      }
    }
    if (!entry && !instance) return { released: false };
    const instanceId = instance?.id ?? entry?.instanceId;
    if (!instance || instance.jobId !== jobId || instance.state !== 'leased') {
      this.options.journal.delete(jobId);
      this.log.info({ jobId, instanceId, reason }, 'released lease of an instance that is already gone');
      return { released: true, ...(instanceId ? { instanceId } : {}) };
    }
    const leased = instance;
    await this.options.provider.endLease?.(leased.id, jobId).catch((error: Error) => {
      this.log.warn(
        { jobId, instanceId: leased.id, error: error.message },
        'provider could not end the lease',
      );
    });
    // The reaper or a shutdown may have taken it while endLease ran.
    if (leased.state !== 'leased' || leased.jobId !== jobId) {
      this.options.journal.delete(jobId);
      return { released: true, instanceId: leased.id };
    }
    leased.useCount += 1;
    leased.jobId = undefined;
    leased.leasedAt = undefined;
    leased.jobVerdict = undefined;
    leased.jobCheckedAt = undefined;
    leased.orphanMarkedAt = undefined;
    leased.orphanReason = undefined;
    const log = this.log.child({ jobId, instanceId: leased.id });
    const wornOut = leased.useCount >= this.tuning.maxUseCount;
    const tooOld = this.clock.now() - leased.createdAt >= this.tuning.policy.maxInstanceLifetimeMs;
    if (wornOut || tooOld || this.draining) {
      log.info(
        { reason, useCount: leased.useCount, wornOut, tooOld },
        'lease released; terminating instance',
      );
      // One journal write: the lease ends and the instance is recorded as retiring together.
      this.options.journal.batch(() => {
        this.options.journal.delete(jobId);
        this.retire(
          leased,
          wornOut ? 'max_use_count reached' : tooOld ? 'max_instance_lifetime reached' : 'draining',
        );
      });
    } else {
      this.options.journal.delete(jobId);
      this.transition(leased, 'idle');
      leased.idleSince = this.clock.now();
      // A reused instance must not look leased after a restart.
      this.syncTags(leased);
      log.info({ reason, useCount: leased.useCount }, 'lease released; instance idle for reuse');
      this.dispatch();
    }
    this.scaleNow('lease released');
    return { released: true, instanceId: leased.id };
  }

  /** The provider reported this job's instance gone while the job held it (see watchLoss). */
  lossOf(jobId: string): LeaseLoss | undefined {
    return this.lostLeases.get(jobId);
  }

  /**
   * Resolves when the provider reports the job's instance gone while the job holds it (at once
   * if it already did), or with undefined when `signal` aborts. The run hook waits on this during
   * a stage, so a silent loss ends the stage at the next listing instead of at the SSH keepalive.
   */
  watchLoss(jobId: string, signal: AbortSignal): Promise<LeaseLoss | undefined> {
    const known = this.lostLeases.get(jobId);
    if (known || signal.aborted) return Promise.resolve(known);
    return new Promise((resolve) => {
      const watchers = this.lossWatchers.get(jobId) ?? new Set<(loss?: LeaseLoss) => void>();
      this.lossWatchers.set(jobId, watchers);
      const done = (loss?: LeaseLoss) => {
        watchers.delete(done);
        if (watchers.size === 0 && this.lossWatchers.get(jobId) === watchers) this.lossWatchers.delete(jobId);
        signal.removeEventListener('abort', onAbort);
        resolve(loss);
      };
      const onAbort = () => done(undefined);
      watchers.add(done);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private leaseLost(jobId: string, instanceId: string, why: string): void {
    const loss: LeaseLoss = { instanceId, why };
    this.lostLeases.set(jobId, loss);
    for (const watcher of [...(this.lossWatchers.get(jobId) ?? [])]) watcher(loss);
  }

  leaseOf(jobId: string): (LeaseEntry & { connect?: ConnectInfo }) | undefined {
    return this.options.journal.get(jobId);
  }

  async connectInfo(instanceId: string): Promise<ConnectInfo> {
    const instance = this.instances.get(instanceId);
    if (instance?.connect) return instance.connect;
    const connect = await this.options.provider.connectInfo(instanceId);
    if (instance) instance.connect = connect;
    return connect;
  }

  /** Stop taking jobs; idle instances go; leased ones finish their job and then go. */
  drain(): void {
    if (!this.draining) this.log.info({ leased: this.leasedCount() }, 'draining: no new leases');
    this.draining = true;
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(
        new FleetError('this runner-fleet manager is draining and takes no new jobs', 'draining'),
      );
    }
    this.scaleNow('drain');
  }

  /** Healthy while listings succeed: within three slow intervals (at least 90 s) of the last one. */
  health(): { ok: boolean; detail: Record<string, unknown> } {
    const now = this.clock.now();
    const age = this.lastListedAt === undefined ? undefined : now - this.lastListedAt;
    const limit = Math.max(3 * this.tuning.reconcileIntervalMs, 90_000);
    return {
      ok: age !== undefined && age <= limit,
      detail: {
        lastListingAgeSeconds: age === undefined ? null : Math.round(age / 1000),
        draining: this.draining,
        leased: this.leasedCount(),
        waiting: this.waiters.length,
      },
    };
  }

  get isDraining(): boolean {
    return this.draining;
  }

  leasedCount(): number {
    return this.countIn('leased');
  }

  /** Terminate every instance this manager owns (delete_instances_on_shutdown). */
  async terminateAll(): Promise<void> {
    // No replacements: a tick while the terminations run would launch up to idle_count again.
    this.draining = true;
    this.options.journal.batch(() => {
      for (const instance of this.instances.values()) {
        if (instance.jobId) this.options.journal.delete(instance.jobId);
        this.retire(instance, 'shutdown');
      }
    });
    await this.flushTerminations();
  }

  snapshot(): {
    instances: InstanceRecord[];
    waiting: number;
    launching: number;
    foreign: ForeignInstance[];
  } {
    return {
      foreign: [...this.foreign.values()],
      instances: [...this.instances.values()].map((i) => ({ ...i, detail: { ...i.detail } })),
      waiting: this.waiters.length,
      launching: this.launchingNow(),
    };
  }

  /** Cheap figures for metrics scrapes and the simulator: no copies. */
  gauges(): FleetGauges {
    const byState = {
      creating: 0,
      booting: 0,
      idle: 0,
      leased: 0,
      draining: 0,
      terminating: 0,
      terminated: 0,
      failed: 0,
    } satisfies Record<InstanceState, number>;
    const stuck: Partial<Record<InstanceState, number>> = {};
    const now = this.clock.now();
    const limits = {
      readyTimeoutMs: this.tuning.readyTimeoutMs,
      maxJobLifetimeMs: this.tuning.reap?.maxJobLifetimeMs,
    };
    for (const i of this.instances.values()) {
      byState[i.state]++;
      if (isStuck(i, now, limits)) stuck[i.state] = (stuck[i.state] ?? 0) + 1;
    }
    return {
      byState,
      waiting: this.waiters.length,
      launching: this.launchingNow(),
      desired: this.lastPlan?.desired ?? 0,
      idleTarget: this.lastPlan?.idleTarget ?? 0,
      maxInstances: this.tuning.policy.maxInstances,
      draining: this.draining,
      foreign: this.foreign.size,
      stuck,
    };
  }

  // ---------------------------------------------------------------- leasing internals

  private pickIdle(
    credentials: CredentialChoice,
    projectPath: string | undefined,
  ): InstanceRecord | undefined {
    const credentialClass = credentials.credentialClass;
    const shape = credentials.shape?.key ?? DEFAULT_SHAPE;
    let best: InstanceRecord | undefined;
    for (const instance of this.instances.values()) {
      if (instance.state !== 'idle') continue;
      // Launched from other settings (template, subnet, type): never, whatever else matches.
      if (instance.shape !== shape) continue;
      const reusable =
        instance.useCount === 0 ||
        (instance.credentialClass === credentialClass && instance.projectPath === projectPath);
      if (!reusable) continue;
      // Prefer a used instance of the same class (warm caches), then the oldest ready one.
      const better =
        !best ||
        (instance.useCount > 0 !== best.useCount > 0
          ? instance.useCount > 0
          : (instance.readyAt ?? 0) < (best.readyAt ?? 0));
      if (better) best = instance;
    }
    return best;
  }

  private async lease(
    instance: InstanceRecord,
    job: JobInfo,
    credentials: CredentialChoice,
    started: number,
  ): Promise<LeaseGrant> {
    const now = this.clock.now();
    // Compare-and-set: all of this runs synchronously, so no scale-in can slip in between.
    this.transition(instance, 'leased');
    instance.jobId = job.id;
    instance.leasedAt = now;
    instance.idleSince = undefined;
    instance.credentialClass = credentials.credentialClass;
    instance.projectPath = scopeOf(job, credentials);
    const entry: LeaseEntry = {
      jobId: job.id,
      instanceId: instance.id,
      leasedAt: new Date(now).toISOString(),
      credentialClass: credentials.credentialClass,
      ...(scopeOf(job, credentials) ? { projectPath: scopeOf(job, credentials) } : {}),
      ...(job.jobToken ? { jobToken: job.jobToken } : {}),
    };
    // Journal before anything else: from here on a restart knows this instance is busy. The
    // journal is the record of leases; tags are not written per lease (two calls per job for
    // what a restart reads from here; see lease-journal.ts).
    this.options.journal.put(entry);
    this.log.info(
      {
        jobId: job.id,
        instanceId: instance.id,
        credentialClass: credentials.credentialClass,
        waitedMs: now - started,
      },
      'lease acquired',
    );
    await this.prepareLeased(instance, job, credentials);
    return this.grantFor(instance, entry, started);
  }

  private async prepareLeased(
    instance: InstanceRecord,
    job: JobInfo,
    credentials: CredentialChoice,
  ): Promise<void> {
    try {
      await this.options.provider.prepareLease?.(instance.id, {
        jobId: job.id,
        ...(credentials.instanceProfile ? { instanceProfile: credentials.instanceProfile } : {}),
        ...(credentials.hopLimit ? { hopLimit: credentials.hopLimit } : {}),
      });
    } catch (error) {
      // The instance may be half-prepared (e.g. the wrong profile): never hand it to anyone.
      this.options.journal.batch(() => {
        this.options.journal.delete(job.id);
        instance.jobId = undefined;
        this.retire(instance, 'lease preparation failed');
      });
      throw new FleetError(
        `could not prepare instance ${instance.id}: ${(error as Error).message}`,
        'provider',
      );
    }
  }

  private async grantFor(instance: InstanceRecord, entry: LeaseEntry, started: number): Promise<LeaseGrant> {
    return {
      jobId: entry.jobId,
      instanceId: instance.id,
      connect: instance.connect ?? (await this.connectInfo(instance.id)),
      leasedAt: Date.parse(entry.leasedAt),
      waitedMs: this.clock.now() - started,
    };
  }

  /** Hand idle instances to waiting jobs, first come first served. */
  private dispatch(): void {
    if (this.waiters.length === 0) return;
    let idle = this.countIn('idle');
    for (const waiter of [...this.waiters]) {
      if (idle === 0) break;
      const instance = this.pickIdle(waiter.credentials, scopeOf(waiter.job, waiter.credentials));
      if (!instance) continue;
      idle--;
      this.waiters = this.waiters.filter((w) => w !== waiter);
      this.lease(instance, waiter.job, waiter.credentials, waiter.enqueuedAt).then(
        waiter.resolve,
        waiter.reject,
      );
    }
  }

  // ---------------------------------------------------------------- scaling

  private plan(why: string, applyLaunch: boolean): ScalePlan {
    const now = this.clock.now();
    const policy = this.tuning.policy;
    this.bucket = refill(this.bucket, now, policy.throttle);
    let adaptiveIdle = 0;
    if (policy.adaptive?.enabled) {
      const rate = this.arrivals.rate(now, policy.adaptive.windowMs);
      const lead = policy.adaptive.leadTimeMs > 0 ? policy.adaptive.leadTimeMs : this.leadTime.median();
      adaptiveIdle = adaptiveIdleTarget(rate, lead, policy.adaptive);
    }
    // The pool policy covers default-shaped instances; rule-shaped ones are launched per waiting
    // job (launchShaped) and only take room under max_instances.
    const pool = [...this.instances.values()].filter((i) => i.shape === DEFAULT_SHAPE);
    const shapedActive =
      this.countIn('creating', 'booting', 'idle', 'leased') -
      pool.filter((i) => ['creating', 'booting', 'idle', 'leased'].includes(i.state)).length +
      this.launchingShaped;
    const snapshot: PoolSnapshot = {
      now,
      instances: pool,
      waiting: this.waiters.filter((w) => !w.credentials.shape).length,
      launching: this.launchingNow() - this.launchingShaped,
      draining: this.draining,
      adaptiveIdle,
      launchTokens: applyLaunch ? this.bucket.tokens : Number.POSITIVE_INFINITY,
    };
    const plan = planScale(snapshot, {
      ...policy,
      maxInstances: Math.max(0, policy.maxInstances - shapedActive),
    });
    this.lastPlan = plan;
    const launch = applyLaunch ? plan.launch : 0;
    if (launch > 0 || plan.scaleIn.length > 0) {
      this.log.info({ why, ...plan.inputs, launch, scale_in: plan.scaleIn.length }, 'scaling decision');
      this.observer.decision?.(plan);
    }
    return plan;
  }

  private scaleNow(why: string): void {
    if (this.stopped) return;
    const plan = this.plan(why, false);
    if (plan.scaleIn.length > 0) {
      this.options.journal.batch(() => {
        for (const id of plan.scaleIn) {
          const instance = this.instances.get(id);
          // Compare-and-set: only an instance still idle right now is removed.
          if (instance?.state === 'idle') {
            this.transition(instance, 'draining');
            this.retire(instance, 'scale-in');
          }
        }
      });
    }
    // Rule-shaped instances are not pooled: one that idles past idle_time goes.
    const now = this.clock.now();
    this.options.journal.batch(() => {
      for (const instance of this.instances.values()) {
        if (instance.state !== 'idle' || instance.shape === DEFAULT_SHAPE) continue;
        if (this.draining || now - (instance.idleSince ?? now) >= this.tuning.policy.idleTimeMs) {
          this.transition(instance, 'draining');
          this.retire(instance, 'idle_time (rule-shaped instance)');
        }
      }
    });
    if ((plan.launch > 0 || this.shapedDemand().length > 0) && this.launchTimer === undefined) {
      // Leading edge: the first launch after a quiet spell goes out now (after this tick, so that
      // acquires arriving together still share it); later ones wait out the window and go as one.
      const wait = Math.max(0, this.lastLaunchFlushAt + this.launchBatchMs - this.clock.now());
      this.launchTimer = this.clock.setTimeout(() => {
        this.launchTimer = undefined;
        this.flushLaunches();
      }, wait);
    }
    this.scheduleReconcile();
  }

  /** Re-plans with the launch throttle applied and sends one launch call for the batch. */
  private flushLaunches(): void {
    if (this.stopped || this.draining) return;
    const plan = this.plan('launch batch', true);
    if (plan.launch > 0) {
      this.lastLaunchFlushAt = this.clock.now();
      this.bucket = take(this.bucket, plan.launch);
      this.track(this.launch(plan.launch));
    }
    this.launchShaped();
    if (plan.inputs.throttled === true && this.launchTimer === undefined) {
      // Come back when the bucket has a token again rather than at the next reconcile.
      const perSecond = this.tuning.policy.throttle?.limitPerSecond ?? 1;
      this.launchTimer = this.clock.setTimeout(
        () => {
          this.launchTimer = undefined;
          this.flushLaunches();
        },
        Math.max(this.launchBatchMs, Math.ceil(1000 / Math.max(perSecond, 0.001))),
      );
    }
  }

  private track<T>(promise: Promise<T>): void {
    this.inFlight.add(promise);
    void promise.finally(() => this.inFlight.delete(promise));
  }

  /**
   * Jobs waiting for a rule's launch shape get instances of that shape, one per job not already
   * covered by one booting or being launched, within max_instances.
   */
  private launchShaped(): void {
    const active = this.countIn('creating', 'booting', 'idle', 'leased') + this.launching;
    let headroom = this.tuning.policy.maxInstances - active;
    for (const { shape, count } of this.shapedDemand()) {
      const n = Math.min(count, headroom);
      if (n <= 0) break;
      headroom -= n;
      this.log.info({ shape: shape.key, launch: n }, 'launching for jobs of a rule-shaped credential class');
      this.track(this.launch(n, shape));
    }
  }

  private shapedDemand(): Array<{ shape: LaunchShape; count: number }> {
    if (this.draining || this.stopped) return [];
    const want = new Map<string, { shape: LaunchShape; count: number }>();
    for (const w of this.waiters) {
      const shape = w.credentials.shape;
      if (!shape) continue;
      const entry = want.get(shape.key) ?? { shape, count: 0 };
      entry.count++;
      want.set(shape.key, entry);
    }
    if (want.size === 0) return [];
    for (const i of this.instances.values()) {
      const entry = want.get(i.shape);
      if (entry && (i.state === 'creating' || i.state === 'booting')) entry.count--;
    }
    for (const [key, n] of this.shapedInFlight) {
      const entry = want.get(key);
      if (entry) entry.count -= n;
    }
    return [...want.values()].filter((e) => e.count > 0);
  }

  private async launch(count: number, shape?: LaunchShape): Promise<void> {
    this.launching += count;
    if (shape) {
      this.launchingShaped += count;
      this.shapedInFlight.set(shape.key, (this.shapedInFlight.get(shape.key) ?? 0) + count);
    }
    const now = this.clock.now();
    // The token is the launch's proof of provenance once the cloud has recorded it.
    const token = this.signer.mint(count, now);
    const log = this.log.child({ launchToken: token });
    this.notifyWaiters(`Launching ${count} ${this.options.provider.name} instance(s)`);
    this.tokensInFlight.add(token);
    try {
      const result = await this.options.provider.launch({
        count,
        token,
        tags: {
          [TAG.fleet]: this.options.fleetName,
          [TAG.manager]: this.options.managerId,
          [TAG.state]: 'booting',
          [TAG.createdAt]: new Date(now).toISOString(),
          [TAG.useCount]: '0',
          [TAG.launchShape]: shape?.key ?? DEFAULT_SHAPE,
        },
        ...(shape ? { shape } : {}),
      });
      this.observer.launched?.(count, result.launched.length, result.failures, this.clock.now() - now);
      // Journal first: from here on a restart knows these instances are ours.
      this.options.journal.addLaunched(
        result.launched.map((i) => i.id),
        now,
      );
      for (const launched of result.launched) {
        if (this.instances.has(launched.id)) continue;
        const record = recordFrom(launched, 'booting', this.clock.now());
        this.instances.set(record.id, record);
        this.observer.instanceState?.(record, undefined, this.clock.now());
        log.info({ instanceId: record.id, ...record.detail }, 'instance launched');
        this.track(this.awaitReady(record));
      }
      for (const failure of result.failures) {
        log.warn({ code: failure.code, count: failure.count, error: failure.message }, 'launch failed');
        this.notifyWaiters(`Launch of ${failure.count} instance(s) failed (${failure.code}); will retry`);
      }
    } catch (error) {
      this.observer.launched?.(count, 0, [{ code: 'error', message: (error as Error).message, count }], 0);
      log.error(
        { count, error: (error as Error).message },
        'launch call failed; will retry on the next reconcile',
      );
      this.notifyWaiters(`Launching an instance failed: ${(error as Error).message}; will retry`);
    } finally {
      this.tokensInFlight.delete(token);
      this.launching -= count;
      if (shape) {
        this.launchingShaped -= count;
        const left = (this.shapedInFlight.get(shape.key) ?? count) - count;
        if (left > 0) this.shapedInFlight.set(shape.key, left);
        else this.shapedInFlight.delete(shape.key);
      }
      this.scheduleReconcile();
    }
  }

  private async awaitReady(instance: InstanceRecord, options: { adopted?: boolean } = {}): Promise<void> {
    // An instance adopted after a restart may be past its deadline already (the daemon was down
    // while it booted): it still gets probed for a while before it is called a failure.
    const deadline = Math.max(
      instance.createdAt + this.tuning.readyTimeoutMs,
      options.adopted ? this.clock.now() + Math.min(this.tuning.readyTimeoutMs, 30_000) : 0,
    );
    let delay = 1000;
    let lastReason = 'not checked yet';
    let ready = false;
    // Always probe at least once, and once more at the deadline: never fail an instance unasked.
    while (!this.stopped && instance.state === 'booting') {
      let retryInMs: number | undefined;
      try {
        const check = await this.options.provider.checkReady(instance.id);
        if (check.ready) {
          ready = true;
          break;
        }
        lastReason = check.reason;
        retryInMs = check.retryInMs;
      } catch (error) {
        lastReason = (error as Error).message;
      }
      const left = deadline - this.clock.now();
      if (left <= 0) break;
      // Probing long before a boot can be done only costs calls (on AWS a probe may describe the
      // instance): once boots have been observed, skip ahead to 70 % of the usual boot time. A
      // probe the provider calls free (retryInMs) is repeated that soon instead: the wait after
      // the instance could take a job is what a cold start pays.
      const early = this.leadTime.observed()
        ? instance.createdAt + 0.7 * this.leadTime.median() - this.clock.now()
        : 0;
      const wait = retryInMs ?? Math.max(delay, early);
      await sleep(this.clock, Math.min(wait, left), this.stopController.signal);
      if (retryInMs === undefined) delay = Math.min(delay * 2, 5000);
    }
    if (this.stopped || instance.state !== 'booting') return;
    if (!ready) {
      this.log.warn(
        { instanceId: instance.id, reason: lastReason },
        'terminating instance that failed readiness',
      );
      this.notifyWaiters(
        `Instance ${instance.id} did not become ready within ${Math.round(this.tuning.readyTimeoutMs / 1000)} s (${lastReason}); replacing it`,
      );
      this.transition(instance, 'failed');
      this.retire(instance, 'readiness timeout');
      this.scaleNow('readiness failed');
      return;
    }
    // Ask once, here, how to reach it: the acquire path then answers from memory.
    try {
      instance.connect = await this.options.provider.connectInfo(instance.id);
    } catch (error) {
      this.log.debug(
        { instanceId: instance.id, error: (error as Error).message },
        'connect info not known yet',
      );
    }
    if (this.stopped || instance.state !== 'booting') return;
    instance.readyAt = this.clock.now();
    instance.idleSince = instance.readyAt;
    // No tag write: "booting" in the tags already means "not leased; check readiness" after a restart.
    this.transition(instance, 'idle');
    const readyMs = instance.readyAt - instance.createdAt;
    this.leadTime.record(readyMs);
    this.observer.ready?.(instance, readyMs);
    this.log.info({ instanceId: instance.id, readyMs }, 'instance ready');
    this.dispatch();
    this.scaleNow('instance ready');
  }

  private retire(instance: InstanceRecord, reason: string): void {
    if (instance.state === 'terminating' || instance.state === 'terminated') return;
    if (!canTransition(instance.state, 'terminating')) this.transition(instance, 'draining');
    this.transition(instance, 'terminating');
    this.options.journal.addRetiring([instance.id]);
    this.log.info({ instanceId: instance.id, reason }, 'terminating instance');
    this.pendingTerminations.add(instance.id);
    if (this.terminateTimer === undefined) {
      this.terminateTimer = this.clock.setTimeout(() => void this.flushTerminations(), this.terminateBatchMs);
    }
  }

  private async flushTerminations(): Promise<void> {
    this.clock.clearTimeout(this.terminateTimer);
    this.terminateTimer = undefined;
    const ids = [...this.pendingTerminations];
    if (ids.length === 0) return;
    this.pendingTerminations.clear();
    for (const id of ids) this.terminatingNow.add(id);
    try {
      await this.options.provider.terminate(ids);
      for (const id of ids) {
        const instance = this.instances.get(id);
        if (instance) this.transition(instance, 'terminated');
        this.instances.delete(id);
      }
      this.options.journal.batch(() => {
        this.options.journal.removeRetiring(ids);
        this.options.journal.removeLaunched(ids);
      });
      this.log.info({ instanceIds: ids }, 'instances terminated');
    } catch (error) {
      // They stay `terminating`; the next reconcile tries again. Never forget an instance. The
      // tag tells ops (and any other reader of the tags) what the manager meant to do.
      for (const id of ids) {
        const instance = this.instances.get(id);
        if (instance) this.syncTags(instance);
      }
      this.log.error({ instanceIds: ids, error: (error as Error).message }, 'terminate failed; will retry');
    } finally {
      for (const id of ids) this.terminatingNow.delete(id);
    }
  }

  private terminationPending(id: string): boolean {
    return this.pendingTerminations.has(id) || this.terminatingNow.has(id);
  }

  // ---------------------------------------------------------------- reconcile

  /** One tick: one listing, merge it with what we know, reap, then scale. */
  async reconcile(): Promise<void> {
    if (this.reconciling) return this.reconciling;
    this.reconciling = this.reconcileOnce().finally(() => {
      this.reconciling = undefined;
    });
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
    const listedFrom = this.clock.now();
    let listing: ProviderInstance[];
    try {
      listing = await this.options.provider.list();
    } catch (error) {
      this.log.warn(
        { error: (error as Error).message },
        'listing instances failed; keeping the last known view',
      );
      return;
    }
    this.lastListedAt = this.clock.now();
    this.mergeListing(listing, listedFrom);
    // Terminations that failed earlier are retried here.
    for (const instance of this.instances.values()) {
      if (instance.state === 'terminating' && !this.terminationPending(instance.id)) {
        this.pendingTerminations.add(instance.id);
      }
    }
    await this.flushTerminations();
    if (this.tuning.reap) await this.reap(this.tuning.reap);
    this.dispatch();
    this.scaleNow('reconcile');
  }

  /** The synchronous part of a tick (public for the bench, which times it at scale). */
  mergeListing(listing: readonly ProviderInstance[], listedFrom = this.clock.now()): void {
    const merge = mergeListing(this.instances, listing, {
      now: this.clock.now(),
      listedFrom,
      terminationPending: (id) => this.terminationPending(id),
      retiring: this.options.journal.retiring(),
      launched: this.options.journal.launched(),
      // An instance outlives neither its dead-man switch nor this: its record can go.
      launchedRetentionMs: this.tuning.policy.maxInstanceLifetimeMs + LISTING_GRACE_MS,
      foreign: this.foreign,
    });
    for (const { instance, why, reported } of merge.vanished) {
      // A job still holds it: its run hook may be waiting on a connection that will never answer.
      if (reported && instance.state === 'leased' && instance.jobId)
        this.leaseLost(instance.jobId, instance.id, why);
      this.forgetVanished(instance, why);
    }
    for (const instance of merge.drifted) if (!this.tagWrites.has(instance.id)) this.syncTags(instance);
    // A listing can see an instance before the launch call that made it has answered (a slow
    // provider): that call records and logs it; adopting it here would hide the launch.
    for (const listed of merge.unknown) if (!this.launchInFlight(listed)) this.adoptIfOurs(listed);
    for (const id of merge.foreignGone) this.foreign.delete(id);
    // Records of instances that no longer exist are done with.
    this.options.journal.batch(() => {
      if (merge.staleRetiring.length > 0) this.options.journal.removeRetiring(merge.staleRetiring);
      if (merge.staleLaunched.length > 0) this.options.journal.removeLaunched(merge.staleLaunched);
    });
  }

  private launchInFlight(listed: ProviderInstance): boolean {
    const token = listed.clientToken;
    if (!token) return false;
    for (const t of this.tokensInFlight) if (token === t || token.startsWith(`${t}-`)) return true;
    return false;
  }

  /**
   * Adopt a listed instance only if this manager launched it. One that is not is logged once,
   * loudly, counted and shown by status and doctor, and otherwise left alone: terminating an
   * instance because someone tagged it would make us anyone's deputy.
   */
  private adoptIfOurs(listed: ProviderInstance): void {
    const provenance = provenanceOf(listed, this.options.journal, this.signer);
    if (provenance.ours) {
      this.adopt(listed, provenance.proof);
      return;
    }
    const foreign: ForeignInstance = {
      id: listed.id,
      why: provenance.why,
      seenAt: this.clock.now(),
      launchedAt: listed.launchedAt.getTime(),
    };
    this.foreign.set(listed.id, foreign);
    this.log.error(
      {
        instanceId: listed.id,
        why: provenance.why,
        launchedAt: listed.launchedAt.toISOString(),
        state: listed.tags[TAG.state],
      },
      'instance carries this manager\'s tags but was not launched by it: not adopting it, and never terminating or leasing it (see docs/security.md, "Provenance")',
    );
  }

  /** Orphan reaping (see reconcile.ts): ask GitLab about due leases, then apply the plan. */
  private async reap(policy: ReapPolicy): Promise<void> {
    if (this.options.jobChecker) {
      await checkLeasedJobs(this.instances.values(), {
        journal: this.options.journal,
        checker: this.options.jobChecker,
        clock: this.clock,
        intervalMs: this.tuning.jobCheckIntervalMs ?? 5 * 60_000,
        signal: this.stopController.signal,
      });
    }
    if (this.stopped) return;
    const now = this.clock.now();
    const plan = planOrphans(this.instances.values(), now, policy);
    for (const { id, reason } of plan.mark) {
      const instance = this.instances.get(id);
      if (!instance) continue;
      instance.orphanMarkedAt = now;
      instance.orphanReason = reason;
      this.syncTags(instance);
      this.log.warn(
        { instanceId: id, jobId: instance.jobId, state: instance.state, reason },
        'orphan suspected; marked for re-check',
      );
    }
    for (const id of plan.unmark) {
      const instance = this.instances.get(id);
      if (!instance) continue;
      this.log.info({ instanceId: id, jobId: instance.jobId }, 'orphan mark cleared: the instance is in use');
      instance.orphanMarkedAt = undefined;
      instance.orphanReason = undefined;
      this.syncTags(instance);
    }
    this.options.journal.batch(() => {
      for (const { id, reason } of plan.terminate) {
        const instance = this.instances.get(id);
        const seen = plan.seen.get(id);
        // Compare-and-set: still the same state and job as when the plan was made.
        if (!instance || !seen || instance.state !== seen.state || instance.jobId !== seen.jobId) continue;
        if (instance.orphanMarkedAt === undefined) continue;
        this.log.warn({ instanceId: id, jobId: instance.jobId, reason }, 'reaping orphan after re-check');
        if (instance.jobId) this.options.journal.delete(instance.jobId);
        this.retire(instance, `orphan: ${reason}`);
        this.observer.reaped?.(id, reason);
      }
    });
  }

  /** An instance we did not know (daemon restart, or a crash between launch and bookkeeping). */
  private adopt(listed: ProviderInstance, proof: string): void {
    const { record, next, retiring } = adoptionOf(listed, this.options.journal, this.clock.now());
    this.instances.set(record.id, record);
    this.observer.instanceState?.(record, undefined, this.clock.now());
    this.log.info(
      { instanceId: record.id, state: record.state, jobId: record.jobId, retiring, proof },
      'adopted instance from tags',
    );
    if (next.kind === 'retire') {
      record.state = 'failed';
      this.retire(record, next.reason);
    } else if (next.kind === 'await-ready') this.track(this.awaitReady(record, { adopted: true }));
    else if (next.kind === 'idle') record.idleSince = this.clock.now();
  }

  private forgetVanished(instance: InstanceRecord, why: string): void {
    if (instance.state === 'terminating') {
      this.pendingTerminations.delete(instance.id);
    } else {
      this.log.warn(
        { instanceId: instance.id, state: instance.state, jobId: instance.jobId, why },
        'instance vanished',
      );
    }
    const from = instance.state;
    instance.state = 'terminated';
    this.observer.instanceState?.(instance, from, this.clock.now());
    this.instances.delete(instance.id);
    this.options.journal.batch(() => {
      this.options.journal.removeRetiring([instance.id]);
      this.options.journal.removeLaunched([instance.id]);
    });
  }

  private scheduleReconcile(): void {
    if (this.stopped) return;
    // Fast only while a waiting job has no instance on its way (a launch failed or was throttled:
    // the tick retries it) or a terminate must be retried. Booting instances are polled by
    // awaitReady, so listing every 2 s while they boot would only cost API calls.
    const coming = this.launchingNow() + this.countIn('creating', 'booting');
    // A launch batch about to go out covers the waiters too.
    const busy =
      (this.waiters.length > coming && this.launchTimer === undefined) || this.terminateRetryPending();
    const interval = busy ? this.tuning.reconcileFastIntervalMs : this.tuning.reconcileIntervalMs;
    const at = this.clock.now() + interval;
    // Only ever move the next tick earlier: re-arming on every event would starve the loop.
    if (this.reconcileTimer !== undefined && this.reconcileAt <= at) return;
    this.clock.clearTimeout(this.reconcileTimer);
    this.reconcileAt = at;
    this.reconcileTimer = this.clock.setTimeout(() => {
      this.reconcileTimer = undefined;
      this.reconcileAt = Number.POSITIVE_INFINITY;
      void this.reconcile().finally(() => this.scheduleReconcile());
    }, interval);
  }

  // ---------------------------------------------------------------- helpers

  private transition(instance: InstanceRecord, to: InstanceState): void {
    if (!canTransition(instance.state, to)) {
      throw new Error(`bug: instance ${instance.id} cannot go from ${instance.state} to ${to}`);
    }
    if (instance.state === to) return;
    const from = instance.state;
    instance.state = to;
    instance.stateSince = this.clock.now();
    this.observer.instanceState?.(instance, from, this.clock.now());
  }

  /**
   * Tag writes are serialized per instance so a late write never overtakes a newer one, and
   * coalesced: a write still waiting in the queue reads the state when it runs, so a second
   * change before it starts costs no extra call. Tags are written when a restart needs them (a
   * lease starts or ends with reuse, an orphan mark, a failed terminate); booting → idle and
   * → terminating are not, see lease-journal.ts.
   */
  private syncTags(instance: InstanceRecord): void {
    if (this.tagQueued.has(instance.id)) return;
    this.tagQueued.add(instance.id);
    instance.tagsWrittenAt = this.clock.now();
    const previous = this.tagWrites.get(instance.id) ?? Promise.resolve();
    const next = previous.then(async () => {
      this.tagQueued.delete(instance.id);
      if (instance.state === 'terminated' || !this.instances.has(instance.id)) return;
      try {
        await this.options.provider.setTags(instance.id, tagsOf(instance));
      } catch (error) {
        this.log.warn(
          { instanceId: instance.id, error: (error as Error).message },
          'tag write failed; will repair',
        );
      }
    });
    this.tagWrites.set(instance.id, next);
    void next.finally(() => {
      if (this.tagWrites.get(instance.id) === next) this.tagWrites.delete(instance.id);
    });
  }

  private notifyWaiters(message: string): void {
    for (const waiter of this.waiters) waiter.onProgress(message);
  }

  private terminateRetryPending(): boolean {
    for (const i of this.instances.values())
      if (i.state === 'terminating' && !this.terminationPending(i.id)) return true;
    return false;
  }

  private countIn(...states: InstanceState[]): number {
    let n = 0;
    for (const instance of this.instances.values()) if (states.includes(instance.state)) n++;
    return n;
  }

  private describeCapacity(): string {
    const active = this.countIn('creating', 'booting', 'idle', 'leased');
    return `${active}/${this.tuning.policy.maxInstances} instances, ${this.countIn('booting') + this.launchingNow()} booting`;
  }

  /** Launch calls in flight, plus instances a provider asked for that no listing has shown yet. */
  private launchingNow(): number {
    return this.launching + (this.options.provider.awaitingLaunch?.() ?? 0);
  }
}
