/**
 * The AWS provider: the only module (with launch.ts) that calls EC2 and Auto Scaling. It speaks
 * the fleet's language (ProviderInstance, LaunchResult, ReadyCheck) and keeps SDK shapes inside.
 *
 * - One paginated DescribeInstances per `list()`, filtered on this fleet's tags and on the live
 *   instance states (terminated instances stay listed for about an hour: at scale they would be
 *   most of the pages). An instance we track that drops out of it is looked up by id, in one call
 *   for all of them, which is how a vanished instance's cause (spot reclaim) is still seen. The
 *   answer refreshes a small cache (address, state) that `checkReady` and `connectInfo` read.
 * - `fleet` mode: one RunInstances per instance, with that instance's own user data (dead-man
 *   switch, its own SSH host key and client key) and tags in the call; `asg` mode: one launch
 *   template version per key window, shared by the instances launched in it (launch.ts).
 * - SSH keys are generated before the launch call and stored under the launch (or window)
 *   token, then under the instance id once it is known; after a crash in between, or for an Auto
 *   Scaling instance, the launch-token tag on the instance leads back to them.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AutoScalingClient } from '@aws-sdk/client-auto-scaling';
import {
  AssociateIamInstanceProfileCommand,
  CreateTagsCommand,
  DeleteTagsCommand,
  DescribeIamInstanceProfileAssociationsCommand,
  DescribeInstancesCommand,
  type EC2Client,
  type Instance as Ec2Instance,
  ModifyInstanceMetadataOptionsCommand,
  paginateDescribeInstances,
  ReplaceIamInstanceProfileAssociationCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import type { Logger } from 'pino';
import { type Clock, sleep, systemClock } from '../../fleet/clock.js';
import {
  deleteInstanceKeys,
  generateInstanceKeys,
  type InstanceKeys,
  loadInstanceKeys,
  type StoredInstanceKeys,
  storeInstanceKeys,
} from '../../ssh/keys.js';
import type {
  ConnectInfo,
  LaunchFailure,
  LaunchRequest,
  LaunchResult,
  LeaseContext,
  Provider,
  ProviderInstance,
  ReadyCheck,
  SshConnectInfo,
  Tags,
} from '../provider.js';
import { TAG } from '../tags.js';
import type { AwsConfig } from './config.js';
import { awsErrorCode, describeAwsError } from './errors.js';
import {
  AsgSteering,
  type KeyWindow,
  type LaunchOutcome,
  RunInstancesLauncher,
  WINDOW_MAX_INSTANCES,
} from './launch.js';
import { sshRun, tcpReachable } from './readiness.js';
import { TokenBucket } from './token-bucket.js';
import { renderAwsUserData } from './user-data.js';

export interface AwsProviderOptions {
  readonly config: AwsConfig;
  readonly fleetName: string;
  readonly managerId: string;
  readonly stateDir: string;
  /** Dead-man switch: the instance powers itself off after this long. */
  readonly maxLifetimeMs: number;
  readonly ec2: EC2Client;
  readonly autoscaling?: AutoScalingClient;
  readonly log: Logger;
  /** Bound on one `instance_ready_command` run. */
  readonly readyCommandTimeoutMs?: number;
  /** asg mode: how long a raise may wait for the listing to show its instances before it is called failed. */
  readonly asgLaunchWaitMs?: number;
  /** Time for the provider's own waits (launch rate, asg launch deadline); the system clock by default. */
  readonly clock?: Clock;
  /**
   * Replaces the SSH part of the readiness check (TCP connect + `instance_ready_command`): the
   * call-count bench and the simulator run the real provider without an sshd per instance.
   */
  readonly sshProbe?: (info: SshConnectInfo, keyDir: string) => Promise<ReadyCheck>;
}

interface Cached {
  status: ProviderInstance['status'];
  host?: string;
  launchToken?: string;
  stateReason?: string;
  /** A listing showed it: from then on, missing from a listing means look it up. */
  listed?: boolean;
  /** When this manager launched it (fleet mode), for eventual consistency. */
  launchedAt?: number;
}

interface LaunchRecord {
  ids: string[];
  tags: Record<string, string>;
  launchedAt: string;
  /** `<template id>:<version>` the launch used (see launchTokenOf). */
  version?: string;
}

/** Longest a launch waits for a launch-rate token before it reports a failure instead. */
const MAX_BUCKET_WAIT_MS = 30_000;
/** Launch records (non-secret, for idempotent retries) older than this are swept at start. */
const LAUNCH_RECORD_TTL_MS = 24 * 3_600_000;
const SPOT_INTERRUPTION = 'Server.SpotInstanceTermination';
/** States the per-tick listing asks for: everything but terminated. */
const LIVE_STATES = ['pending', 'running', 'shutting-down', 'stopping', 'stopped'];
/**
 * A launched instance that no listing has shown yet is looked up by id only after this long:
 * EC2 is eventually consistent, and right after a launch its id may be unknown for a while.
 */
