// The fake's state: instances, launch templates, Auto Scaling groups, IAM associations, SSM
// parameters, and the fault knobs. Protocol modules (ec2.ts, autoscaling.ts, …) translate wire
// requests into calls on this; fake.ts wraps it in an HTTP server and a small public API.

import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { type ClockMode, Scheduler } from './clock.js';
import { AwsError } from './errors.js';

export type InstanceStateName =
  | 'pending'
  | 'running'
  | 'shutting-down'
  | 'terminated'
  | 'stopping'
  | 'stopped';
export type Market = 'spot' | 'on-demand';

export const STATE_CODES: Record<InstanceStateName, number> = {
  pending: 0,
  running: 16,
  'shutting-down': 32,
  terminated: 48,
  stopping: 64,
  stopped: 80,
};

export interface Tag {
  Key: string;
  Value: string;
}

export interface BlockDeviceMapping {
  DeviceName?: string;
  Ebs?: {
    VolumeSize?: number;
    VolumeType?: string;
    Encrypted?: boolean;
    DeleteOnTermination?: boolean;
    KmsKeyId?: string;
    Iops?: number;
    Throughput?: number;
    SnapshotId?: string;
  };
}

export interface MetadataOptions {
  HttpTokens?: string;
  HttpPutResponseHopLimit?: number;
  HttpEndpoint?: string;
  InstanceMetadataTags?: string;
}

/** The part of EC2's launch template data the fake understands (SDK casing, so seeds read like the SDK). */
export interface LaunchTemplateData {
  ImageId?: string;
  InstanceType?: string;
  KeyName?: string;
  UserData?: string;
  IamInstanceProfile?: { Arn?: string; Name?: string };
  MetadataOptions?: MetadataOptions;
  InstanceInitiatedShutdownBehavior?: string;
  BlockDeviceMappings?: BlockDeviceMapping[];
  TagSpecifications?: { ResourceType?: string; Tags?: Tag[] }[];
  SecurityGroupIds?: string[];
  InstanceMarketOptions?: {
    MarketType?: string;
    SpotOptions?: { MaxPrice?: string; SpotInstanceType?: string; InstanceInterruptionBehavior?: string };
  };
}

export interface LaunchTemplate {
  LaunchTemplateId: string;
  LaunchTemplateName: string;
  DefaultVersionNumber: number;
  versions: {
    VersionNumber: number;
    VersionDescription?: string;
    CreateTime: Date;
    data: LaunchTemplateData;
  }[];
}

export interface Subnet {
  subnetId: string;
  availabilityZone: string;
  /** First three octets of the /24 the fake hands private IPs out of, e.g. `127.0.1`. */
  cidrBase: string;
  vpcId?: string;
}

export interface IamProfileRef {
  Arn: string;
  Id: string;
  Name: string;
}

export interface FakeInstance {
  InstanceId: string;
  ReservationId: string;
  ImageId: string;
  InstanceType: string;
  SubnetId: string;
  VpcId: string;
  AvailabilityZone: string;
  PrivateIpAddress: string;
  State: InstanceStateName;
  StateReason?: { Code: string; Message: string };
  StateTransitionReason: string;
  LaunchTime: Date;
  Tags: Tag[];
  ClientToken?: string;
  IamInstanceProfile?: IamProfileRef;
  MetadataOptions: Required<MetadataOptions>;
  InstanceInitiatedShutdownBehavior: string;
  BlockDeviceMappings: BlockDeviceMapping[];
  KeyName?: string;
  SecurityGroupIds: string[];
  InstanceLifecycle?: 'spot';
  SpotInstanceRequestId?: string;
  LaunchTemplate?: { LaunchTemplateId: string; LaunchTemplateName: string; Version: string };
  AmiLaunchIndex: number;
  /** SSH port of the backing sshd, once onRunning resolved. */
  backingPort?: number;
  /** Monotonic launch order; DescribeInstances pages walk it so pages stay stable under launches. */
  seq: number;
  /** Virtual/real time before which Describe* cannot see the instance (EC2 eventual consistency). */
  visibleAt: number;
  /** Time the instance reached `running`; DescribeInstanceStatus reports `initializing` before it. */
  runningSince?: number;
}

export interface IamAssociation {
  AssociationId: string;
  InstanceId: string;
  IamInstanceProfile: IamProfileRef;
  State: 'associating' | 'associated' | 'disassociating' | 'disassociated';
  Timestamp: Date;
}

export interface AsgTag {
  Key: string;
  Value: string;
  PropagateAtLaunch: boolean;
}

export interface AsgInstance {
  InstanceId: string;
  ProtectedFromScaleIn: boolean;
}

export interface MixedInstancesPolicy {
  LaunchTemplate: {
    LaunchTemplateSpecification: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string };
    Overrides?: { InstanceType: string; WeightedCapacity?: string }[];
  };
  InstancesDistribution?: {
    OnDemandAllocationStrategy?: string;
    OnDemandBaseCapacity?: number;
    OnDemandPercentageAboveBaseCapacity?: number;
    SpotAllocationStrategy?: string;
  };
}

