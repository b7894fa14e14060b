/**
 * The two launch modes. Neither makes a launch template version per instance any more: that cost
 * three calls per instance (create version, launch, delete version). See docs/fleet.md, "AWS
 * calls per job", for the design and its security trade-off.
 *
 * - `fleet`: one RunInstances per instance, from the base launch template, with the instance's
 *   own user data (dead-man switch, its own SSH host key and the manager's client key for it) and
 *   tags in the call itself. Instance types × subnets are tried in priority order, the next one
 *   only on a capacity error; a spot launch that fails on one of `on_demand_failover_codes` in
 *   every pool is retried on-demand. A pool that just failed is skipped for a while, so a dry pool
 *   costs one failed call per few minutes, not one per launch.
 * - `asg`: Auto Scaling launches from the group's launch template version `$Latest`, and that
 *   version carries the user data, so instances launched in one **key window** (at most
 *   `asg_key_window` long, at most WINDOW_MAX_INSTANCES instances) share one SSH identity. A new
 *   window adds one version and deletes the previous one. Launching is raising the group's desired
 *   capacity; the new instances are found by the regular listing (their tags come from the
 *   version). Removal is by name (TerminateInstanceInAutoScalingGroup); a removal while a launch
 *   is still waiting to be sent becomes a replacement instead (no decrement, and no raise).
 *
 * Every instance gets, whatever the template says: IMDSv2 with the configured hop limit,
 * shutdown = terminate, an encrypted root volume.
 */
import {
  type AutoScalingClient,
  DescribeAutoScalingGroupsCommand,
  DescribeScalingActivitiesCommand,
  SetDesiredCapacityCommand,
  SetInstanceProtectionCommand,
  TerminateInstanceInAutoScalingGroupCommand,
} from '@aws-sdk/client-auto-scaling';
import {
  type BlockDeviceMapping,
  CreateLaunchTemplateVersionCommand,
  DeleteLaunchTemplateVersionsCommand,
  DescribeLaunchTemplateVersionsCommand,
  type EC2Client,
  type LaunchTemplateBlockDeviceMappingRequest,
  type RequestLaunchTemplateData,
  type ResponseLaunchTemplateData,
  RunInstancesCommand,
  type RunInstancesCommandInput,
} from '@aws-sdk/client-ec2';
import type { Logger } from 'pino';
import type { Clock } from '../../fleet/clock.js';
import type { LaunchFailure, LaunchShape, ProviderInstance } from '../provider.js';
import type { AwsConfig } from './config.js';
import { advice, awsErrorCode, CAPACITY_CODES, describeAwsError } from './errors.js';

export interface LaunchSpec {
  readonly token: string;
  readonly tags: Readonly<Record<string, string>>;
  readonly userData: string;
  readonly instanceProfile?: string;
  /** A credential rule's launch template, subnets and instance types (fleet mode only). */
  readonly shape?: LaunchShape;
}

export interface LaunchOutcome {
  readonly launched: ProviderInstance[];
  readonly failures: LaunchFailure[];
}

export interface LauncherOptions {
  readonly config: AwsConfig;
  readonly ec2: EC2Client;
  readonly autoscaling?: AutoScalingClient;
  readonly log: Logger;
  readonly clock: Clock;
}

/** A pool (type × subnet × market) that failed on capacity is skipped this long. */
const POOL_COOLDOWN_MS = 5 * 60_000;
/** Instances that share one SSH identity in asg mode, at most. */
export const WINDOW_MAX_INSTANCES = 100;
/** asg mode: raises within this long go out as one SetDesiredCapacity (and may meet a removal). */
const RAISE_COALESCE_MS = 1_000;
const WINDOW_DESCRIPTION = 'runner-fleet key window ';

interface BaseTemplate {
  id: string;
  version: number;
  data: ResponseLaunchTemplateData;
}

async function loadBase(o: LauncherOptions, ref: string, version: string): Promise<BaseTemplate> {
  const out = await o.ec2.send(
    new DescribeLaunchTemplateVersionsCommand({
      ...(ref.startsWith('lt-') ? { LaunchTemplateId: ref } : { LaunchTemplateName: ref }),
      Versions: [version],
    }),
  );
  const v = out.LaunchTemplateVersions?.[0];
  if (!v?.LaunchTemplateId || v.VersionNumber === undefined) {
    throw new Error(`launch template ${ref} version ${version} not found (check [aws] launch_template)`);
  }
  if (v.LaunchTemplateData?.InstanceMarketOptions) {
    o.log.warn(
      { launchTemplate: ref },
      'the launch template sets InstanceMarketOptions; runner-fleet chooses the market itself ([aws] market), remove it from the template',
    );
  }
  return { id: v.LaunchTemplateId, version: v.VersionNumber, data: v.LaunchTemplateData ?? {} };
}

