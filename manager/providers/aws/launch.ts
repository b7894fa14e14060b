/**
 * The two launch modes behind one small interface.
 *
 * Both start the same way: a new version of the launch template, made from the base version,
 * that carries this launch's user data and tags and enforces what the instance must have
 * whatever the template says (IMDSv2 with the configured hop limit, shutdown = terminate,
 * encrypted root volume). CreateFleet and Auto Scaling only take user data and per-launch tags
 * from a template, so a version per launch is the one way to give each instance its own SSH keys
 * and its launch token. The version is deleted as soon as the instance exists.
 *
 * - `fleet`: CreateFleet type `instant` over instance types × subnets with priorities; spot
 *   launches that fail with one of `on_demand_failover_codes` are retried on-demand for the count
 *   still missing.
 * - `asg`: the group (launch template version `$Latest`) gets desired capacity +1, and the new
 *   member is protected from scale-in. Launches are serialized so each new member comes from
 *   this launch's version. Removal is by name with TerminateInstanceInAutoScalingGroup.
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
  CreateFleetCommand,
  type CreateFleetCommandOutput,
  CreateLaunchTemplateVersionCommand,
  DeleteLaunchTemplateVersionsCommand,
  DescribeLaunchTemplateVersionsCommand,
  type EC2Client,
  type FleetLaunchTemplateOverridesRequest,
  type LaunchTemplateBlockDeviceMappingRequest,
  type RequestLaunchTemplateData,
  type ResponseLaunchTemplateData,
} from '@aws-sdk/client-ec2';
import type { Logger } from 'pino';
import type { LaunchFailure, LaunchShape, ProviderInstance } from '../provider.js';
import type { AwsConfig } from './config.js';
import { advice, awsErrorCode, describeAwsError } from './errors.js';

export interface LaunchSpec {
  readonly token: string;
  readonly count: number;
  readonly tags: Readonly<Record<string, string>>;
  readonly userData: string;
  readonly instanceProfile?: string;
  /**
   * Called with the per-launch template version before anything is launched from it: instances
   * launched from it carry it in EC2's own `aws:ec2launchtemplate:*` tags, which the provider
   * takes as proof of provenance when the launch's ClientToken is not theirs (see aws-provider.ts).
   */
  readonly onVersion?: (templateId: string, version: number) => Promise<void>;
  /** A credential rule's launch template, subnets and instance types (fleet mode only). */
  readonly shape?: LaunchShape;
}

export interface LaunchOutcome {
  readonly launched: ProviderInstance[];
  readonly failures: LaunchFailure[];
}

export interface Launcher {
  start(): Promise<void>;
  launch(spec: LaunchSpec): Promise<LaunchOutcome>;
  /** asg mode: removes group members by name; returns the ids that are not members. */
  terminateInGroup(ids: string[]): Promise<string[]>;
}

export interface LauncherOptions {
  readonly config: AwsConfig;
  readonly ec2: EC2Client;
  readonly autoscaling?: AutoScalingClient;
  readonly log: Logger;
  readonly asgLaunchWaitMs: number;
}

export function createLauncher(o: LauncherOptions): Launcher {
  return o.config.mode === 'fleet' ? new FleetLauncher(o) : new AsgLauncher(o);
}

interface BaseTemplate {
  id: string;
  version: number;
  data: ResponseLaunchTemplateData;
}

/** What both modes share: the base template and the per-launch version. */
abstract class TemplateLauncher implements Launcher {
  protected base: BaseTemplate | undefined;
  /** Rules' own launch templates, loaded on first use (their default version). */
  private readonly ruleBases = new Map<string, Promise<BaseTemplate>>();

  constructor(protected readonly o: LauncherOptions) {}

  abstract start(): Promise<void>;
  abstract launch(spec: LaunchSpec): Promise<LaunchOutcome>;
  abstract terminateInGroup(ids: string[]): Promise<string[]>;