export interface AutoScalingGroup {
  AutoScalingGroupName: string;
  AutoScalingGroupARN: string;
  MinSize: number;
  MaxSize: number;
  DesiredCapacity: number;
  DefaultCooldown: number;
  HealthCheckType: string;
  HealthCheckGracePeriod: number;
  CreatedTime: Date;
  LaunchTemplate?: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string };
  MixedInstancesPolicy?: MixedInstancesPolicy;
  /** Subnet ids, as in `VPCZoneIdentifier` (comma separated on the wire). */
  subnetIds: string[];
  Tags: AsgTag[];
  NewInstancesProtectedFromScaleIn: boolean;
  SuspendedProcesses: string[];
  TerminationPolicies: string[];
  instances: AsgInstance[];
  activities: AsgActivity[];
  /** True while a retry of a failed launch is scheduled, so only one is ever pending. */
  retryScheduled: boolean;
  /** True while a launch towards desired capacity is scheduled. */
  launchScheduled?: boolean;
}

export interface AsgActivity {
  ActivityId: string;
  AutoScalingGroupName: string;
  Description: string;
  Cause: string;
  StartTime: Date;
  EndTime?: Date;
  StatusCode: 'InProgress' | 'Successful' | 'Failed';
  StatusMessage?: string;
  Progress: number;
  Details: string;
}

export interface SsmParameter {
  Name: string;
  Type: 'String' | 'StringList' | 'SecureString';
  Value: string;
  Version: number;
  LastModifiedDate: Date;
  KeyId?: string;
  Description?: string;
}

/** One instance's share of an SSM Run Command (SendCommand), as GetCommandInvocation reports it. */
export interface CommandInvocation {
  CommandId: string;
  InstanceId: string;
  DocumentName: string;
  Status: 'InProgress' | 'Success' | 'Failed' | 'TimedOut';
  ResponseCode: number;
  StandardOutputContent: string;
  StandardErrorContent: string;
  /** The script's process while it runs (killed by close()). */
  child?: ChildProcess;
}

export interface CapacityRule {
  instanceTypes?: string[];
  subnetIds?: string[];
  availabilityZones?: string[];
  market?: Market;
  /** How many more launches matching the rule succeed before it starts failing (default 0). */
  available?: number;
  code?: string;
}

export interface BootFault {
  kind: 'stuck-pending' | 'fail';
  remaining: number;
  instanceTypes?: string[];
}

export interface Backing {
  /**
   * Called when an instance finishes booting. Resolve with where its SSH server listens; the
   * instance turns `running` only then, so `running` in tests means "reachable".
   */
  onRunning(instance: Readonly<FakeInstance>): Promise<{ host: string; port: number }>;
  /** Called once when an instance that was backed reaches `terminated` (or the fake closes). */
  onTerminated?(instance: Readonly<FakeInstance>): Promise<void>;
}

export interface Timing {
  /** pending → running (plus the backing hook's own time). */
  pendingMs: number;
  /** shutting-down → terminated. */
  shuttingDownMs: number;
  /** How long terminated instances stay visible in DescribeInstances (EC2: about an hour). */
  terminatedRetentionMs: number;
  /** After launch, Describe calls and CreateTags do not see the instance for this long (EC2 eventual consistency). */
  eventualConsistencyMs: number;
  /** running → status checks `ok` in DescribeInstanceStatus. */
  statusInitMs: number;
  /** Auto Scaling retries a failed launch after this long. */
  asgRetryMs: number;
  /**
   * Auto Scaling launches this long after it sees a difference between desired and actual
   * capacity, never inside the call that raised desired capacity (AWS: seconds).
   */
  asgLaunchDelayMs: number;
}

export interface WorldOptions {
  clock?: ClockMode;
  timing?: Partial<Timing>;
  accountId?: string;
  region?: string;
  subnets?: Subnet[];
  /** When set, only these instance profile names are accepted. */
  instanceProfiles?: string[];
  backing?: Backing;
  /** Page size DescribeInstances uses without MaxResults (EC2 answers with everything). */
  describeDefaultPageSize?: number;
}

export const DEFAULT_SUBNETS: Subnet[] = [
  { subnetId: 'subnet-0a00000000000000a', availabilityZone: 'eu-west-1a', cidrBase: '127.0.1' },
  { subnetId: 'subnet-0b00000000000000b', availabilityZone: 'eu-west-1b', cidrBase: '127.0.2' },
  { subnetId: 'subnet-0c00000000000000c', availabilityZone: 'eu-west-1c', cidrBase: '127.0.3' },
];
export const DEFAULT_VPC = 'vpc-0f0000000000000f0';

const MAX_TAGS = 50;
const MAX_INSTANCES = 10_000;

export function hex(n: number): string {
  return randomBytes(Math.ceil(n / 2))
    .toString('hex')
    .slice(0, n);
}

export function isInstanceId(s: string): boolean {
  return /^i-[0-9a-f]{8}([0-9a-f]{9})?$/.test(s);
}

