/**
 * The fleet: instances and their leases, the acquire queue, and the reconcile loop.
 *
 * All state changes happen synchronously on the event loop, so "check the instance is idle, then
 * lease it" is a compare-and-set: a scale-in that runs meanwhile sees `leased` and leaves it. Cloud
 * calls (launch, terminate, tag writes) happen around those changes, never inside them.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { JobInfo } from '../control/protocol.js';
import type { ConnectInfo, Provider, ProviderInstance } from '../providers/provider.js';
import { TAG } from '../providers/tags.js';
import { type Clock, sleep, systemClock } from './clock.js';
import type { LeaseEntry, LeaseJournal } from './lease-journal.js';
import { type PoolPolicy, type PoolSnapshot, planScale } from './policy.js';
import { canTransition, type InstanceState, isInstanceState } from './states.js';

export interface InstanceRecord {
  readonly id: string;
  state: InstanceState;
  readonly createdAt: number;
  readyAt?: number;
  idleSince?: number;
  jobId?: string;
  leasedAt?: number;
  useCount: number;
  /** Credential class and project of the jobs it served: reuse stays within both. */
  credentialClass?: string;
  projectPath?: string;
  detail: Record<string, string>;
  /** When the listing last showed it; instances missing from a listing long enough are gone. */
  lastSeen: number;
}

export interface CredentialChoice {
  readonly credentialClass: string;
  readonly instanceProfile?: string;
  readonly hopLimit?: number;
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
}

export interface FleetOptions {
  readonly provider: Provider;
  readonly journal: LeaseJournal;
  readonly log: Logger;
  readonly fleetName: string;
  readonly managerId: string;
  readonly tuning: FleetTuning;
  readonly clock?: Clock;
}

interface Waiter {
  readonly job: JobInfo;
  readonly credentials: CredentialChoice;
  readonly enqueuedAt: number;
  readonly onProgress: (message: string) => void;
  resolve(grant: LeaseGrant): void;
  reject(error: Error): void;
}

/** How long an instance we know may be missing from listings before we call it gone. */
const LISTING_GRACE_MS = 60_000;
/** Batches terminations that come close together into one call. */
const TERMINATE_BATCH_MS = 50;

export class Fleet {
  private readonly instances = new Map<string, InstanceRecord>();
  private waiters: Waiter[] = [];
  private launching = 0;
  private draining = false;
  private stopped = false;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly pendingTerminations = new Set<string>();
  private terminateTimer: unknown;
  private reconcileTimer: unknown;
  private reconciling: Promise<void> | undefined;
  private lastPlanKey = '';
  private readonly tagWrites = new Map<string, Promise<void>>();
  private readonly stopController = new AbortController();

  private tuning: FleetTuning;

  constructor(private readonly options: FleetOptions) {
    this.clock = options.clock ?? systemClock;
    this.log = options.log.child({ module: 'fleet' });
    this.tuning = options.tuning;
  }

  get policy(): PoolPolicy {
    return this.tuning.policy;
  }