const UNLISTED_LOOKUP_AFTER_MS = 2 * 60_000;
/** Next readiness probe after a closed SSH port: a TCP connect, no AWS call. */
export const PORT_PROBE_INTERVAL_MS = 250;
/** RunInstances calls in flight at once for one launch batch. */
const LAUNCH_CONCURRENCY = 4;

export class AwsProvider implements Provider {
  readonly name = 'aws';
  private readonly cache = new Map<string, Cached>();
  private readonly interrupted = new Set<string>();
  private interruptions = 0;
  private readonly bucket: TokenBucket;
  private readonly runner: RunInstancesLauncher | undefined;
  private readonly steering: AsgSteering | undefined;
  private readonly clock: Clock;
  /**
   * Instances this manager terminated (recent ones). A launch batch answers only when its last
   * call does, and a listing may have started before a termination: neither may bring a
   * terminated instance back to the fleet.
   */
  private readonly terminatedIds = new Set<string>();
  /** asg mode: request tokens already raised for (recent ones). */
  private readonly asgTokens = new Set<string>();
  private readonly instancesDir: string;
  private readonly launchesDir: string;
  private readonly log: Logger;
  /** Launch token → the template version made for it (`lt-…:N`), from launches/<token>/version. */
  private readonly launchVersions = new Map<string, string>();
  /**
   * asg mode: the key window whose version is the template's `$Latest` (the group launches from
   * it, replacements included, until the next window opens), and when earlier windows stopped
   * being `$Latest` (launches/<token>/ended). Provenance measures launch times against these.
   */
  private latestWindow: string | undefined;
  private readonly windowEnds = new Map<string, number>();
  /** Keys already read for an instance: readiness is polled, and each poll would read four files. */
  private readonly keyCache = new Map<string, StoredInstanceKeys>();

  constructor(private readonly o: AwsProviderOptions) {
    this.log = o.log;
    this.clock = o.clock ?? systemClock;
    this.bucket = new TokenBucket(
      o.config.launch_rate,
      o.config.launch_burst,
      () => this.clock.now(),
      (ms) => sleep(this.clock, ms),
    );
    this.instancesDir = join(o.stateDir, 'instances');
    this.launchesDir = join(o.stateDir, 'launches');
    const launcherOptions = {
      config: o.config,
      ec2: o.ec2,
      ...(o.autoscaling ? { autoscaling: o.autoscaling } : {}),
      log: o.log,
      clock: this.clock,
    };
    if (o.config.mode === 'asg') this.steering = new AsgSteering(launcherOptions);
    else this.runner = new RunInstancesLauncher(launcherOptions);
  }

  /** Spot interruptions seen since start (for metrics; the fleet engineer wires the gauge). */
  spotInterruptions(): number {
    return this.interruptions;
  }

  async start(): Promise<void> {
    for (const dir of [this.instancesDir, this.launchesDir])
      await mkdir(dir, { recursive: true, mode: 0o700 });
    await this.sweepLaunchRecords();
    for (const token of await readdir(this.launchesDir).catch(() => [] as string[])) {
      const dir = join(this.launchesDir, token);
      const version =
        (await readFile(join(dir, 'version'), 'utf8').catch(() => undefined)) ??
        (await readJson<LaunchRecord>(join(dir, 'launch.json')))?.version;
      if (version) this.launchVersions.set(token, version);
      const ended = Number(await readFile(join(dir, 'ended'), 'utf8').catch(() => ''));
      if (ended > 0) this.windowEnds.set(token, ended);
    }
    if (this.runner) await this.runner.start();
    if (this.steering) {
      const left = await this.steering.start();
      // The window a previous run left as $Latest: keep it if its keys are still here.
      if (left && /^[A-Za-z0-9-]{1,64}$/.test(left.token)) {
        // Still $Latest, resumed or not: the group launches from it until the next window opens.
        this.latestWindow = left.token;
        this.windowEnds.delete(left.token);
        await rm(join(this.launchDir(left.token), 'ended'), { force: true });
        const fresh = this.clock.now() - left.createdAt < this.o.config.asg_key_window;
        if (fresh && existsSync(join(this.launchDir(left.token), 'client_ed25519')))
          this.steering.resumeWindow(left.token, left.createdAt);
      }
    }
  }

  /** asg mode: instances asked of the group that no listing has shown yet. */
  awaitingLaunch(): number {
    return this.steering?.awaiting() ?? 0;
  }

  // ---------------------------------------------------------------- list