  /** The template a launch starts from: its rule's, else the configured one. */
  protected baseFor(spec: LaunchSpec): Promise<BaseTemplate> {
    const ref = spec.shape?.launchTemplate;
    if (!ref) return Promise.resolve(this.requireBase());
    let base = this.ruleBases.get(ref);
    if (!base) {
      base = this.describeBase(ref, '$Default');
      // A failed lookup (typo, permissions) is retried by the next launch, not cached.
      base.catch(() => this.ruleBases.delete(ref));
      this.ruleBases.set(ref, base);
    }
    return base;
  }

  protected async loadBase(ref: string, version: string): Promise<void> {
    this.base = await this.describeBase(ref, version);
  }

  private async describeBase(ref: string, version: string): Promise<BaseTemplate> {
    const out = await this.o.ec2.send(
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
      this.o.log.warn(
        { launchTemplate: ref },
        'the launch template sets InstanceMarketOptions; runner-fleet chooses the market itself ([aws] market), remove it from the template',
      );
    }
    return { id: v.LaunchTemplateId, version: v.VersionNumber, data: v.LaunchTemplateData ?? {} };
  }

  /** The per-launch version; its number, to launch from and to delete afterwards. */
  protected async createVersion(spec: LaunchSpec, base: BaseTemplate): Promise<number> {
    const tags = Object.entries(spec.tags).map(([Key, Value]) => ({ Key, Value }));
    const baseTagSpecs = (base.data.TagSpecifications ?? []).filter(
      (t) => t.ResourceType !== 'instance' && t.ResourceType !== 'volume',
    );
    const data: RequestLaunchTemplateData = {
      UserData: Buffer.from(spec.userData, 'utf8').toString('base64'),
      MetadataOptions: {
        HttpTokens: 'required',
        HttpEndpoint: 'enabled',
        HttpPutResponseHopLimit: this.o.config.metadata_hop_limit,
      },
      InstanceInitiatedShutdownBehavior: 'terminate',
      BlockDeviceMappings: encryptedRoot(base.data, this.o.config.root_device_name),
      TagSpecifications: [
        ...baseTagSpecs.map((t) => ({ ResourceType: t.ResourceType, Tags: t.Tags })),
        { ResourceType: 'instance', Tags: [...instanceTagsOf(base.data), ...tags] },
        // Volumes carry the fleet's tags too, so cost reports and IAM conditions see them.
        { ResourceType: 'volume', Tags: tags.filter((t) => !t.Key.endsWith(':launch-token')) },
      ],
      ...(spec.instanceProfile ? { IamInstanceProfile: profileSpec(spec.instanceProfile) } : {}),
    };
    const out = await this.o.ec2.send(
      new CreateLaunchTemplateVersionCommand({
        LaunchTemplateId: base.id,
        SourceVersion: String(base.version),
        // Idempotent: a retried launch with the same token reuses the same version. A token of
        // its own, so it can never be mistaken for the launch call's.
        ClientToken: `lt-${spec.token}`.slice(0, 64),
        VersionDescription: `runner-fleet launch ${spec.token}`,
        LaunchTemplateData: data,
      }),
    );
    const number = out.LaunchTemplateVersion?.VersionNumber;
    if (number === undefined) throw new Error('CreateLaunchTemplateVersion returned no version number');
    return number;
  }

  protected async deleteVersion(version: number, base: BaseTemplate): Promise<void> {
    try {
      await this.o.ec2.send(
        new DeleteLaunchTemplateVersionsCommand({ LaunchTemplateId: base.id, Versions: [String(version)] }),
      );
    } catch (error) {
      // Harmless leftover: it only holds the host key of an instance we already track.
      this.o.log.warn(
        { version, error: describeAwsError(error).message },
        'could not delete launch template version',
      );
    }
  }

  protected requireBase(): BaseTemplate {
    if (!this.base) throw new Error('the AWS provider was not started');
    return this.base;
  }
}

// ------------------------------------------------------------------ fleet mode