function tagList(tags: Readonly<Record<string, string>>): { Key: string; Value: string }[] {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

/** Instance tags (the template's own plus ours) and volume tags (ours, without the launch token). */
function tagSpecifications(base: BaseTemplate, tags: Readonly<Record<string, string>>) {
  const ours = tagList(tags);
  return [
    { ResourceType: 'instance' as const, Tags: [...instanceTagsOf(base.data), ...ours] },
    // Volumes carry the fleet's tags too, so cost reports and IAM conditions see them.
    { ResourceType: 'volume' as const, Tags: ours.filter((t) => !t.Key.endsWith(':launch-token')) },
  ];
}

// ------------------------------------------------------------------ fleet mode

interface Pool {
  readonly type?: string;
  readonly subnet: string;
}

export class RunInstancesLauncher {
  private base: BaseTemplate | undefined;
  private readonly cooldown = new Map<string, number>();
  private next = 0;
  /** Rules' own launch templates, loaded on first use (their default version). */
  private readonly ruleBases = new Map<string, Promise<BaseTemplate>>();

  constructor(private readonly o: LauncherOptions) {}

  async start(): Promise<void> {
    this.base = await loadBase(
      this.o,
      this.o.config.launch_template ?? '',
      this.o.config.launch_template_version,
    );
  }

  /** One instance: the first pool with capacity, spot then (on a failover code) on-demand. */
  async launchOne(spec: LaunchSpec): Promise<LaunchOutcome> {
    const markets: Array<'spot' | 'on-demand'> =
      this.o.config.market === 'spot' ? ['spot', 'on-demand'] : ['on-demand'];
    const errors: { code: string; where: string; message: string }[] = [];
    let attempt = 0;
    for (const market of markets) {
      if (market === 'on-demand' && markets.length > 1) {
        const failover =
          errors.length > 0 && errors.every((e) => this.o.config.on_demand_failover_codes.includes(e.code));
        if (!failover) break;
        this.o.log.info(
          { launchToken: spec.token, codes: [...new Set(errors.map((e) => e.code))] },
          'no spot capacity; failing over to on-demand',
        );
      }
      for (const pool of this.poolsFor(market, spec.shape)) {
        // A token per attempt: a retried launch replays the same attempts with the same tokens,
        // and EC2 answers the one that launched with its instance instead of launching again.
        // The `-f<n>` form is one the fleet's provenance check accepts (fleet/provenance.ts), so an
        // instance a failover launched is still ours after a crash before the journal heard of it.
        const token = attempt === 0 ? spec.token : `${spec.token}-f${attempt}`;
        attempt++;
        try {
          const instance = await this.run(spec, pool, market, token);
          this.cooldown.delete(poolKey(pool, market));
          return { launched: [instance], failures: [] };
        } catch (error) {
          const code = awsErrorCode(error);
          const where = [pool.type, pool.subnet].filter(Boolean).join(' in ');
          errors.push({ code, where, message: describeAwsError(error).message });
          if (!CAPACITY_CODES.has(code)) {
            return { launched: [], failures: [{ code, message: describeAwsError(error).message, count: 1 }] };
          }
          this.cooldown.set(poolKey(pool, market), this.o.clock.now() + POOL_COOLDOWN_MS);
        }
      }
    }
    const code = errors[errors.length - 1]?.code ?? 'NoCapacity';
    const detail = [...new Set(errors.map((e) => `${e.code} (${e.where})`))].join(', ');
    return {
      launched: [],
      failures: [{ code, message: `RunInstances found no capacity: ${detail} (${advice(code)})`, count: 1 }],
    };
  }

  /** Pools in priority order, those cooling down after a capacity error last. */
  private poolsFor(market: 'spot' | 'on-demand', shape?: LaunchShape): Pool[] {
    const priorities = this.o.config.priorities;
    const types = shape?.instanceTypes ?? this.o.config.instance_types;
    const subnets = shape?.subnets ?? this.o.config.subnets;
    const typeList: readonly (string | undefined)[] = types.length > 0 ? types : [undefined];
    let pools: Pool[] = [];
    if (priorities === 'subnets') {
      for (const subnet of subnets)
        for (const type of typeList) pools.push({ subnet, ...(type ? { type } : {}) });
    } else {
      for (const type of typeList)
        for (const subnet of subnets) pools.push({ subnet, ...(type ? { type } : {}) });
    }
    if (priorities === 'none' && pools.length > 0) {
      // No preference: start each launch at the next pool, which spreads instances over zones.
      const start = this.next++ % pools.length;
      pools = [...pools.slice(start), ...pools.slice(0, start)];
    }
    const now = this.o.clock.now();
    const cool = (p: Pool) => (this.cooldown.get(poolKey(p, market)) ?? 0) > now;
    return [...pools.filter((p) => !cool(p)), ...pools.filter(cool)];
  }

  /** The template a launch starts from: its rule's, else the configured one. */
  private baseFor(spec: LaunchSpec): Promise<BaseTemplate> {
    const ref = spec.shape?.launchTemplate;
    if (!ref) return Promise.resolve(this.requireBase());
    let base = this.ruleBases.get(ref);
    if (!base) {
      base = loadBase(this.o, ref, '$Default');
      // A failed lookup (typo, permissions) is retried by the next launch, not cached.
      base.catch(() => this.ruleBases.delete(ref));
      this.ruleBases.set(ref, base);
    }
    return base;
  }

  private async run(spec: LaunchSpec, pool: Pool, market: 'spot' | 'on-demand', token: string) {
    const base = await this.baseFor(spec);
    const input: RunInstancesCommandInput = {
      LaunchTemplate: { LaunchTemplateId: base.id, Version: String(base.version) },
      MinCount: 1,
      MaxCount: 1,
      ClientToken: token,
      SubnetId: pool.subnet,
      ...(pool.type ? { InstanceType: pool.type as RunInstancesCommandInput['InstanceType'] } : {}),
      UserData: Buffer.from(spec.userData, 'utf8').toString('base64'),
      MetadataOptions: {
        HttpTokens: 'required',
        HttpEndpoint: 'enabled',
        HttpPutResponseHopLimit: this.o.config.metadata_hop_limit,
      },
      InstanceInitiatedShutdownBehavior: 'terminate',
      BlockDeviceMappings: encryptedRoot(base.data, this.o.config.root_device_name) as BlockDeviceMapping[],
      TagSpecifications: tagSpecifications(base, spec.tags),
      ...(spec.instanceProfile ? { IamInstanceProfile: profileSpec(spec.instanceProfile) } : {}),
      ...(market === 'spot'
        ? {
            InstanceMarketOptions: {
              MarketType: 'spot',
              SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' },
            },
          }
        : {}),
    };
    const out = await this.o.ec2.send(new RunInstancesCommand(input));
    const i = out.Instances?.[0];
    if (!i?.InstanceId) throw new Error('RunInstances returned no instance');
    const address = this.o.config.private_address ? i.PrivateIpAddress : i.PublicIpAddress;
    return {
      id: i.InstanceId,
      status: 'pending' as const,
      tags: { ...spec.tags },
      launchedAt: i.LaunchTime ?? new Date(this.o.clock.now()),
      detail: {
        instanceType: i.InstanceType ?? pool.type ?? '',
        subnet: i.SubnetId ?? pool.subnet,
        market: i.InstanceLifecycle === 'spot' ? 'spot' : 'on-demand',
        ...(address ? { address } : {}),
      },
    };
  }

  private requireBase(): BaseTemplate {
    if (!this.base) throw new Error('the AWS provider was not started');
    return this.base;
  }
}

function poolKey(pool: Pool, market: string): string {
  return `${pool.type ?? ''}|${pool.subnet}|${market}`;
}

// ------------------------------------------------------------------ asg mode

/** The SSH identity and tags that instances launched now get (one launch template version). */
export interface KeyWindow {
  readonly token: string;
  readonly version: number;
  readonly createdAt: number;
  instances: number;
}

interface Raise {
  count: number;
  /** When SetDesiredCapacity asked for them; undefined while the raise waits to be sent. */
  sentAt?: number;
  /** Instances of this raise the listing has shown so far. */
  seen: number;
}

export class AsgSteering {
  private base: BaseTemplate | undefined;
  private current: KeyWindow | undefined;
  /** A version of ours (this run's previous window, or one left by an earlier run) to delete. */
  private stale: number[] = [];
  private desired = 0;
  private minSize = 0;
  private maxSize = 0;
  private protectsNew = true;
  private readonly raises: Raise[] = [];
  private unsent = 0;
  private raiseTimer: unknown;
  private queue: Promise<unknown> = Promise.resolve();
  /** Instances already attributed to a raise, so that each counts once. */
  private readonly attributed = new Set<string>();

  constructor(private readonly o: LauncherOptions) {}

  private get client(): AutoScalingClient {
    if (!this.o.autoscaling) throw new Error('asg mode needs an Auto Scaling client');
    return this.o.autoscaling;
  }

  get groupName(): string {
    return this.o.config.asg_name ?? '';
  }

  /** Checks the group, learns its sizes, and finds a key window a previous run left as `$Latest`. */
  async start(): Promise<{ token: string; createdAt: number } | undefined> {
    const g = await this.describeGroup();
    if (!g) {
      throw new Error(
        `Auto Scaling group "${this.groupName}" not found in ${this.o.config.region} (check [aws] asg_name and region)`,
      );
    }
    const suspended = (g.SuspendedProcesses ?? []).map((p) => p.ProcessName);
    if (!suspended.includes('AZRebalance')) {
      throw new Error(
        `Auto Scaling group "${this.groupName}" has AZRebalance active: it would terminate instances (and their running jobs) to rebalance zones. ` +
          `Suspend it: aws autoscaling suspend-processes --auto-scaling-group-name ${this.groupName} --scaling-processes AZRebalance`,
      );
    }
    const spec = g.MixedInstancesPolicy?.LaunchTemplate?.LaunchTemplateSpecification ?? g.LaunchTemplate;
    const ref = spec?.LaunchTemplateId ?? spec?.LaunchTemplateName;
    if (!ref) throw new Error(`Auto Scaling group "${this.groupName}" has no launch template`);
    if (spec?.Version !== '$Latest') {
      throw new Error(
        `Auto Scaling group "${this.groupName}" uses launch template version "${spec?.Version ?? '$Default'}"; runner-fleet needs "$Latest" ` +
          "(each key window adds a version with the SSH keys its instances boot with). Set the group's launch template version to $Latest.",
      );
    }
    // Window versions derive from the template's default version, never from each other.
    this.base = await loadBase(this.o, ref, '$Default');
    const live = (g.Instances ?? []).filter((i) => !/^Terminat/.test(i.LifecycleState ?? '')).length;
    this.desired = Math.max(g.DesiredCapacity ?? 0, live);
    this.minSize = g.MinSize ?? 0;
    this.maxSize = g.MaxSize ?? 0;
    this.protectsNew = g.NewInstancesProtectedFromScaleIn === true;
    if (!this.protectsNew) {
      this.o.log.warn(
        { group: this.groupName },
        'the group does not protect new instances from scale-in; runner-fleet protects each instance it finds (one call per listing that finds new ones). ' +
          `Cheaper: aws autoscaling update-auto-scaling-group --auto-scaling-group-name ${this.groupName} --new-instances-protected-from-scale-in`,
      );
    }
    const latest = await this.o.ec2.send(
      new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateId: this.base.id, Versions: ['$Latest'] }),
    );
    const v = latest.LaunchTemplateVersions?.[0];
    const description = v?.VersionDescription ?? '';
    if (v?.VersionNumber !== undefined && description.startsWith(WINDOW_DESCRIPTION)) {
      this.stale.push(v.VersionNumber);
      return {
        token: description.slice(WINDOW_DESCRIPTION.length),
        createdAt: v.CreateTime?.getTime() ?? 0,
      };
    }
    return undefined;
  }

  /** The launch template (`lt-…`) the group launches from. */
  get templateId(): string {
    return this.requireBase().id;
  }

  /** The instance profile (ARN or name) the group's instances boot with; '' for none. */
  get templateProfile(): string {
    const p = this.base?.data.IamInstanceProfile;
    return p?.Arn ?? p?.Name ?? '';
  }

  get window(): KeyWindow | undefined {
    return this.current;
  }

  /** Keep a window left by the previous run (the provider still has its keys). */
  resumeWindow(token: string, createdAt: number): void {
    const version = this.stale.pop();
    if (version === undefined) return;
    this.current = { token, version, createdAt, instances: 0 };
  }

  /** A new window: one launch template version (it becomes `$Latest`), the previous one deleted. */
  async openWindow(
    token: string,
    userData: string,
    tags: Readonly<Record<string, string>>,
  ): Promise<KeyWindow> {
    const base = this.requireBase();
    const data: RequestLaunchTemplateData = {
      UserData: Buffer.from(userData, 'utf8').toString('base64'),
      MetadataOptions: {
        HttpTokens: 'required',
        HttpEndpoint: 'enabled',
        HttpPutResponseHopLimit: this.o.config.metadata_hop_limit,
      },
      InstanceInitiatedShutdownBehavior: 'terminate',
      BlockDeviceMappings: encryptedRoot(base.data, this.o.config.root_device_name),
      TagSpecifications: [
        ...(base.data.TagSpecifications ?? [])
          .filter((t) => t.ResourceType !== 'instance' && t.ResourceType !== 'volume')
          .map((t) => ({ ResourceType: t.ResourceType, Tags: t.Tags })),
        ...tagSpecifications(base, tags),
      ],
    };
    const out = await this.o.ec2.send(
      new CreateLaunchTemplateVersionCommand({
        LaunchTemplateId: base.id,
        SourceVersion: String(base.version),
        // Idempotent: a retried call with the same window token makes no second version.
        ClientToken: `lt-${token}`.slice(0, 64),
        VersionDescription: `${WINDOW_DESCRIPTION}${token}`,
        LaunchTemplateData: data,
      }),
    );
    const version = out.LaunchTemplateVersion?.VersionNumber;
    if (version === undefined) throw new Error('CreateLaunchTemplateVersion returned no version number');
    if (this.current) this.stale.push(this.current.version);
    this.current = { token, version, createdAt: this.o.clock.now(), instances: 0 };
    await this.deleteStale();
    return this.current;
  }

  /**
   * Ask the group for `count` more instances. Raises within RAISE_COALESCE_MS go out as one call;
   * a removal in that time turns one of them into a replacement. Returns how many were accepted
   * (the group's MaxSize bounds it).
   */
  raise(count: number): number {
    const room = Math.max(0, this.maxSize - this.desired - this.unsent);
    const accepted = Math.min(count, room);
    if (accepted === 0) return 0;
    this.unsent += accepted;
    this.raises.push({ count: accepted, seen: 0 });
    if (this.current) this.current.instances += accepted;
    if (this.raiseTimer === undefined) {
      this.raiseTimer = this.o.clock.setTimeout(() => {
        this.raiseTimer = undefined;
        void this.serial(() => this.sendRaise());
      }, RAISE_COALESCE_MS);
    }
    return accepted;
  }

  /** Instances asked for that no listing has shown yet (the fleet counts them as launching). */
  awaiting(): number {
    let n = 0;
    for (const r of this.raises) n += r.count - r.seen;
    return n;
  }

  /**
   * The listing showed these group instances: attribute the new ones to raises, oldest first, and
   * protect them from scale-in if the group does not. Returns the ids that answered a raise.
   */
  async seen(ids: readonly string[]): Promise<void> {
    const fresh = ids.filter((id) => !this.attributed.has(id));
    if (fresh.length === 0) return;
    for (const id of fresh) this.attributed.add(id);
    let left = fresh.length;
    for (const r of this.raises) {
      const take = Math.min(left, r.count - r.seen);
      r.seen += take;
      left -= take;
    }
    this.dropDone();
    if (!this.protectsNew) {
      for (let i = 0; i < fresh.length; i += 50) {
        await this.client.send(
          new SetInstanceProtectionCommand({
            AutoScalingGroupName: this.groupName,
            InstanceIds: fresh.slice(i, i + 50),
            ProtectedFromScaleIn: true,
          }),
        );
      }
    }
  }

  /** Forget instances that are gone, so the set of attributed ids stays small. */
  forget(ids: readonly string[]): void {
    for (const id of ids) this.attributed.delete(id);
  }

  /**
   * Raises the listing has not answered within `waitMs`: ask the group why (one call), give the
   * capacity back, and report them as failures.
   */
  async overdue(waitMs: number): Promise<LaunchFailure[]> {
    const now = this.o.clock.now();
    const late = this.raises.filter(
      (r) => r.sentAt !== undefined && now - r.sentAt > waitMs && r.seen < r.count,
    );
    if (late.length === 0) return [];
    const since = Math.min(...late.map((r) => r.sentAt ?? now));
    const failed = await this.failedActivity(since).catch(() => undefined);
    const missing = late.reduce((n, r) => n + r.count - r.seen, 0);
    for (const r of late) r.count = r.seen;
    this.dropDone();
    await this.serial(async () => {
      const target = Math.max(this.minSize, this.desired - missing);
      await this.client.send(
        new SetDesiredCapacityCommand({
          AutoScalingGroupName: this.groupName,
          DesiredCapacity: target,
          HonorCooldown: false,
        }),
      );
      this.desired = target;
    }).catch((error) =>
      this.o.log.warn({ error: describeAwsError(error).message }, 'could not lower desired capacity'),
    );
    const code = failed ? codeIn(failed) : 'AsgLaunchTimeout';
    return [
      {
        code,
        message: failed
          ? `Auto Scaling could not launch: ${failed} (${advice(code)})`
          : `Auto Scaling group "${this.groupName}" showed no new instance within ${Math.round(waitMs / 1000)} s`,
        count: missing,
      },
    ];
  }

  /** Remove group members by name; returns the ids that are not (or no longer) members. */
  async terminate(ids: readonly string[]): Promise<string[]> {
    const notMembers: string[] = [];
    // No batch API exists for this call; serialized with the raises because both move desired.
    await this.serial(async () => {
      for (const id of ids) {
        // A launch is waiting to be sent: let the group replace this instance instead.
        const replace = this.unsent > 0;
        if (replace) this.unsent--;
        try {
          await this.client.send(
            new TerminateInstanceInAutoScalingGroupCommand({
              InstanceId: id,
              ShouldDecrementDesiredCapacity: !replace,
            }),
          );
          if (!replace) this.desired--;
        } catch (error) {
          if (replace) this.unsent++;
          if (awsErrorCode(error) !== 'ValidationError') throw error;
          // Not (or no longer) a member, or min size reached: terminate it directly instead.
          notMembers.push(id);
        }
      }
    });
    return notMembers;
  }

  /** Send what is waiting now (shutdown). */
  async flush(): Promise<void> {
    this.o.clock.clearTimeout(this.raiseTimer);
    this.raiseTimer = undefined;
    await this.serial(() => this.sendRaise());
  }

  private async sendRaise(): Promise<void> {
    // Removals may have turned every waiting raise into a replacement already.
    if (this.unsent === 0) return this.markSent();
    const count = this.unsent;
    const target = this.desired + count;
    try {
      await this.client.send(
        new SetDesiredCapacityCommand({
          AutoScalingGroupName: this.groupName,
          DesiredCapacity: target,
          HonorCooldown: false,
        }),
      );
    } catch (error) {
      // Give the raises back; the fleet launches again on its next decision.
      this.unsent = 0;
      this.cancelUnsent(count);
      this.o.log.warn({ count, error: describeAwsError(error).message }, 'could not raise desired capacity');
      if (awsErrorCode(error) === 'ValidationError') await this.resync().catch(() => undefined);
      return;
    }
    this.unsent -= count;
    this.desired = target;
    this.markSent();
  }

  /** Every raise waiting to be sent is on its way now (sent, or turned into a replacement). */
  private markSent(): void {
    const now = this.o.clock.now();
    for (const r of this.raises) r.sentAt ??= now;
  }

  private cancelUnsent(count: number): void {
    let left = count;
    for (let i = this.raises.length - 1; i >= 0 && left > 0; i--) {
      const r = this.raises[i] as Raise;
      if (r.sentAt !== undefined) continue;
      const take = Math.min(left, r.count - r.seen);
      r.count -= take;
      left -= take;
    }
    this.dropDone();
  }

  private dropDone(): void {
    for (let i = this.raises.length - 1; i >= 0; i--) {
      const r = this.raises[i] as Raise;
      if (r.seen >= r.count) this.raises.splice(i, 1);
    }
  }

  private async resync(): Promise<void> {
    const g = await this.describeGroup();
    if (!g) return;
    this.desired = g.DesiredCapacity ?? this.desired;
    this.minSize = g.MinSize ?? this.minSize;
    this.maxSize = g.MaxSize ?? this.maxSize;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async deleteStale(): Promise<void> {
    if (this.stale.length === 0) return;
    const base = this.requireBase();
    const versions = this.stale.splice(0);
    try {
      await this.o.ec2.send(
        new DeleteLaunchTemplateVersionsCommand({
          LaunchTemplateId: base.id,
          Versions: versions.map(String),
        }),
      );
    } catch (error) {
      // Harmless leftover: it only holds the shared host key of instances we already track.
      this.o.log.warn(
        { versions, error: describeAwsError(error).message },
        'could not delete launch template versions',
      );
    }
  }

  private async describeGroup() {
    const out = await this.client.send(
      new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [this.groupName] }),
    );
    return out.AutoScalingGroups?.[0];
  }

  private async failedActivity(since: number): Promise<string | undefined> {
    const out = await this.client.send(
      new DescribeScalingActivitiesCommand({ AutoScalingGroupName: this.groupName, MaxRecords: 10 }),
    );
    const failed = (out.Activities ?? []).find(
      (a) => a.StatusCode === 'Failed' && a.StartTime && a.StartTime.getTime() >= since - 1000,
    );
    return failed ? (failed.StatusMessage ?? failed.Description ?? 'launch failed') : undefined;
  }

  private requireBase(): BaseTemplate {
    if (!this.base) throw new Error('the AWS provider was not started');
    return this.base;
  }
}