/** What a launch needs after request parameters and the launch template are merged. */
export interface LaunchSpec {
  ImageId: string;
  InstanceType: string;
  SubnetId: string;
  market: Market;
  Tags: Tag[];
  UserData?: string;
  IamInstanceProfile?: { Arn?: string; Name?: string };
  MetadataOptions?: MetadataOptions;
  InstanceInitiatedShutdownBehavior?: string;
  BlockDeviceMappings?: BlockDeviceMapping[];
  KeyName?: string;
  SecurityGroupIds?: string[];
  LaunchTemplate?: { LaunchTemplateId: string; LaunchTemplateName: string; Version: string };
  ClientToken?: string;
}

export class World {
  readonly clock: Scheduler;
  readonly timing: Timing;
  readonly accountId: string;
  readonly region: string;
  readonly subnets: Subnet[];
  instanceProfiles: string[] | undefined;
  backing: Backing | undefined;
  describeDefaultPageSize: number;

  readonly instances = new Map<string, FakeInstance>();
  readonly userData = new Map<string, string>();
  readonly launchTemplates = new Map<string, LaunchTemplate>();
  readonly groups = new Map<string, AutoScalingGroup>();
  readonly associations = new Map<string, IamAssociation>();
  readonly parameters = new Map<string, SsmParameter>();
  readonly buckets = new Set<string>();
  /** SSM Command documents: name → the `runCommand` lines of their one aws:runShellScript step. */
  readonly documents = new Map<string, string[]>();
  /** Run Command invocations by `<CommandId>/<InstanceId>`. */
  readonly invocations = new Map<string, CommandInvocation>();
  /** Launch idempotency: token → action, parameter fingerprint and the first answer. */
  readonly idempotency = new Map<string, { action: string; fingerprint: string; result: unknown }>();

  capacityRules: CapacityRule[] = [];
  bootFaults: BootFault[] = [];
  callerIdentity: { Account: string; Arn: string; UserId: string };

  private seq = 0;
  private usedIps = new Set<string>();
  /** The subnet address each instance was given; PrivateIpAddress may later show the backing's host. */
  private allocatedIp = new Map<string, string>();
  private inflight = new Set<Promise<unknown>>();
  /** Instances whose backing was started and not yet torn down. */
  private backed = new Set<string>();

  constructor(options: WorldOptions = {}) {
    this.clock = new Scheduler(options.clock ?? 'real');
    this.timing = {
      pendingMs: 100,
      shuttingDownMs: 100,
      terminatedRetentionMs: 3_600_000,
      eventualConsistencyMs: 0,
      statusInitMs: 0,
      asgRetryMs: 1_000,
      asgLaunchDelayMs: 200,
      ...options.timing,
    };
    this.accountId = options.accountId ?? '123456789012';
    this.region = options.region ?? 'eu-west-1';
    this.subnets = options.subnets ?? DEFAULT_SUBNETS;
    this.instanceProfiles = options.instanceProfiles;
    this.backing = options.backing;
    this.describeDefaultPageSize = options.describeDefaultPageSize ?? 1000;
    this.callerIdentity = {
      Account: this.accountId,
      Arn: `arn:aws:sts::${this.accountId}:assumed-role/runner-fleet-manager/i-0123456789abcdef0`,
      UserId: 'AROAEXAMPLEROLEID:i-0123456789abcdef0',
    };
    this.clock.afterRun = () => this.reconcileGroups();
  }

  now(): Date {
    return new Date(this.clock.now());
  }

  // ---------------------------------------------------------------- lookups

  subnet(subnetId: string): Subnet {
    const s = this.subnets.find((x) => x.subnetId === subnetId);
    if (!s) throw new AwsError('InvalidSubnetID.NotFound', `The subnet ID '${subnetId}' does not exist`);
    return s;
  }

  /** Instances the API can see right now (hides ones still inside the eventual-consistency window). */
  visibleInstances(): FakeInstance[] {
    const now = this.clock.now();
    return [...this.instances.values()].filter((i) => i.visibleAt <= now).sort((a, b) => a.seq - b.seq);
  }

  /** Resolves ids the way EC2 does: a malformed or unknown id fails the whole call. */
  requireInstances(ids: string[]): FakeInstance[] {
    const now = this.clock.now();
    const missing: string[] = [];
    const found: FakeInstance[] = [];
    for (const id of ids) {
      if (!isInstanceId(id)) throw new AwsError('InvalidInstanceID.Malformed', `Invalid id: "${id}"`);
      const inst = this.instances.get(id);
      if (!inst || inst.visibleAt > now) missing.push(id);
      else found.push(inst);
    }
    if (missing.length === 1) {
      throw new AwsError('InvalidInstanceID.NotFound', `The instance ID '${missing[0]}' does not exist`);
    }
    if (missing.length > 1) {
      throw new AwsError(
        'InvalidInstanceID.NotFound',
        `The instance IDs '${missing.join(', ')}' do not exist`,
      );
    }
    return found;
  }