class FleetLauncher extends TemplateLauncher {
  async start(): Promise<void> {
    await this.loadBase(this.o.config.launch_template ?? '', this.o.config.launch_template_version);
  }

  async launch(spec: LaunchSpec): Promise<LaunchOutcome> {
    const base = await this.baseFor(spec);
    const version = await this.createVersion(spec, base);
    try {
      await spec.onVersion?.(base.id, version);
      const market = this.o.config.market;
      const first = await this.createFleet(spec, base, version, market, spec.count, spec.token);
      let launched = first.launched;
      let errors = first.errors;
      const missing = spec.count - launched.length;
      if (
        missing > 0 &&
        market === 'spot' &&
        errors.some((e) => this.o.config.on_demand_failover_codes.includes(e.code))
      ) {
        this.o.log.info(
          { launchToken: spec.token, missing, codes: [...new Set(errors.map((e) => e.code))] },
          'no spot capacity; failing over to on-demand',
        );
        // A token of its own: same parameters but a different market is a different request.
        const second = await this.createFleet(
          spec,
          base,
          version,
          'on-demand',
          missing,
          `${spec.token}-od`.slice(-64),
        );
        launched = [...launched, ...second.launched];
        errors = [...errors, ...second.errors];
      }
      const failures: LaunchFailure[] = [];
      const stillMissing = spec.count - launched.length;
      if (stillMissing > 0) {
        const code = errors[errors.length - 1]?.code ?? 'NoCapacity';
        const detail = [...new Set(errors.map((e) => `${e.code}${e.where ? ` (${e.where})` : ''}`))].join(
          ', ',
        );
        failures.push({
          code,
          message: `CreateFleet launched ${launched.length} of ${spec.count}: ${detail || 'no instances and no error'} (${advice(code)})`,
          count: stillMissing,
        });
      }
      return { launched, failures };
    } finally {
      await this.deleteVersion(version, base);
    }
  }

  private async createFleet(
    spec: LaunchSpec,
    base: BaseTemplate,
    version: number,
    market: 'spot' | 'on-demand',
    count: number,
    token: string,
  ): Promise<{ launched: ProviderInstance[]; errors: { code: string; where?: string }[] }> {
    const prioritized = this.o.config.priorities !== 'none';
    const spotStrategy = this.o.config.spot_allocation_strategy;
    const out: CreateFleetCommandOutput = await this.o.ec2.send(
      new CreateFleetCommand({
        Type: 'instant',
        ClientToken: token,
        LaunchTemplateConfigs: [
          {
            LaunchTemplateSpecification: { LaunchTemplateId: base.id, Version: String(version) },
            Overrides: this.overrides(spec.shape),
          },
        ],
        TargetCapacitySpecification: {
          TotalTargetCapacity: count,
          DefaultTargetCapacityType: market,
          ...(market === 'spot' ? { SpotTargetCapacity: count } : { OnDemandTargetCapacity: count }),
        },
        ...(market === 'spot'
          ? { SpotOptions: { AllocationStrategy: spotStrategy } }
          : { OnDemandOptions: { AllocationStrategy: prioritized ? 'prioritized' : 'lowest-price' } }),
        TagSpecifications: [
          {
            ResourceType: 'instance',
            Tags: Object.entries(spec.tags).map(([Key, Value]) => ({ Key, Value })),
          },
        ],
      }),
    );
    const now = new Date();
    const launched: ProviderInstance[] = [];
    for (const group of out.Instances ?? []) {
      const o = group.LaunchTemplateAndOverrides?.Overrides;
      for (const id of group.InstanceIds ?? []) {
        launched.push({
          id,
          status: 'pending',
          tags: { ...spec.tags },
          launchedAt: now,
          detail: {
            instanceType: group.InstanceType ?? o?.InstanceType ?? '',
            subnet: o?.SubnetId ?? '',
            market: group.Lifecycle === 'spot' ? 'spot' : 'on-demand',
          },
        });
      }
    }
    const errors = (out.Errors ?? []).map((e) => {
      const o = e.LaunchTemplateAndOverrides?.Overrides;
      const where = [o?.InstanceType, o?.SubnetId].filter(Boolean).join(' in ');
      return { code: e.ErrorCode ?? 'UnknownError', ...(where ? { where } : {}) };
    });
    return { launched, errors };
  }