  /** Apply reloaded knobs. Leases and instances are untouched; the next decision uses them. */
  updateTuning(tuning: FleetTuning): void {
    this.tuning = tuning;
    this.log.info({ ...tuning.policy, maxUseCount: tuning.maxUseCount }, 'pool policy updated');
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
    for (const waiter of this.waiters.splice(0)) {
      waiter.reject(
        new FleetError('the runner-fleet daemon is stopping; the job will be retried', 'stopping'),
      );
    }
    await this.reconciling;
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
      if (instance && instance.state === 'leased') return this.grantFor(instance, existing, started);
      this.options.journal.delete(job.id);
    }
    if (this.draining) {
      throw new FleetError('this runner-fleet manager is draining and takes no new jobs', 'draining');
    }
    this.waiters = this.waiters.filter((w) => {
      if (w.job.id !== job.id) return true;
      w.reject(new FleetError('superseded by a newer acquire for the same job', 'canceled'));
      return false;
    });
    const idle = this.pickIdle(credentials.credentialClass, job.projectPath);
    if (idle) return this.lease(idle, job, credentials, started);

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
          resolve(grant);
        },
        reject: (error) => {
          cleanup();
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
      onProgress(
        `No idle instance; waiting for one (${this.waiters.length} job(s) waiting, ${this.describeCapacity()})`,
      );
      this.scaleNow('job waiting');
    });
  }

  /** End a job's lease. Idempotent: releasing twice, or a job that never got a lease, is fine. */
  async release(jobId: string, reason: string): Promise<{ released: boolean; instanceId?: string }> {
    for (const waiter of this.waiters.filter((w) => w.job.id === jobId)) {
      waiter.reject(new FleetError('the job was cleaned up while it waited', 'canceled'));
    }
    const entry = this.options.journal.get(jobId);
    const instance =
      (entry && this.instances.get(entry.instanceId)) ??
      [...this.instances.values()].find((i) => i.jobId === jobId && i.state === 'leased');
    if (!entry && !instance) return { released: false };
    this.options.journal.delete(jobId);
    const instanceId = instance?.id ?? entry?.instanceId;
    if (!instance || instance.jobId !== jobId) {
      this.log.info({ jobId, instanceId, reason }, 'released lease of an instance that is already gone');
      return { released: true, ...(instanceId ? { instanceId } : {}) };
    }
    await this.options.provider.endLease?.(instance.id, jobId).catch((error: Error) => {
      this.log.warn(
        { jobId, instanceId: instance.id, error: error.message },
        'provider could not end the lease',
      );
    });
    instance.useCount += 1;
    instance.jobId = undefined;
    instance.leasedAt = undefined;
    const log = this.log.child({ jobId, instanceId: instance.id });
    const wornOut = instance.useCount >= this.tuning.maxUseCount;
    const tooOld = this.clock.now() - instance.createdAt >= this.tuning.policy.maxInstanceLifetimeMs;
    if (wornOut || tooOld || this.draining) {
      log.info(
        { reason, useCount: instance.useCount, wornOut, tooOld },
        'lease released; terminating instance',
      );
      this.retire(
        instance,
        wornOut ? 'max_use_count reached' : tooOld ? 'max_instance_lifetime reached' : 'draining',
      );
    } else {
      this.transition(instance, 'idle');
      instance.idleSince = this.clock.now();
      log.info({ reason, useCount: instance.useCount }, 'lease released; instance idle for reuse');
      this.dispatch();
    }
    this.scaleNow('lease released');
    return { released: true, instanceId: instance.id };
  }

  leaseOf(jobId: string): (LeaseEntry & { connect?: ConnectInfo }) | undefined {
    return this.options.journal.get(jobId);
  }

  async connectInfo(instanceId: string): Promise<ConnectInfo> {
    return this.options.provider.connectInfo(instanceId);
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

  get isDraining(): boolean {
    return this.draining;
  }

  leasedCount(): number {
    return [...this.instances.values()].filter((i) => i.state === 'leased').length;
  }

  /** Terminate every instance this manager owns (delete_instances_on_shutdown). */
  async terminateAll(): Promise<void> {
    for (const instance of this.instances.values()) this.retire(instance, 'shutdown');
    await this.flushTerminations();
  }

  snapshot(): { instances: InstanceRecord[]; waiting: number; launching: number } {
    return {
      instances: [...this.instances.values()].map((i) => ({ ...i, detail: { ...i.detail } })),
      waiting: this.waiters.length,
      launching: this.launching,
    };
  }

  // ---------------------------------------------------------------- leasing internals

  private pickIdle(credentialClass: string, projectPath: string | undefined): InstanceRecord | undefined {
    let best: InstanceRecord | undefined;
    for (const instance of this.instances.values()) {
      if (instance.state !== 'idle') continue;
      const reusable =
        instance.useCount === 0 ||
        (instance.credentialClass === credentialClass && instance.projectPath === projectPath);
      if (!reusable) continue;
      // Prefer a used instance of the same class (warm caches), then the oldest ready one.
      if (
        !best ||
        (instance.useCount > 0 && best.useCount === 0) ||
        (instance.readyAt ?? 0) < (best.readyAt ?? 0)
      )
        best = instance;
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
    this.transition(instance, 'leased');
    instance.jobId = job.id;
    instance.leasedAt = now;
    instance.idleSince = undefined;
    instance.credentialClass = credentials.credentialClass;
    instance.projectPath = job.projectPath;
    const entry: LeaseEntry = {
      jobId: job.id,
      instanceId: instance.id,
      leasedAt: new Date(now).toISOString(),
      credentialClass: credentials.credentialClass,
      ...(job.projectPath ? { projectPath: job.projectPath } : {}),
      ...(job.jobToken ? { jobToken: job.jobToken } : {}),
      ...(job.serverUrl ? { serverUrl: job.serverUrl } : {}),
    };
    // Journal before anything else: from here on a restart knows this instance is busy.
    this.options.journal.put(entry);
    this.syncTags(instance);
    this.log.info(
      {
        jobId: job.id,
        instanceId: instance.id,
        credentialClass: credentials.credentialClass,
        waitedMs: now - started,
      },
      'lease acquired',
    );
    try {
      await this.options.provider.prepareLease?.(instance.id, {
        jobId: job.id,
        ...(credentials.instanceProfile ? { instanceProfile: credentials.instanceProfile } : {}),
        ...(credentials.hopLimit ? { hopLimit: credentials.hopLimit } : {}),
      });
    } catch (error) {
      // The instance may be half-prepared (e.g. the wrong profile): never hand it to anyone.
      this.options.journal.delete(job.id);
      instance.jobId = undefined;
      this.retire(instance, 'lease preparation failed');
      throw new FleetError(
        `could not prepare instance ${instance.id}: ${(error as Error).message}`,
        'provider',
      );
    }
    return this.grantFor(instance, entry, started);
  }

  private async grantFor(instance: InstanceRecord, entry: LeaseEntry, started: number): Promise<LeaseGrant> {
    return {
      jobId: entry.jobId,
      instanceId: instance.id,
      connect: await this.options.provider.connectInfo(instance.id),
      leasedAt: Date.parse(entry.leasedAt),
      waitedMs: this.clock.now() - started,
    };
  }

  /** Hand idle instances to waiting jobs, first come first served. */
  private dispatch(): void {
    for (const waiter of [...this.waiters]) {
      const idle = this.pickIdle(waiter.credentials.credentialClass, waiter.job.projectPath);
      if (!idle) continue;
      this.waiters = this.waiters.filter((w) => w !== waiter);
      this.lease(idle, waiter.job, waiter.credentials, waiter.enqueuedAt).then(waiter.resolve, waiter.reject);
    }
  }

  // ---------------------------------------------------------------- scaling

  private scaleNow(why: string): void {
    if (this.stopped) return;
    const plan = planScale(this.policySnapshot(), this.tuning.policy);
    const key = JSON.stringify(plan.inputs) + plan.launch + plan.scaleIn.join();
    if (plan.launch > 0 || plan.scaleIn.length > 0 || key !== this.lastPlanKey) {
      if (plan.launch > 0 || plan.scaleIn.length > 0)
        this.log.info(
          { why, ...plan.inputs, launch: plan.launch, scale_in: plan.scaleIn.length },
          'scaling decision',
        );
      this.lastPlanKey = key;
    }
    for (const id of plan.scaleIn) {
      const instance = this.instances.get(id);
      // Compare-and-set: only an instance still idle right now is removed.
      if (instance?.state === 'idle') {
        this.transition(instance, 'draining');
        this.retire(instance, 'scale-in');
      }
    }
    if (plan.launch > 0) void this.launch(plan.launch);
    this.scheduleReconcile();
  }

  private policySnapshot(): PoolSnapshot {
    return {
      now: this.clock.now(),
      instances: [...this.instances.values()].map((i) => ({
        id: i.id,
        state: i.state,
        createdAt: i.createdAt,
        ...(i.idleSince !== undefined ? { idleSince: i.idleSince } : {}),
        useCount: i.useCount,
        fresh: i.useCount === 0,
      })),
      waiting: this.waiters.length,
      launching: this.launching,
      draining: this.draining,
    };
  }

  private async launch(count: number): Promise<void> {
    this.launching += count;
    const token = randomUUID();
    const now = this.clock.now();
    const log = this.log.child({ launchToken: token });
    this.notifyWaiters(`Launching ${count} ${this.options.provider.name} instance(s)`);
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
        },
      });
      for (const launched of result.launched) {
        if (this.instances.has(launched.id)) continue;
        const record = this.recordFrom(launched, 'booting');
        this.instances.set(record.id, record);
        log.info({ instanceId: record.id, ...record.detail }, 'instance launched');
        void this.awaitReady(record);
      }
      for (const failure of result.failures) {
        log.warn({ code: failure.code, count: failure.count, error: failure.message }, 'launch failed');
        this.notifyWaiters(`Launch of ${failure.count} instance(s) failed (${failure.code}); will retry`);
      }
    } catch (error) {
      log.error(
        { count, error: (error as Error).message },
        'launch call failed; will retry on the next reconcile',
      );
      this.notifyWaiters(`Launching an instance failed: ${(error as Error).message}; will retry`);
    } finally {
      this.launching -= count;
      this.scheduleReconcile();
    }
  }

  private async awaitReady(instance: InstanceRecord): Promise<void> {
    const deadline = instance.createdAt + this.tuning.readyTimeoutMs;
    let delay = 100;
    let lastReason = 'not checked yet';
    while (!this.stopped && instance.state === 'booting' && this.clock.now() < deadline) {
      try {
        const check = await this.options.provider.checkReady(instance.id);
        if (check.ready) break;
        lastReason = check.reason;
      } catch (error) {
        lastReason = (error as Error).message;
      }
      await sleep(this.clock, delay, this.stopController.signal);
      delay = Math.min(delay * 2, 5000);
    }
    if (this.stopped || instance.state !== 'booting') return;
    if (this.clock.now() >= deadline) {
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
    instance.readyAt = this.clock.now();
    instance.idleSince = instance.readyAt;
    this.transition(instance, 'idle');
    this.log.info(
      { instanceId: instance.id, readyMs: instance.readyAt - instance.createdAt },
      'instance ready',
    );
    this.dispatch();
    this.scaleNow('instance ready');
  }

  private retire(instance: InstanceRecord, reason: string): void {
    if (instance.state === 'terminating' || instance.state === 'terminated') return;
    if (!canTransition(instance.state, 'terminating')) this.transition(instance, 'draining');
    this.transition(instance, 'terminating');
    this.log.info({ instanceId: instance.id, reason }, 'terminating instance');
    this.pendingTerminations.add(instance.id);
    if (this.terminateTimer === undefined) {
      this.terminateTimer = this.clock.setTimeout(() => void this.flushTerminations(), TERMINATE_BATCH_MS);
    }
  }

  private async flushTerminations(): Promise<void> {
    this.clock.clearTimeout(this.terminateTimer);
    this.terminateTimer = undefined;
    const ids = [...this.pendingTerminations];
    if (ids.length === 0) return;
    this.pendingTerminations.clear();
    try {
      await this.options.provider.terminate(ids);
      for (const id of ids) {
        const instance = this.instances.get(id);
        if (instance) this.transition(instance, 'terminated');
        this.instances.delete(id);
      }
      this.log.info({ instanceIds: ids }, 'instances terminated');
    } catch (error) {
      // They stay `terminating`; the next reconcile tries again. Never forget an instance.
      this.log.error({ instanceIds: ids, error: (error as Error).message }, 'terminate failed; will retry');
    }
  }

  // ---------------------------------------------------------------- reconcile

  /** One tick: one listing, merge it with what we know, then scale. */
  async reconcile(): Promise<void> {
    if (this.reconciling) return this.reconciling;
    this.reconciling = this.reconcileOnce().finally(() => {
      this.reconciling = undefined;
    });
    return this.reconciling;
  }

  private async reconcileOnce(): Promise<void> {
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
    const now = this.clock.now();
    const seen = new Set<string>();
    for (const listed of listing) {
      seen.add(listed.id);
      const known = this.instances.get(listed.id);
      if (listed.status === 'gone') {
        if (known) this.forgetVanished(known, 'the provider reports it terminated');
        continue;
      }
      if (known) {
        known.lastSeen = now;
        this.repairTags(known, listed);
        continue;
      }
      this.adopt(listed);
    }
    for (const known of [...this.instances.values()]) {
      if (seen.has(known.id)) continue;
      if (known.state === 'terminating' && !this.pendingTerminations.has(known.id)) {
        this.instances.delete(known.id);
        continue;
      }
      if (now - known.lastSeen > LISTING_GRACE_MS)
        this.forgetVanished(known, 'it is missing from the listing');
    }
    // Terminations that failed earlier are retried here.
    for (const instance of this.instances.values()) {
      if (instance.state === 'terminating' && !this.pendingTerminations.has(instance.id)) {
        this.pendingTerminations.add(instance.id);
      }
    }
    await this.flushTerminations();
    this.dispatch();
    this.scaleNow('reconcile');
  }

  /** An instance we did not know (daemon restart, or a crash between launch and bookkeeping). */
  private adopt(listed: ProviderInstance): void {
    const tagState = listed.tags[TAG.state] ?? '';
    const lease = this.options.journal.byInstance(listed.id);
    let state: InstanceState = isInstanceState(tagState) ? tagState : 'booting';
    if (lease) state = 'leased';
    const record = this.recordFrom(listed, state === 'creating' ? 'booting' : state);
    record.useCount = Number(listed.tags[TAG.useCount] ?? '0') || 0;
    if (lease) {
      record.jobId = lease.jobId;
      record.leasedAt = Date.parse(lease.leasedAt);
      record.credentialClass = lease.credentialClass;
      record.projectPath = lease.projectPath;
    } else if (state === 'leased') {
      // Tagged leased but no journal entry: the job may still run. Keep it leased; the orphan
      // reaper decides, never this guess.
      record.jobId = listed.tags[TAG.jobId];
      record.leasedAt = Date.parse(listed.tags[TAG.leasedAt] ?? '') || this.clock.now();
    }
    this.instances.set(record.id, record);
    this.log.info(
      { instanceId: record.id, state: record.state, jobId: record.jobId },
      'adopted instance from tags',
    );
    if (record.state === 'booting') void this.awaitReady(record);
    else if (record.state === 'idle') record.idleSince = this.clock.now();
    else if (['draining', 'failed', 'terminating'].includes(record.state)) {
      record.state = 'failed';
      this.retire(record, 'found half-terminated after restart');
    }
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
    this.instances.delete(instance.id);
  }

  private repairTags(known: InstanceRecord, listed: ProviderInstance): void {
    const want = this.tagsOf(known);
    const drift = Object.entries(want).some(([k, v]) => (listed.tags[k] ?? '') !== v);
    if (drift && !this.tagWrites.has(known.id)) this.syncTags(known);
  }

  private scheduleReconcile(): void {
    if (this.stopped) return;
    const busy = this.waiters.length > 0 || this.launching > 0 || this.countIn('booting', 'terminating') > 0;
    const interval = busy ? this.tuning.reconcileFastIntervalMs : this.tuning.reconcileIntervalMs;
    this.clock.clearTimeout(this.reconcileTimer);
    this.reconcileTimer = this.clock.setTimeout(() => {
      void this.reconcile().finally(() => this.scheduleReconcile());
    }, interval);
  }

  // ---------------------------------------------------------------- helpers

  private transition(instance: InstanceRecord, to: InstanceState): void {
    if (!canTransition(instance.state, to)) {
      throw new Error(`bug: instance ${instance.id} cannot go from ${instance.state} to ${to}`);
    }
    if (instance.state === to) return;
    instance.state = to;
    if (to !== 'terminated') this.syncTags(instance);
  }

  private tagsOf(instance: InstanceRecord): Record<string, string> {
    return {
      [TAG.state]: instance.state,
      [TAG.jobId]: instance.jobId ?? '',
      [TAG.leasedAt]: instance.leasedAt ? new Date(instance.leasedAt).toISOString() : '',
      [TAG.useCount]: String(instance.useCount),
      [TAG.credentialClass]: instance.credentialClass ?? '',
    };
  }

  /** Tag writes are serialized per instance so a late write never overtakes a newer one. */
  private syncTags(instance: InstanceRecord): void {
    const previous = this.tagWrites.get(instance.id) ?? Promise.resolve();
    const next = previous.then(async () => {
      if (instance.state === 'terminated' || !this.instances.has(instance.id)) return;
      try {
        await this.options.provider.setTags(instance.id, this.tagsOf(instance));
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

  private recordFrom(listed: ProviderInstance, state: InstanceState): InstanceRecord {
    const createdTag = Date.parse(listed.tags[TAG.createdAt] ?? '');
    return {
      id: listed.id,
      state,
      createdAt: Number.isNaN(createdTag) ? listed.launchedAt.getTime() : createdTag,
      useCount: 0,
      detail: { ...(listed.detail ?? {}) },
      lastSeen: this.clock.now(),
    };
  }

  private notifyWaiters(message: string): void {
    for (const waiter of this.waiters) waiter.onProgress(message);
  }

  private countIn(...states: InstanceState[]): number {
    let n = 0;
    for (const instance of this.instances.values()) if (states.includes(instance.state)) n++;
    return n;
  }

  private describeCapacity(): string {
    const active = this.countIn('creating', 'booting', 'idle', 'leased');
    return `${active}/${this.tuning.policy.maxInstances} instances, ${this.countIn('booting') + this.launching} booting`;
  }
}