  resolveProfile(ref: { Arn?: string; Name?: string }): IamProfileRef {
    let name = ref.Name;
    if (!name && ref.Arn) {
      const m = /^arn:aws[a-z-]*:iam::\d{12}:instance-profile\/(?:.*\/)?([\w+=,.@-]+)$/.exec(ref.Arn);
      if (!m) {
        throw new AwsError(
          'InvalidParameterValue',
          `Value (${ref.Arn}) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN`,
        );
      }
      name = m[1]!;
    }
    if (!name)
      throw new AwsError('MissingParameter', 'The request must contain the parameter iamInstanceProfile');
    if (this.instanceProfiles && !this.instanceProfiles.includes(name)) {
      throw new AwsError(
        'InvalidParameterValue',
        `Value (${name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name`,
      );
    }
    const id = `AIPA${createHash('sha256').update(name).digest('hex').slice(0, 17).toUpperCase()}`;
    return { Arn: ref.Arn ?? `arn:aws:iam::${this.accountId}:instance-profile/${name}`, Id: id, Name: name };
  }

  launchTemplate(ref: { LaunchTemplateId?: string; LaunchTemplateName?: string }): LaunchTemplate {
    if (ref.LaunchTemplateId) {
      const t = [...this.launchTemplates.values()].find((x) => x.LaunchTemplateId === ref.LaunchTemplateId);
      if (!t) {
        throw new AwsError(
          'InvalidLaunchTemplateId.NotFound',
          `The specified launch template, with template ID ${ref.LaunchTemplateId}, does not exist.`,
        );
      }
      return t;
    }
    if (ref.LaunchTemplateName) {
      const t = this.launchTemplates.get(ref.LaunchTemplateName);
      if (!t) {
        throw new AwsError(
          'InvalidLaunchTemplateName.NotFoundException',
          `The specified launch template, with template name ${ref.LaunchTemplateName}, does not exist.`,
        );
      }
      return t;
    }
    throw new AwsError(
      'MissingParameter',
      'The request must contain the parameter launchTemplateName or launchTemplateId',
    );
  }

  templateVersion(t: LaunchTemplate, version: string | undefined): LaunchTemplate['versions'][number] {
    const latest = t.versions[t.versions.length - 1]!;
    if (version === undefined || version === '$Default') {
      return t.versions.find((v) => v.VersionNumber === t.DefaultVersionNumber) ?? latest;
    }
    if (version === '$Latest') return latest;
    const v = t.versions.find((x) => String(x.VersionNumber) === version);
    if (!v) {
      throw new AwsError(
        'InvalidLaunchTemplateId.VersionNotFound',
        `Could not find launch template version ${version} for template ${t.LaunchTemplateId}`,
      );
    }
    return v;
  }

  addLaunchTemplate(name: string, versions: LaunchTemplateData[], defaultVersion = 1): LaunchTemplate {
    if (versions.length === 0) throw new Error('aws fake: a launch template needs at least one version');
    const created = this.now();
    const t: LaunchTemplate = {
      LaunchTemplateId: `lt-${hex(17)}`,
      LaunchTemplateName: name,
      DefaultVersionNumber: defaultVersion,
      versions: versions.map((data, i) => ({ VersionNumber: i + 1, CreateTime: created, data })),
    };
    this.launchTemplates.set(name, t);
    return t;
  }

  // ---------------------------------------------------------------- faults

  /**
   * How many launches in this pool the capacity rules allow right now (Infinity when no rule
   * matches), and the rule that limits it.
   */
  capacityFor(
    instanceType: string,
    subnetId: string,
    market: Market,
  ): { available: number; rule?: CapacityRule } {
    const az = this.subnets.find((s) => s.subnetId === subnetId)?.availabilityZone;
    let best: { available: number; rule?: CapacityRule } = { available: Number.POSITIVE_INFINITY };
    for (const rule of this.matchingRules(instanceType, subnetId, az, market)) {
      const available = rule.available ?? 0;
      if (available < best.available) best = { available, rule };
    }
    return best;
  }

  consumeCapacity(instanceType: string, subnetId: string, market: Market, n: number): void {
    const az = this.subnets.find((s) => s.subnetId === subnetId)?.availabilityZone;
    for (const rule of this.matchingRules(instanceType, subnetId, az, market)) {
      rule.available = Math.max(0, (rule.available ?? 0) - n);
    }
  }

  private matchingRules(
    instanceType: string,
    subnetId: string,
    az: string | undefined,
    market: Market,
  ): CapacityRule[] {
    return this.capacityRules.filter(
      (rule) =>
        (!rule.instanceTypes || rule.instanceTypes.includes(instanceType)) &&
        (!rule.subnetIds || rule.subnetIds.includes(subnetId)) &&
        (!rule.availabilityZones || (az !== undefined && rule.availabilityZones.includes(az))) &&
        (!rule.market || rule.market === market),
    );
  }