  async list(): Promise<ProviderInstance[]> {
    const result: ProviderInstance[] = [];
    const pages = paginateDescribeInstances(
      { client: this.o.ec2 },
      {
        Filters: [
          { Name: `tag:${TAG.fleet}`, Values: [this.o.fleetName] },
          { Name: `tag:${TAG.manager}`, Values: [this.o.managerId] },
          { Name: 'instance-state-name', Values: LIVE_STATES },
        ],
      },
    );
    for await (const page of pages) {
      for (const reservation of page.Reservations ?? []) {
        for (const instance of reservation.Instances ?? []) {
          const mapped = this.toInstance(instance);
          if (mapped) result.push(mapped);
        }
      }
    }
    result.push(...(await this.lookUpMissing(new Set(result.map((i) => i.id)))));
    const gone: string[] = [];
    for (let i = result.length - 1; i >= 0; i--) {
      const instance = result[i] as ProviderInstance;
      if (this.terminatedIds.has(instance.id) && instance.status !== 'gone') {
        result.splice(i, 1);
        this.cache.delete(instance.id);
      }
    }
    for (const instance of result) {
      if (instance.status !== 'gone') continue;
      gone.push(instance.id);
      await this.onGone(instance);
    }
    if (this.steering) {
      const group = this.steering.groupName;
      const members = result
        .filter((i) => i.status !== 'gone' && i.tags['aws:autoscaling:groupName'] === group)
        .map((i) => i.id);
      this.steering.forget(gone);
      await this.steering.seen(members);
      for (const failure of await this.steering.overdue(this.o.asgLaunchWaitMs ?? 90_000))
        this.log.warn({ code: failure.code, count: failure.count, error: failure.message }, 'launch failed');
    }
    return result;
  }

  /**
   * Instances we track that the listing no longer shows: terminated (or EC2 forgot them). One
   * DescribeInstances by id for all of them tells which, and why (a spot reclaim, say).
   */
  private async lookUpMissing(listed: Set<string>): Promise<ProviderInstance[]> {
    const now = this.clock.now();
    let ids: string[] = [];
    for (const [id, c] of this.cache) {
      if (listed.has(id) || c.status === 'gone') continue;
      if (c.listed || now - (c.launchedAt ?? now) > UNLISTED_LOOKUP_AFTER_MS) ids.push(id);
    }
    const found: ProviderInstance[] = [];
    for (let round = 0; round < 3 && ids.length > 0; round++) {
      try {
        for (let start = 0; start < ids.length; start += 200) {
          const out = await this.o.ec2.send(
            new DescribeInstancesCommand({ InstanceIds: ids.slice(start, start + 200) }),
          );
          for (const r of out.Reservations ?? [])
            for (const i of r.Instances ?? []) {
              const mapped = this.toInstance(i);
              if (mapped) found.push(mapped);
            }
        }
        break;
      } catch (error) {
        if (awsErrorCode(error) !== 'InvalidInstanceID.NotFound') {
          this.log.warn(
            { error: describeAwsError(error).message },
            'could not look up instances missing from the listing',
          );
          return found;
        }
        // "The instance IDs 'i-…, i-…' do not exist": EC2 no longer knows them, so they are gone.
        const unknown = new Set((error as Error).message.match(/i-[0-9a-f]+/g) ?? []);
        for (const id of ids.filter((x) => unknown.has(x))) {
          this.cache.set(id, { status: 'gone' });
          found.push({ id, status: 'gone', tags: {}, launchedAt: new Date(0) });
        }
        const rest = ids.filter((x) => !unknown.has(x));
        if (rest.length === ids.length) return found;
        ids = rest;
      }
    }
    return found;
  }

  private toInstance(i: Ec2Instance): ProviderInstance | undefined {
    if (!i.InstanceId) return undefined;
    const tags: Record<string, string> = {};
    for (const t of i.Tags ?? []) if (t.Key) tags[t.Key] = t.Value ?? '';
    const state = i.State?.Name ?? 'unknown';
    const status: ProviderInstance['status'] =
      state === 'pending' ? 'pending' : state === 'running' ? 'running' : 'gone';
    const host = this.o.config.private_address ? i.PrivateIpAddress : i.PublicIpAddress;
    const stateReason = i.StateReason?.Code;
    this.cache.set(i.InstanceId, {
      status,
      listed: true,
      ...(host ? { host } : {}),
      ...(tags[TAG.launchToken] ? { launchToken: tags[TAG.launchToken] } : {}),
      ...(stateReason ? { stateReason } : {}),
    });
    const detail: Record<string, string> = {
      state,
      instanceType: i.InstanceType ?? '',
      availabilityZone: i.Placement?.AvailabilityZone ?? '',
      market: i.InstanceLifecycle === 'spot' ? 'spot' : 'on-demand',
    };
    if (host) detail.address = host;
    if (stateReason) detail.stateReason = stateReason;
    if (status === 'gone' && i.StateReason?.Message) detail.stateMessage = i.StateReason.Message;
    return {
      id: i.InstanceId,
      status,
      tags,
      launchedAt: i.LaunchTime ?? new Date(),
      detail,
      ...this.launchTokenOf(i.ClientToken, tags),
    };
  }