function codeIn(message: string): string {
  const match =
    /\b(InsufficientInstanceCapacity|InsufficientCapacity|VcpuLimitExceeded|InstanceLimitExceeded|MaxSpotInstanceCountExceeded|SpotMaxPriceTooLow|UnfulfillableCapacity|UnauthorizedOperation|InvalidParameterValue)\b/.exec(
      message,
    );
  return match?.[1] ?? 'AsgLaunchFailed';
}

function profileSpec(profile: string): { Arn: string } | { Name: string } {
  return profile.startsWith('arn:') ? { Arn: profile } : { Name: profile };
}

function instanceTagsOf(data: ResponseLaunchTemplateData): { Key: string; Value: string }[] {
  return (data.TagSpecifications ?? [])
    .filter((t) => t.ResourceType === 'instance')
    .flatMap((t) => t.Tags ?? [])
    .filter((t): t is { Key: string; Value: string } => !!t.Key && !t.Key.startsWith('runner-fleet:'))
    .map((t) => ({ Key: t.Key, Value: t.Value ?? '' }));
}

/**
 * The template's block devices with the root device forced to an encrypted EBS volume deleted on
 * termination (added if the template does not mention it; size and type then come from the AMI).
 */
function encryptedRoot(
  data: ResponseLaunchTemplateData,
  rootDevice: string,
): LaunchTemplateBlockDeviceMappingRequest[] {
  const mappings: LaunchTemplateBlockDeviceMappingRequest[] = (data.BlockDeviceMappings ?? []).map((b) => ({
    ...(b.DeviceName ? { DeviceName: b.DeviceName } : {}),
    ...(b.VirtualName ? { VirtualName: b.VirtualName } : {}),
    ...(b.NoDevice !== undefined ? { NoDevice: b.NoDevice } : {}),
    ...(b.Ebs
      ? {
          Ebs: {
            ...(b.Ebs.VolumeSize !== undefined ? { VolumeSize: b.Ebs.VolumeSize } : {}),
            ...(b.Ebs.VolumeType ? { VolumeType: b.Ebs.VolumeType } : {}),
            ...(b.Ebs.Iops !== undefined ? { Iops: b.Ebs.Iops } : {}),
            ...(b.Ebs.Throughput !== undefined ? { Throughput: b.Ebs.Throughput } : {}),
            ...(b.Ebs.KmsKeyId ? { KmsKeyId: b.Ebs.KmsKeyId } : {}),
            ...(b.Ebs.SnapshotId ? { SnapshotId: b.Ebs.SnapshotId } : {}),
            ...(b.Ebs.Encrypted !== undefined ? { Encrypted: b.Ebs.Encrypted } : {}),
            ...(b.Ebs.DeleteOnTermination !== undefined
              ? { DeleteOnTermination: b.Ebs.DeleteOnTermination }
              : {}),
          },
        }
      : {}),
  }));
  const root = mappings.find((m) => m.DeviceName === rootDevice);
  if (root) root.Ebs = { ...root.Ebs, Encrypted: true, DeleteOnTermination: true };
  else mappings.push({ DeviceName: rootDevice, Ebs: { Encrypted: true, DeleteOnTermination: true } });
  return mappings;
}