  capacityError(rule: CapacityRule, instanceType: string, subnetId: string, market: Market): AwsError {
    const code = rule.code ?? 'InsufficientInstanceCapacity';
    const az = this.subnets.find((s) => s.subnetId === subnetId)?.availabilityZone ?? this.region;
    const what = market === 'spot' ? `${instanceType} Spot capacity` : `${instanceType} capacity`;
    // EC2 sends capacity errors as HTTP 500, which the SDK treats as transient and retries.
    return new AwsError(
      code,
      `We currently do not have sufficient ${what} in the Availability Zone you requested (${az}). Our system will be working on provisioning additional capacity.`,
      500,
    );
  }

  // ---------------------------------------------------------------- life cycle

  private allocateIp(subnet: Subnet): string {
    // AWS reserves the first four and the last address of every subnet.
    for (let host = 4; host <= 254; host++) {
      const ip = `${subnet.cidrBase}.${host}`;
      if (!this.usedIps.has(ip)) {
        this.usedIps.add(ip);
        return ip;
      }
    }
    throw new AwsError(
      'InsufficientFreeAddressesInSubnet',
      `There are not enough free addresses in subnet '${subnet.subnetId}' to satisfy the requested number of instances.`,
    );
  }

  /** Launches `count` instances sharing one reservation; all-or-nothing like EC2's MinCount. */
  launch(spec: LaunchSpec, count: number): FakeInstance[] {
    if (this.instances.size + count > MAX_INSTANCES) {
      throw new AwsError(
        'InstanceLimitExceeded',
        'You have requested more instances than your current instance limit allows.',
      );
    }
    const subnet = this.subnet(spec.SubnetId);
    const reservationId = `r-${hex(17)}`;
    const now = this.clock.now();
    const out: FakeInstance[] = [];
    const ips: string[] = [];
    try {
      for (let i = 0; i < count; i++) ips.push(this.allocateIp(subnet));
    } catch (err) {
      for (const ip of ips) this.usedIps.delete(ip);
      throw err;
    }
    const profile = spec.IamInstanceProfile ? this.resolveProfile(spec.IamInstanceProfile) : undefined;
    for (let i = 0; i < count; i++) {
      const id = `i-${hex(17)}`;
      const inst: FakeInstance = {
        InstanceId: id,
        ReservationId: reservationId,
        ImageId: spec.ImageId,
        InstanceType: spec.InstanceType,
        SubnetId: subnet.subnetId,
        VpcId: subnet.vpcId ?? DEFAULT_VPC,
        AvailabilityZone: subnet.availabilityZone,
        PrivateIpAddress: ips[i]!,
        State: 'pending',
        StateTransitionReason: '',
        LaunchTime: new Date(Math.floor(now / 1000) * 1000),
        Tags: dedupeTags(spec.Tags),
        ClientToken: spec.ClientToken,
        IamInstanceProfile: profile,
        MetadataOptions: {
          HttpTokens: spec.MetadataOptions?.HttpTokens ?? 'optional',
          HttpPutResponseHopLimit: spec.MetadataOptions?.HttpPutResponseHopLimit ?? 1,
          HttpEndpoint: spec.MetadataOptions?.HttpEndpoint ?? 'enabled',
          InstanceMetadataTags: spec.MetadataOptions?.InstanceMetadataTags ?? 'disabled',
        },
        InstanceInitiatedShutdownBehavior: spec.InstanceInitiatedShutdownBehavior ?? 'stop',
        BlockDeviceMappings: spec.BlockDeviceMappings ?? [],
        KeyName: spec.KeyName,
        SecurityGroupIds: spec.SecurityGroupIds ?? [],
        InstanceLifecycle: spec.market === 'spot' ? 'spot' : undefined,
        SpotInstanceRequestId: spec.market === 'spot' ? `sir-${hex(8)}` : undefined,
        LaunchTemplate: spec.LaunchTemplate,
        AmiLaunchIndex: i,
        seq: this.seq++,
        visibleAt: now + this.timing.eventualConsistencyMs,
      };
      this.instances.set(id, inst);
      this.allocatedIp.set(id, ips[i]!);
      if (spec.UserData !== undefined) this.userData.set(id, spec.UserData);
      if (profile) {
        const assoc: IamAssociation = {
          AssociationId: `iip-assoc-${hex(17)}`,
          InstanceId: id,
          IamInstanceProfile: profile,
          State: 'associated',
          Timestamp: new Date(now),
        };
        this.associations.set(assoc.AssociationId, assoc);
      }
      out.push(inst);
      this.clock.after(this.timing.pendingMs, () => this.boot(inst));
    }
    return out;
  }

  private takeBootFault(inst: FakeInstance): BootFault | undefined {
    const f = this.bootFaults.find(
      (x) => x.remaining > 0 && (!x.instanceTypes || x.instanceTypes.includes(inst.InstanceType)),
    );
    if (f) f.remaining--;
    this.bootFaults = this.bootFaults.filter((x) => x.remaining > 0);
    return f;
  }