  /**
   * The launch token EC2 vouches for (provenance, see fleet/adoption.ts). RunInstances (fleet
   * mode) records the caller's ClientToken on the instance, read-only. Auto Scaling records a
   * token of its own, so in asg mode the proof is the launch template version: EC2 tags every
   * instance with the version it was launched from (`aws:` tags nobody else can write), and each
   * key window made its own version, recorded here before anything was launched from it. The
   * launch-token tag only says which record to compare with. A window was opened by a launch of
   * some count; its instances answer for that launch as its first instance (`token-0` unless the
   * count was 1), the form the fleet's token check accepts.
   */
  private launchTokenOf(
    clientToken: string | undefined,
    tags: Tags,
  ): { clientToken?: string; tokenInUseUntil?: Date } {
    const token = tags[TAG.launchToken];
    const version = token ? this.launchVersions.get(token) : undefined;
    if (
      token &&
      version &&
      version === `${tags['aws:ec2launchtemplate:id']}:${tags['aws:ec2launchtemplate:version']}`
    ) {
      // The group launches from a window as long as it is $Latest, replacements hours later too.
      const until = token === this.latestWindow ? this.clock.now() : this.windowEnds.get(token);
      return {
        clientToken: token.split('-')[2] === '1' ? token : `${token}-0`,
        ...(until !== undefined ? { tokenInUseUntil: new Date(until) } : {}),
      };
    }
    return clientToken ? { clientToken } : {};
  }

  async explainGone(id: string): Promise<string | undefined> {
    let instance: Ec2Instance | undefined;
    try {
      const out = await this.o.ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      instance = out.Reservations?.[0]?.Instances?.[0];
    } catch (error) {
      if ((error as { name?: string }).name === 'InvalidInstanceID.NotFound')
        return 'the EC2 instance no longer exists';
      return undefined; // AWS unreachable: say nothing rather than guess.
    }
    if (!instance) return 'the EC2 instance no longer exists';
    const state = instance.State?.Name ?? 'unknown';
    if (state === 'pending' || state === 'running') return undefined;
    const code = instance.StateReason?.Code;
    if (code === SPOT_INTERRUPTION) return `spot interruption: AWS reclaimed the instance (${code})`;
    return `the EC2 instance is ${state}${code ? ` (${code}${instance.StateReason?.Message ? `: ${instance.StateReason.Message}` : ''})` : ''}`;
  }

  private async onGone(instance: ProviderInstance): Promise<void> {
    if (instance.detail?.stateReason === SPOT_INTERRUPTION && !this.interrupted.has(instance.id)) {
      this.interrupted.add(instance.id);
      this.interruptions += 1;
      this.log.warn(
        { instanceId: instance.id, jobId: instance.tags[TAG.jobId] || undefined, cause: SPOT_INTERRUPTION },
        'spot instance interrupted by AWS',
      );
    }
    // Nothing can log in to a terminated instance: its keys go with it. Reported once: dropped
    // from the cache, it is not looked up again.
    this.cache.delete(instance.id);
    this.keyCache.delete(instance.id);
    await deleteInstanceKeys(this.instanceDir(instance.id));
  }

  // ---------------------------------------------------------------- launch