  /** instance types × subnets; Priority 0 is tried first by the prioritized strategies. */
  private overrides(shape: LaunchShape | undefined): FleetLaunchTemplateOverridesRequest[] {
    const { priorities } = this.o.config;
    const types = shape?.instanceTypes ?? this.o.config.instance_types;
    const subnets = shape?.subnets ?? this.o.config.subnets;
    const typeList: readonly (string | undefined)[] = types.length > 0 ? types : [undefined];
    const rows: FleetLaunchTemplateOverridesRequest[] = [];
    typeList.forEach((type, ti) => {
      subnets.forEach((subnet, si) => {
        const priority =
          priorities === 'instance_types'
            ? ti * subnets.length + si
            : priorities === 'subnets'
              ? si * typeList.length + ti
              : undefined;
        rows.push({
          SubnetId: subnet,
          ...(type ? { InstanceType: type as FleetLaunchTemplateOverridesRequest['InstanceType'] } : {}),
          ...(priority !== undefined ? { Priority: priority } : {}),
        });
      });
    });
    return rows;
  }

  async terminateInGroup(ids: string[]): Promise<string[]> {
    return ids;
  }
}

// ------------------------------------------------------------------ asg mode

class AsgLauncher extends TemplateLauncher {
  /** Launches one at a time: the group launches from `$Latest`, which must be this launch's version. */
  private queue: Promise<unknown> = Promise.resolve();

  private get client(): AutoScalingClient {
    if (!this.o.autoscaling) throw new Error('asg mode needs an Auto Scaling client');
    return this.o.autoscaling;
  }

  private get groupName(): string {
    return this.o.config.asg_name ?? '';
  }