  private boot(inst: FakeInstance): void {
    if (inst.State !== 'pending') return;
    const fault = this.takeBootFault(inst);
    if (fault?.kind === 'stuck-pending') return;
    if (fault?.kind === 'fail') {
      this.setTerminated(inst, {
        Code: 'Server.InternalError',
        Message: 'Server.InternalError: Internal error on launch',
      });
      return;
    }
    const backing = this.backing;
    if (!backing) {
      this.markRunning(inst);
      return;
    }
    this.backed.add(inst.InstanceId);
    this.track(
      backing.onRunning(inst).then(
        ({ host, port }) => {
          inst.backingPort = port;
          // The fake reports where the backing listens as the private IP, so a provider that
          // connects to PrivateIpAddress reaches the right sshd.
          inst.PrivateIpAddress = host;
          if (inst.State === 'pending') this.markRunning(inst);
          else void this.teardown(inst);
          this.clock.runDue();
        },
        () => {
          this.backed.delete(inst.InstanceId);
          if (inst.State === 'pending') {
            this.setTerminated(inst, {
              Code: 'Server.InternalError',
              Message: 'Server.InternalError: Internal error on launch',
            });
          }
          this.clock.runDue();
        },
      ),
    );
  }

  private markRunning(inst: FakeInstance): void {
    inst.State = 'running';
    inst.runningSince = this.clock.now();
  }

  /** TerminateInstances semantics: pending/running → shutting-down → terminated. */
  terminate(inst: FakeInstance, reason?: { Code: string; Message: string }): void {
    if (inst.State === 'terminated' || inst.State === 'shutting-down') return;
    inst.State = 'shutting-down';
    inst.StateTransitionReason = `User initiated (${gmt(this.now())})`;
    inst.StateReason = reason ?? {
      Code: 'Client.UserInitiatedShutdown',
      Message: 'Client.UserInitiatedShutdown: User initiated shutdown',
    };
    this.clock.after(this.timing.shuttingDownMs, () => this.setTerminated(inst, inst.StateReason));
  }

  /** Straight to terminated: spot reclaim, launch failure, the end of shutting-down. */
  setTerminated(inst: FakeInstance, reason?: { Code: string; Message: string }): void {
    if (inst.State === 'terminated') return;
    inst.State = 'terminated';
    if (reason) inst.StateReason = reason;
    if (!inst.StateTransitionReason) inst.StateTransitionReason = `Service initiated (${gmt(this.now())})`;
    const ip = this.allocatedIp.get(inst.InstanceId);
    if (ip) this.usedIps.delete(ip);
    this.allocatedIp.delete(inst.InstanceId);
    for (const a of this.associations.values()) {
      if (a.InstanceId === inst.InstanceId) this.associations.delete(a.AssociationId);
    }
    void this.teardown(inst);
    this.clock.after(this.timing.terminatedRetentionMs, () => {
      this.instances.delete(inst.InstanceId);
      this.userData.delete(inst.InstanceId);
    });
  }

  /** Stopping: only reachable through an instance-initiated shutdown with behaviour `stop`. */
  setStopped(inst: FakeInstance): void {
    inst.State = 'stopped';
    inst.StateTransitionReason = `User initiated (${gmt(this.now())})`;
    inst.StateReason = {
      Code: 'Client.InstanceInitiatedShutdown',
      Message: 'Client.InstanceInitiatedShutdown: Instance initiated shutdown',
    };
    void this.teardown(inst);
  }

  private teardown(inst: FakeInstance): Promise<void> {
    if (!this.backed.delete(inst.InstanceId)) return Promise.resolve();
    const hook = this.backing?.onTerminated;
    if (!hook) return Promise.resolve();
    const p = hook(inst).catch(() => undefined);
    this.track(p);
    return p;
  }