  async launch(request: LaunchRequest): Promise<LaunchResult> {
    if (this.steering) return this.launchInGroup(request);
    const launched: ProviderInstance[] = [];
    const failures: LaunchFailure[] = [];
    // One RunInstances per instance: each instance gets its own SSH key pairs in its own user
    // data. A few calls in flight at once; a failure stops the batch (capacity, quota and rate
    // problems hit the rest alike: report, do not hammer).
    let next = 0;
    let stopped: LaunchFailure | undefined;
    const worker = async () => {
      while (!stopped && next < request.count) {
        const i = next++;
        const token = request.count === 1 ? request.token : `${request.token}-${i}`;
        let outcome: LaunchOutcome;
        try {
          outcome = await this.launchOne(token, request);
        } catch (error) {
          const { code, message } = describeAwsError(error);
          outcome = { launched: [], failures: [{ code, message, count: 1 }] };
        }
        launched.push(...outcome.launched);
        failures.push(...outcome.failures);
        const failed = outcome.failures[0];
        if (failed && outcome.launched.length === 0) {
          this.log.warn({ launchToken: token, code: failed.code }, 'launch failed');
          stopped ??= failed;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LAUNCH_CONCURRENCY, request.count) }, worker));
    const rest = request.count - next;
    if (stopped && rest > 0) failures.push({ code: stopped.code, message: stopped.message, count: rest });
    // The listing may have found the first instances of a long batch, and the fleet may have
    // used and terminated them already.
    return { launched: launched.filter((i) => !this.terminatedIds.has(i.id)), failures };
  }

  /**
   * asg mode: raise the group's desired capacity; the instances show up in later listings (the
   * fleet counts them as launching meanwhile, see awaitingLaunch). A new key window first if the
   * current one is too old or too full.
   */
  private async launchInGroup(request: LaunchRequest): Promise<LaunchResult> {
    const steering = this.steering as AsgSteering;
    // SetDesiredCapacity takes no idempotency token: a repeated request token raises nothing.
    if (this.asgTokens.has(request.token)) return { launched: [], failures: [], requested: 0 };
    this.asgTokens.add(request.token);
    if (this.asgTokens.size > 1000) this.asgTokens.delete(this.asgTokens.values().next().value as string);
    const w = steering.window;
    const expired =
      !w ||
      this.clock.now() - w.createdAt >= this.o.config.asg_key_window ||
      w.instances + request.count > WINDOW_MAX_INSTANCES;
    if (expired) {
      const token = request.token;
      const dir = this.launchDir(token);
      const keys = existsSync(join(dir, 'client_ed25519'))
        ? (await loadInstanceKeys(dir)).keys
        : await this.newLaunchKeys(dir);
      const userData = renderAwsUserData({
        keys,
        sshUser: this.o.config.ssh_user,
        maxLifetimeMs: this.o.maxLifetimeMs,
        installTools: this.o.config.install_tools,
      });
      // The opening launch's tags, but no created-at: a window outlives many launches, and the
      // fleet falls back to EC2's LaunchTime.
      const { [TAG.createdAt]: _created, ...rest } = request.tags;
      const tags: Record<string, string> = {
        ...rest,
        [TAG.fleet]: this.o.fleetName,
        [TAG.manager]: this.o.managerId,
        [TAG.state]: 'booting',
        [TAG.useCount]: '0',
        [TAG.launchToken]: token,
      };
      let window: KeyWindow;
      const previous = this.latestWindow;
      const openedAt = this.clock.now();
      try {
        window = await steering.openWindow(token, userData, tags);
      } catch (error) {
        const { code, message } = describeAwsError(error);
        return { launched: [], failures: [{ code, message, count: request.count }] };
      }
      // Provenance: the window's instances carry this version in EC2's own tags (launchTokenOf).
      const version = `${steering.templateId}:${window.version}`;
      await writeFile(join(dir, 'version'), version, { mode: 0o600 });
      this.launchVersions.set(token, version);
      this.latestWindow = token;
      if (previous && previous !== token) await this.endWindow(previous, openedAt);
      this.log.info({ launchToken: token }, 'new SSH key window (launch template version)');
    }
    if (!(await this.bucket.take(MAX_BUCKET_WAIT_MS))) {
      return { launched: [], failures: [rateLimited(request.count)] };
    }
    const accepted = steering.raise(request.count);
    const failures: LaunchFailure[] = [];
    if (accepted < request.count) {
      failures.push({
        code: 'GroupAtMaxSize',
        message: `Auto Scaling group "${steering.groupName}" is at its MaxSize; raise the group's MaxSize to at least [pool] max_instances`,
        count: request.count - accepted,
      });
    }
    return { launched: [], failures, requested: accepted };
  }

  /**
   * The window stopped being `$Latest` at `at`: its instances were launched before then. A crash
   * before this write leaves the window without an end; provenance then falls back to the
   * launch token's mint time (an hour's grace), as before windows had ends.
   */
  private async endWindow(token: string, at: number): Promise<void> {
    this.windowEnds.set(token, at);
    try {
      await writeFile(join(this.launchDir(token), 'ended'), String(at), { mode: 0o600 });
    } catch (error) {
      this.log.warn(
        { launchToken: token, error: (error as Error).message },
        'could not record the end of a key window',
      );
    }
  }

  private async launchOne(token: string, request: LaunchRequest): Promise<LaunchOutcome> {
    const launchDir = this.launchDir(token);
    // Same token again: answer with what the first call launched, launch nothing.
    const record = await readJson<LaunchRecord>(join(launchDir, 'launch.json'));
    if (record && record.ids.length > 0) {
      return {
        launched: record.ids.map((id) => ({
          id,
          status: this.cache.get(id)?.status ?? 'pending',
          tags: record.tags,
          launchedAt: new Date(record.launchedAt),
        })),
        failures: [],
      };
    }
    // Keys first, persisted, so a retry (or a restart) renders byte-identical user data.
    const keys = existsSync(join(launchDir, 'client_ed25519'))
      ? (await loadInstanceKeys(launchDir)).keys
      : await this.newLaunchKeys(launchDir);
    if (!(await this.bucket.take(MAX_BUCKET_WAIT_MS))) return { launched: [], failures: [rateLimited(1)] };
    const tags: Record<string, string> = { ...request.tags, [TAG.launchToken]: token };
    const userData = renderAwsUserData({
      keys,
      sshUser: this.o.config.ssh_user,
      maxLifetimeMs: this.o.maxLifetimeMs,
      installTools: this.o.config.install_tools,
    });
    const profile = request.instanceProfile ?? (this.o.config.instance_profile || undefined);
    const outcome = await (this.runner as RunInstancesLauncher).launchOne({
      token,
      tags,
      userData,
      ...(profile ? { instanceProfile: profile } : {}),
      ...(request.shape ? { shape: request.shape } : {}),
    });
    for (const instance of outcome.launched) {
      await storeInstanceKeys(this.instanceDir(instance.id), keys);
      // Remembered so a lease wanting this same profile needs no AWS call (the acquire path).
      await writeFile(join(this.instanceDir(instance.id), 'launch-profile'), profile ?? '', { mode: 0o600 });
      const host = instance.detail?.address;
      this.cache.set(instance.id, {
        status: instance.status,
        launchToken: token,
        launchedAt: this.clock.now(),
        ...(host ? { host } : {}),
      });
    }
    if (outcome.launched.length > 0) {
      const rec: LaunchRecord = {
        ids: outcome.launched.map((i) => i.id),
        tags,
        launchedAt: new Date().toISOString(),
      };
      await rm(launchDir, { recursive: true, force: true });
      await mkdir(launchDir, { recursive: true, mode: 0o700 });
      await writeFile(join(launchDir, 'launch.json'), JSON.stringify(rec), { mode: 0o600 });
    }
    return outcome;
  }

  private async newLaunchKeys(dir: string): Promise<InstanceKeys> {
    const keys = generateInstanceKeys(`runner-fleet-${this.o.fleetName}`);
    await storeInstanceKeys(dir, keys);
    return keys;
  }

  // ---------------------------------------------------------------- terminate / tags

  async terminate(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    for (const id of ids) this.terminatedIds.add(id);
    while (this.terminatedIds.size > 10_000)
      this.terminatedIds.delete(this.terminatedIds.values().next().value as string);
    let rest = [...ids];
    if (this.steering) {
      rest = await this.steering.terminate(rest);
      this.steering.forget(ids);
    }
    await this.terminateInstances(rest);
    for (const id of ids) {
      this.cache.delete(id);
      this.keyCache.delete(id);
      await deleteInstanceKeys(this.instanceDir(id));
    }
  }

  /** TerminateInstances in batches; ids EC2 does not know are dropped, not retried forever. */
  private async terminateInstances(ids: string[]): Promise<void> {
    for (let start = 0; start < ids.length; start += 500) {
      let batch = ids.slice(start, start + 500);
      for (let round = 0; round < 3 && batch.length > 0; round++) {
        try {
          await this.o.ec2.send(new TerminateInstancesCommand({ InstanceIds: batch }));
          batch = [];
        } catch (error) {
          const code = awsErrorCode(error);
          if (!code.startsWith('InvalidInstanceID')) throw error;
          // "The instance IDs 'i-…, i-…' do not exist": already gone is what we wanted.
          const unknown = new Set((error as Error).message.match(/i-[0-9a-f]+/g) ?? []);
          const next = batch.filter((id) => !unknown.has(id));
          if (next.length === batch.length) return;
          batch = next;
        }
      }
    }
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    const set = Object.entries(tags).filter(([, v]) => v !== '');
    const clear = Object.entries(tags).filter(([, v]) => v === '');
    if (set.length > 0) {
      await this.o.ec2.send(
        new CreateTagsCommand({ Resources: [id], Tags: set.map(([Key, Value]) => ({ Key, Value })) }),
      );
    }
    if (clear.length > 0) {
      await this.o.ec2.send(
        new DeleteTagsCommand({ Resources: [id], Tags: clear.map(([Key]) => ({ Key })) }),
      );
    }
  }

  // ---------------------------------------------------------------- readiness / connect

  async checkReady(id: string): Promise<ReadyCheck> {
    let cached = this.cache.get(id);
    // The address is known from the launch or the listing: a pending instance is simply not
    // reachable yet, and the listing reports one that died. Only an instance without an address
    // (public addresses come late) costs a DescribeInstances.
    if (!cached?.host && cached?.status !== 'gone') {
      try {
        cached = await this.describeOne(id);
      } catch (error) {
        return { ready: false, reason: describeAwsError(error).message };
      }
    }
    if (!cached) return { ready: false, reason: 'EC2 does not list the instance yet' };
    if (cached.status === 'gone')
      return { ready: false, reason: `the instance is gone (${cached.stateReason ?? 'terminated'})` };
    if (!cached.host) {
      return {
        ready: false,
        reason: cached.status === 'pending' ? 'EC2 state is pending' : 'the instance has no address yet',
      };
    }
    const keys = await this.keysFor(id);
    if (!keys) {
      return {
        ready: false,
        reason:
          'no SSH keys for this instance (it was not launched by this manager, e.g. an Auto Scaling replacement); it will be replaced',
      };
    }
    const info = this.sshInfo(cached.host, keys);
    if (this.o.sshProbe) return this.o.sshProbe(info, keys.dir);
    if (!(await tcpReachable(cached.host, this.o.config.ssh_port, 3_000))) {
      const pending = cached.status === 'pending' ? ' (EC2 state is pending)' : '';
      // A TCP connect costs no AWS call, and sshd listens moments after the kernel is up: probe
      // again soon instead of backing off (the back-off put ~1.8 s on every cold start).
      return {
        ready: false,
        reason: `SSH port ${this.o.config.ssh_port} not reachable yet${pending}`,
        retryInMs: PORT_PROBE_INTERVAL_MS,
      };
    }
    const run = await sshRun(
      info,
      keys.dir,
      this.o.config.instance_ready_command,
      this.o.readyCommandTimeoutMs ?? 30_000,
    );
    if (!run.ok) {
      const last = run.stderr.split('\n').pop() ?? '';
      return {
        ready: false,
        reason: `instance_ready_command failed (exit ${run.code ?? 'killed'})${last ? `: ${last}` : ''}`,
      };
    }
    return { ready: true };
  }

  async connectInfo(id: string): Promise<ConnectInfo> {
    let cached = this.cache.get(id);
    if (!cached?.host) cached = await this.describeOne(id);
    if (!cached?.host) throw new Error(`instance ${id} has no address`);
    const keys = await this.keysFor(id);
    if (!keys) throw new Error(`no SSH keys for instance ${id}`);
    return this.sshInfo(cached.host, keys);
  }

  private sshInfo(host: string, keys: StoredInstanceKeys): SshConnectInfo {
    return {
      kind: 'ssh',
      host,
      port: this.o.config.ssh_port,
      user: this.o.config.ssh_user,
      identityFile: keys.identityFile,
      hostKey: keys.hostKey,
    };
  }

  private async describeOne(id: string): Promise<Cached | undefined> {
    try {
      const out = await this.o.ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
      const instance = out.Reservations?.[0]?.Instances?.[0];
      if (!instance) return undefined;
      this.toInstance(instance);
      return this.cache.get(id);
    } catch (error) {
      // Just launched: EC2 is eventually consistent and may not know the id for a few seconds.
      if (awsErrorCode(error) === 'InvalidInstanceID.NotFound') return undefined;
      throw error;
    }
  }

  /**
   * The instance's keys; after a crash between the launch call and storing them by id, they
   * are still under the launch token, which the instance carries as a tag.
   */
  private async keysFor(id: string): Promise<StoredInstanceKeys | undefined> {
    const cached = this.keyCache.get(id);
    if (cached) return cached;
    const keys = await this.readKeys(id);
    if (keys) this.keyCache.set(id, keys);
    return keys;
  }

  private async readKeys(id: string): Promise<StoredInstanceKeys | undefined> {
    const dir = this.instanceDir(id);
    if (existsSync(join(dir, 'client_ed25519'))) return loadInstanceKeys(dir);
    const token = this.cache.get(id)?.launchToken;
    if (!token || !/^[A-Za-z0-9-]{1,64}$/.test(token)) return undefined;
    const launchDir = this.launchDir(token);
    if (!existsSync(join(launchDir, 'client_ed25519'))) return undefined;
    const { keys } = await loadInstanceKeys(launchDir);
    const stored = await storeInstanceKeys(dir, keys);
    this.log.info({ instanceId: id, launchToken: token }, 'recovered SSH keys of an adopted instance');
    return stored;
  }

  // ---------------------------------------------------------------- leases

  /**
   * Give the instance the job's instance profile. An instance only ever serves one profile: once
   * a job ran with profile A, a job wanting B is refused, and the fleet retires the instance.
   */
  async prepareLease(id: string, lease: LeaseContext): Promise<void> {
    const want = lease.instanceProfile ?? (this.o.config.instance_profile || '');
    const servedFile = join(this.instanceDir(id), 'served-profile');
    const served = await readFile(servedFile, 'utf8').catch(() => undefined);
    if (served !== undefined && served !== want) {
      throw new Error(
        `instance ${id} already served a job with instance profile "${served || '(none)'}" and will not serve one with "${want || '(none)'}"`,
      );
    }
    await this.applyHopLimit(id, lease);
    if (served === undefined) {
      // asg mode: the group's instances boot with the launch template's profile.
      const launchedWith =
        (await readFile(join(this.instanceDir(id), 'launch-profile'), 'utf8').catch(() => undefined)) ??
        this.steering?.templateProfile;
      const same =
        launchedWith === want ||
        (launchedWith !== undefined && want !== '' && sameProfile(launchedWith, want));
      if (launchedWith !== undefined && same) {
        await writeFile(servedFile, want, { mode: 0o600 });
        return;
      }
    }
    const assoc = await this.o.ec2.send(
      new DescribeIamInstanceProfileAssociationsCommand({
        Filters: [
          { Name: 'instance-id', Values: [id] },
          { Name: 'state', Values: ['associating', 'associated'] },
        ],
      }),
    );
    const current = assoc.IamInstanceProfileAssociations?.[0];
    const currentArn = current?.IamInstanceProfile?.Arn;
    if (!want) {
      if (currentArn) {
        throw new Error(
          `instance ${id} has instance profile ${currentArn} but the job gets none; refusing rather than detaching it`,
        );
      }
    } else if (!current) {
      await this.o.ec2.send(
        new AssociateIamInstanceProfileCommand({ InstanceId: id, IamInstanceProfile: profileRef(want) }),
      );
      this.log.info(
        { instanceId: id, jobId: lease.jobId, instanceProfile: want },
        'instance profile associated',
      );
    } else if (!sameProfile(currentArn, want)) {
      await this.o.ec2.send(
        new ReplaceIamInstanceProfileAssociationCommand({
          AssociationId: current.AssociationId,
          IamInstanceProfile: profileRef(want),
        }),
      );
      this.log.info(
        { instanceId: id, jobId: lease.jobId, instanceProfile: want },
        'instance profile replaced',
      );
    }
    await writeFile(servedFile, want, { mode: 0o600 });
  }

  /**
   * The credential class's IMDSv2 hop limit (2 lets containers reach the role, 1 does not).
   * Instances launch with [aws] metadata_hop_limit; only a class that differs costs a call.
   */
  private async applyHopLimit(id: string, lease: LeaseContext): Promise<void> {
    if (lease.hopLimit === undefined || lease.hopLimit === this.o.config.metadata_hop_limit) return;
    await this.o.ec2.send(
      new ModifyInstanceMetadataOptionsCommand({
        InstanceId: id,
        HttpTokens: 'required',
        HttpPutResponseHopLimit: lease.hopLimit,
      }),
    );
    this.log.info({ instanceId: id, jobId: lease.jobId, hopLimit: lease.hopLimit }, 'metadata hop limit set');
  }

  // ---------------------------------------------------------------- helpers

  private instanceDir(id: string): string {
    if (!/^i-[0-9a-f]{8,17}$/.test(id)) throw new Error(`not an EC2 instance id: ${JSON.stringify(id)}`);
    return join(this.instancesDir, id);
  }

  private launchDir(token: string): string {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(token))
      throw new Error('launch token must be at most 64 letters, digits or "-"');
    return join(this.launchesDir, token);
  }

  private async sweepLaunchRecords(): Promise<void> {
    const now = Date.now();
    for (const name of await readdir(this.launchesDir).catch(() => [] as string[])) {
      const dir = join(this.launchesDir, name);
      const info = await stat(dir).catch(() => undefined);
      if (info && now - info.mtimeMs > LAUNCH_RECORD_TTL_MS) {
        await rm(dir, { recursive: true, force: true });
        this.launchVersions.delete(name);
      }
    }
  }
}

function rateLimited(count: number): LaunchFailure {
  return {
    code: 'LaunchRateLimited',
    message:
      'launch_rate token bucket empty; the launch is retried (raise [aws] launch_rate/launch_burst if this persists)',
    count,
  };
}

function profileRef(profile: string): { Arn: string } | { Name: string } {
  return profile.startsWith('arn:') ? { Arn: profile } : { Name: profile };
}

function sameProfile(currentArn: string | undefined, want: string): boolean {
  if (!currentArn) return false;
  return want.startsWith('arn:') ? currentArn === want : currentArn.endsWith(`/${want}`);
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** For tests and ids that need to be unique per process. */
export const newLaunchToken = (): string => randomUUID();