  async start(): Promise<void> {
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
          "(each launch adds a short-lived version with that instance's SSH keys). Set the group's launch template version to $Latest.",
      );
    }
    // The per-launch versions derive from the template's default version, never from each other.
    await this.loadBase(ref, '$Default');
    if (!g.NewInstancesProtectedFromScaleIn) {
      this.o.log.info(
        { group: this.groupName },
        'the group does not protect new instances from scale-in; runner-fleet protects each instance it launches',
      );
    }
  }

  launch(spec: LaunchSpec): Promise<LaunchOutcome> {
    const run = this.queue.then(() => this.launchNow(spec));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async launchNow(spec: LaunchSpec): Promise<LaunchOutcome> {
    const before = await this.describeGroup();
    if (!before) throw new Error(`Auto Scaling group "${this.groupName}" not found`);
    // Never below the members still alive: a desired capacity under them would make the next
    // increase launch nothing (protected members are not scaled in to meet it).
    const active = (before.Instances ?? []).filter((i) => !/^Terminat/.test(i.LifecycleState ?? '')).length;
    const desired = Math.max(before.DesiredCapacity ?? 0, active);
    if (desired + spec.count > (before.MaxSize ?? 0)) {
      return {
        launched: [],
        failures: [
          {
            code: 'GroupAtMaxSize',
            message: `Auto Scaling group "${this.groupName}" is at its MaxSize (${before.MaxSize}); raise the group's MaxSize to at least [pool] max_instances`,
            count: spec.count,
          },
        ],
      };
    }
    const known = new Set((before.Instances ?? []).map((i) => i.InstanceId));
    const startedAt = new Date();
    const base = this.requireBase();
    const version = await this.createVersion(spec, base);
    let newIds: string[] = [];
    let failure: LaunchFailure | undefined;
    try {
      await spec.onVersion?.(base.id, version);
      await this.client.send(
        new SetDesiredCapacityCommand({
          AutoScalingGroupName: this.groupName,
          DesiredCapacity: desired + spec.count,
          HonorCooldown: false,
        }),
      );
      const deadline = Date.now() + this.o.asgLaunchWaitMs;
      let delay = 100;
      for (;;) {
        const g = await this.describeGroup();
        newIds = (g?.Instances ?? [])
          .map((i) => i.InstanceId ?? '')
          .filter((id) => id !== '' && !known.has(id));
        if (newIds.length >= spec.count) break;
        const failed = await this.failedActivity(startedAt);
        if (failed || Date.now() >= deadline) {
          const code = failed ? codeIn(failed) : 'AsgLaunchTimeout';
          failure = {
            code,
            message: failed
              ? `Auto Scaling could not launch: ${failed} (${advice(code)})`
              : `Auto Scaling group "${this.groupName}" showed no new instance within ${Math.round(this.o.asgLaunchWaitMs / 1000)} s`,
            count: spec.count - newIds.length,
          };
          break;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 2_000);
      }
      if (failure) {
        // Give the capacity back: the fleet decides when to try again, not the group's retries.
        const g = await this.describeGroup();
        const now = g?.DesiredCapacity ?? desired + spec.count;
        await this.client
          .send(
            new SetDesiredCapacityCommand({
              AutoScalingGroupName: this.groupName,
              DesiredCapacity: Math.max(g?.MinSize ?? 0, now - failure.count),
              HonorCooldown: false,
            }),
          )
          .catch((error) =>
            this.o.log.warn({ error: describeAwsError(error).message }, 'could not lower desired capacity'),
          );
      }
      if (newIds.length > 0) {
        // Only the manager removes instances, by name; the group's own scale-in must not.
        await this.client.send(
          new SetInstanceProtectionCommand({
            AutoScalingGroupName: this.groupName,
            InstanceIds: newIds,
            ProtectedFromScaleIn: true,
          }),
        );
      }
    } finally {
      await this.deleteVersion(version, base);
    }
    const now = new Date();
    return {
      launched: newIds.map((id) => ({
        id,
        status: 'pending' as const,
        tags: { ...spec.tags },
        launchedAt: now,
      })),
      failures: failure ? [failure] : [],
    };
  }

  async terminateInGroup(ids: string[]): Promise<string[]> {
    const g = await this.describeGroup();
    const live = new Set(
      (g?.Instances ?? [])
        .filter((i) => !/^Terminat/.test(i.LifecycleState ?? ''))
        .map((i) => i.InstanceId ?? ''),
    );
    // Already terminating, or never a member: decrementing again would shrink the group below
    // its live members, so these go to TerminateInstances (idempotent) instead.
    const notMembers = ids.filter((id) => !live.has(id));
    // No batch API exists for this call; a few in parallel keeps a large scale-in short.
    const queue = ids.filter((id) => live.has(id));
    const worker = async () => {
      for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
        try {
          await this.client.send(
            new TerminateInstanceInAutoScalingGroupCommand({
              InstanceId: id,
              ShouldDecrementDesiredCapacity: true,
            }),
          );
        } catch (error) {
          if (awsErrorCode(error) !== 'ValidationError') throw error;
          // Not (or no longer) a member, or min size reached: terminate it directly instead.
          notMembers.push(id);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, queue.length) }, worker));
    return notMembers;
  }

  private async describeGroup() {
    const out = await this.client.send(
      new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [this.groupName] }),
    );
    return out.AutoScalingGroups?.[0];
  }

  private async failedActivity(since: Date): Promise<string | undefined> {
    const out = await this.client.send(
      new DescribeScalingActivitiesCommand({ AutoScalingGroupName: this.groupName, MaxRecords: 10 }),
    );
    const failed = (out.Activities ?? []).find(
      (a) => a.StatusCode === 'Failed' && a.StartTime && a.StartTime.getTime() >= since.getTime() - 1000,
    );
    return failed ? (failed.StatusMessage ?? failed.Description ?? 'launch failed') : undefined;
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