  private track(p: Promise<unknown>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /**
   * Waits for backing hooks started so far, including hooks those hooks start (100 rounds at
   * most), or until `timeoutMs` passes: a hook that never settles must not hang close().
   */
  async settle(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 100 && this.inflight.size > 0; i++) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => {
        timer = setTimeout(r, left);
      });
      await Promise.race([Promise.allSettled([...this.inflight]), timeout]);
      clearTimeout(timer);
    }
  }

  async closeBackings(): Promise<void> {
    const live = [...this.instances.values()].filter((i) => this.backed.has(i.InstanceId));
    for (const i of live) void this.teardown(i);
    await this.settle(10_000);
  }

  // ---------------------------------------------------------------- tags

  setTags(inst: FakeInstance, tags: Tag[]): void {
    const merged = new Map(inst.Tags.map((t) => [t.Key, t.Value]));
    for (const t of tags) merged.set(t.Key, t.Value);
    if (merged.size > MAX_TAGS) {
      throw new AwsError(
        'TagLimitExceeded',
        `The maximum number of tags (${MAX_TAGS}) for resource ${inst.InstanceId} was exceeded`,
      );
    }
    inst.Tags = [...merged].map(([Key, Value]) => ({ Key, Value }));
  }

  // ---------------------------------------------------------------- Auto Scaling

  addGroup(g: AutoScalingGroup): void {
    this.groups.set(g.AutoScalingGroupName, g);
    this.reconcileGroups();
  }

  groupOf(instanceId: string): AutoScalingGroup | undefined {
    for (const g of this.groups.values()) {
      if (g.instances.some((i) => i.InstanceId === instanceId)) return g;
    }
    return undefined;
  }

  /**
   * What an Auto Scaling group does on its own: forget instances that EC2 terminated (replacing
   * them if the group is now below desired), launch up to desired, and scale in unprotected
   * instances above desired. Runs after every API call and every scheduled event.
   */
  reconcileGroups(): void {
    for (const g of this.groups.values()) {
      g.instances = g.instances.filter((m) => {
        const inst = this.instances.get(m.InstanceId);
        return inst !== undefined && inst.State !== 'terminated';
      });
      const live = g.instances.filter((m) => this.instances.get(m.InstanceId)?.State !== 'shutting-down');
      const missing = g.DesiredCapacity - live.length;
      // After a failed launch the group waits for its retry instead of hammering EC2 on every call.
      if (
        missing > 0 &&
        !g.retryScheduled &&
        !g.launchScheduled &&
        !g.SuspendedProcesses.includes('Launch')
      ) {
        // Asynchronous, as on AWS: the launch happens after the call that asked for it answered.
        g.launchScheduled = true;
        this.clock.after(this.timing.asgLaunchDelayMs, () => {
          g.launchScheduled = false;
          const now = g.instances.filter((m) => {
            const state = this.instances.get(m.InstanceId)?.State;
            return state !== undefined && state !== 'terminated' && state !== 'shutting-down';
          }).length;
          if (!g.SuspendedProcesses.includes('Launch') && g.DesiredCapacity > now)
            this.scaleOut(g, g.DesiredCapacity - now);
        });
      }
      if (missing < 0 && !g.SuspendedProcesses.includes('Terminate')) this.scaleIn(g, -missing);
    }
  }

  private scaleOut(g: AutoScalingGroup, n: number): void {
    for (let i = 0; i < n; i++) {
      const activity: AsgActivity = {
        ActivityId: randomUUID(),
        AutoScalingGroupName: g.AutoScalingGroupName,
        Description: 'Launching a new EC2 instance',
        Cause: `At ${this.now().toISOString()} an instance was started in response to a difference between desired and actual capacity, increasing the capacity from ${g.instances.length} to ${g.instances.length + 1}.`,
        StartTime: this.now(),
        StatusCode: 'InProgress',
        Progress: 0,
        Details: '{}',
      };
      g.activities.unshift(activity);
      g.activities.length = Math.min(g.activities.length, 100);
      try {
        const inst = this.launchForGroup(g);
        activity.Description = `Launching a new EC2 instance: ${inst.InstanceId}`;
        activity.StatusCode = 'Successful';
        activity.Progress = 100;
        activity.EndTime = this.now();
        activity.Details = JSON.stringify({
          'Subnet ID': inst.SubnetId,
          'Availability Zone': inst.AvailabilityZone,
        });
        g.instances.push({
          InstanceId: inst.InstanceId,
          ProtectedFromScaleIn: g.NewInstancesProtectedFromScaleIn,
        });
      } catch (err) {
        activity.Description = 'Launching a new EC2 instance.  Status Reason: launch failed';
        activity.StatusCode = 'Failed';
        activity.StatusMessage = err instanceof Error ? err.message : String(err);
        activity.EndTime = this.now();
        // Auto Scaling keeps trying in the background; one retry at a time.
        if (!g.retryScheduled) {
          g.retryScheduled = true;
          this.clock.after(this.timing.asgRetryMs, () => {
            g.retryScheduled = false;
          });
        }
        return;
      }
    }
  }

  /** Picks type, market and subnet the way a group would, trying each override before failing. */
  private launchForGroup(g: AutoScalingGroup): FakeInstance {
    const spec = g.MixedInstancesPolicy?.LaunchTemplate.LaunchTemplateSpecification ?? g.LaunchTemplate;
    if (!spec) throw new AwsError('ValidationError', 'The group has no launch template');
    const template = this.launchTemplate(spec);
    const version = this.templateVersion(template, spec.Version);
    const data = version.data;
    const dist = g.MixedInstancesPolicy?.InstancesDistribution;
    const onDemandNow = g.instances.filter(
      (m) => !this.instances.get(m.InstanceId)?.InstanceLifecycle,
    ).length;
    let market: Market = data.InstanceMarketOptions?.MarketType === 'spot' ? 'spot' : 'on-demand';
    if (g.MixedInstancesPolicy) {
      const base = dist?.OnDemandBaseCapacity ?? 0;
      const pct = dist?.OnDemandPercentageAboveBaseCapacity ?? 100;
      const total = g.instances.length + 1;
      const wantOnDemand = Math.min(total, base) + Math.ceil((Math.max(0, total - base) * pct) / 100);
      market = onDemandNow < wantOnDemand ? 'on-demand' : 'spot';
    }
    const types = g.MixedInstancesPolicy?.LaunchTemplate.Overrides?.map((o) => o.InstanceType) ?? [
      data.InstanceType ?? 'm1.small',
    ];
    // Balance across zones: try the subnet with the fewest group members first.
    const counts = new Map(g.subnetIds.map((s) => [s, 0]));
    for (const m of g.instances) {
      const s = this.instances.get(m.InstanceId)?.SubnetId;
      if (s && counts.has(s)) counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    const subnets = [...g.subnetIds].sort((a, b) => (counts.get(a) ?? 0) - (counts.get(b) ?? 0));
    let lastError: AwsError | undefined;
    for (const subnetId of subnets) {
      for (const type of types) {
        const capacity = this.capacityFor(type, subnetId, market);
        if (capacity.available < 1 && capacity.rule) {
          lastError = this.capacityError(capacity.rule, type, subnetId, market);
          continue;
        }
        this.consumeCapacity(type, subnetId, market, 1);
        // Auto Scaling launches through EC2 Fleet: the instance's ClientToken is the fleet's, never
        // anything the group's owner chose.
        const fleetId = `fleet-${randomUUID()}`;
        const tags: Tag[] = [
          ...(data.TagSpecifications ?? [])
            .filter((t) => t.ResourceType === 'instance')
            .flatMap((t) => t.Tags ?? []),
          ...g.Tags.filter((t) => t.PropagateAtLaunch).map((t) => ({ Key: t.Key, Value: t.Value })),
          { Key: 'aws:autoscaling:groupName', Value: g.AutoScalingGroupName },
          { Key: 'aws:ec2launchtemplate:id', Value: template.LaunchTemplateId },
          { Key: 'aws:ec2launchtemplate:version', Value: String(version.VersionNumber) },
          { Key: 'aws:ec2:fleet-id', Value: fleetId },
        ];
        const [inst] = this.launch(
          {
            ImageId: data.ImageId ?? 'ami-00000000000000000',
            InstanceType: type,
            SubnetId: subnetId,
            market,
            Tags: tags,
            UserData: data.UserData,
            IamInstanceProfile: data.IamInstanceProfile,
            MetadataOptions: data.MetadataOptions,
            InstanceInitiatedShutdownBehavior: data.InstanceInitiatedShutdownBehavior,
            BlockDeviceMappings: data.BlockDeviceMappings,
            KeyName: data.KeyName,
            SecurityGroupIds: data.SecurityGroupIds,
            LaunchTemplate: {
              LaunchTemplateId: template.LaunchTemplateId,
              LaunchTemplateName: template.LaunchTemplateName,
              Version: String(version.VersionNumber),
            },
            ClientToken: `${fleetId}-0`,
          },
          1,
        );
        return inst!;
      }
    }
    throw lastError ?? new AwsError('InsufficientInstanceCapacity', 'No capacity');
  }

  private scaleIn(g: AutoScalingGroup, n: number): void {
    // Default termination policy, simplified: only unprotected instances, from the zone with the
    // most instances, oldest first.
    for (let i = 0; i < n; i++) {
      const candidates = g.instances
        .filter((m) => !m.ProtectedFromScaleIn)
        .map((m) => this.instances.get(m.InstanceId))
        .filter(
          (x): x is FakeInstance => x !== undefined && (x.State === 'pending' || x.State === 'running'),
        );
      if (candidates.length === 0) return;
      const perAz = new Map<string, number>();
      for (const c of candidates) perAz.set(c.AvailabilityZone, (perAz.get(c.AvailabilityZone) ?? 0) + 1);
      candidates.sort(
        (a, b) =>
          (perAz.get(b.AvailabilityZone) ?? 0) - (perAz.get(a.AvailabilityZone) ?? 0) || a.seq - b.seq,
      );
      const victim = candidates[0]!;
      g.activities.unshift({
        ActivityId: randomUUID(),
        AutoScalingGroupName: g.AutoScalingGroupName,
        Description: `Terminating EC2 instance: ${victim.InstanceId}`,
        Cause: `At ${this.now().toISOString()} an instance was taken out of service in response to a difference between desired and actual capacity.`,
        StartTime: this.now(),
        StatusCode: 'InProgress',
        Progress: 0,
        Details: JSON.stringify({
          'Subnet ID': victim.SubnetId,
          'Availability Zone': victim.AvailabilityZone,
        }),
      });
      g.activities.length = Math.min(g.activities.length, 100);
      this.terminate(victim, {
        Code: 'Client.UserInitiatedShutdown',
        Message: 'Client.UserInitiatedShutdown: User initiated shutdown',
      });
    }
  }
}

export function dedupeTags(tags: Tag[]): Tag[] {
  const m = new Map<string, string>();
  for (const t of tags) m.set(t.Key, t.Value);
  return [...m].map(([Key, Value]) => ({ Key, Value }));
}

function gmt(d: Date): string {
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} GMT`;
}
