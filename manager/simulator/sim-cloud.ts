/**
 * EC2 and Auto Scaling in memory, on the simulator's virtual clock, answering the real AWS SDK
 * clients the real AwsProvider uses. It plugs into each client's middleware stack just below the
 * retry and signing layers (the `deserialize` step): the provider's commands are built, validated,
 * serialized, signed and retried by the SDK exactly as in production, and only the HTTP round trip
 * and the XML parse are replaced by an answer built here. Every attempt that reaches this layer is
 * one request AWS would see and bill against its rate limits, so `calls` is the wire count.
 *
 * The model follows EC2's documented behaviour where the provider's call count depends on it
 * (and the wire fake in test/fakes/aws/ does the same): DescribeInstances filters on tags and
 * instance-state-name and pages at 1,000; a new instance is invisible to Describe and CreateTags
 * for a while (eventual consistency); terminated instances stay visible to lookups by id for an
 * hour; ClientToken makes RunInstances idempotent; Auto Scaling launches asynchronously after a
 * desired-capacity change, from the group's `$Latest` template version, with `aws:` tags.
 *
 * Faults: request throttling by EC2's token buckets (RequestLimitExceeded), launch calls short of
 * capacity (InsufficientInstanceCapacity, HTTP 500, which the provider does not retry), and spot
 * interruptions. Randomness comes from separate seeded streams per purpose, so a run is
 * reproducible for a seed.
 */
import { AutoScalingServiceException } from '@aws-sdk/client-auto-scaling';
import { EC2ServiceException } from '@aws-sdk/client-ec2';
import { exponential, logNormal, type Rng, seededRng } from './random.js';
import type { VirtualClock } from './virtual-clock.js';

export interface SimCloudOptions {
  readonly clock: VirtualClock;
  readonly seed: number;
  /** Launch to SSH-ready: log-normal median and shape. EC2 says `running` at a quarter of it. */
  readonly bootMedianMs: number;
  readonly bootSigma: number;
  /** Median latency of an API call. */
  readonly apiLatencyMs: number;
  /** RunInstances takes this many times as long (EC2: several hundred ms against ~100). */
  readonly launchLatencyFactor: number;
  /**
   * Request token buckets (burst, refill per second). EC2 keeps one bucket per API and account,
   * sized by the API's class (non-mutating `describe`, `mutating`, and RunInstances' own `run`);
   * Auto Scaling's limits are not published: one bucket per action of the `autoscaling` size.
   */
  readonly apiBuckets: Readonly<Record<ApiClass, readonly [burst: number, perSecond: number]>>;
  /** Probability that one launch (a RunInstances call, an Auto Scaling launch) finds no capacity. */
  readonly capacityErrorRate: number;
  /** Spot interruptions per instance-hour (0: none). */
  readonly interruptionsPerHour: number;
  /** After launch, Describe calls and CreateTags do not see an instance for this long. */
  readonly consistencyMs: number;
  /** shutting-down → terminated. */
  readonly shuttingDownMs: number;
  /** Terminated instances answer lookups by id this long (EC2: about an hour). */
  readonly terminatedRetentionMs: number;
  /** Auto Scaling launches this long after desired capacity rises above the group's instances. */
  readonly asgLaunchDelayMs: number;
  /** Auto Scaling retries a launch that found no capacity after this long. */
  readonly asgRetryMs: number;
  /** The Auto Scaling group's MaxSize. */
  readonly asgMaxSize: number;
  /** Called when an instance is interrupted (its job fails as a system failure). */
  readonly onInterrupt?: (id: string) => void;
  /** Called for every request answered, for tests that compare call timelines. */
  readonly onCall?: (action: string, at: number) => void;
}

export type ApiClass = 'describe' | 'mutating' | 'run' | 'autoscaling';

export const SIM_LAUNCH_TEMPLATE = 'runner-fleet-job';
export const SIM_GROUP = 'runner-fleet-jobs';
export const SIM_SUBNETS = [
  'subnet-0a00000000000000a',
  'subnet-0b00000000000000b',
  'subnet-0c00000000000000c',
];
const TEMPLATE_ID = 'lt-0sim0000000000000';
const PAGE_SIZE = 1000;
const SPOT = 'Server.SpotInstanceTermination';

type State = 'pending' | 'running' | 'shutting-down' | 'terminated';

interface SimInstance {
  readonly id: string;
  readonly seq: number;
  readonly ip: string;
  readonly type: string;
  readonly subnet: string;
  readonly spot: boolean;
  readonly launchTime: Date;
  readonly clientToken: string;
  readonly visibleAt: number;
  readonly readyAt: number;
  state: State;
  tags: Map<string, string>;
  reason?: { Code: string; Message: string };
  profile?: string;
  group?: boolean;
}

interface TemplateVersion {
  number: number;
  description?: string;
  data: Record<string, unknown>;
}

interface Activity {
  StatusCode: 'Successful' | 'Failed';
  StatusMessage?: string;
  Description: string;
  StartTime: Date;
  ActivityId: string;
  AutoScalingGroupName: string;
  Cause: string;
  Progress: number;
}

type Input = Record<string, unknown> & { [k: string]: unknown };
type Answer = Record<string, unknown>;

/** An AWS error as the SDK's deserializer would throw it. */
function awsError(service: 'ec2' | 'autoscaling', code: string, message: string, status = 400): Error {
  const init = {
    name: code,
    $fault: status >= 500 ? ('server' as const) : ('client' as const),
    $metadata: { httpStatusCode: status },
    message,
  };
  return service === 'ec2' ? new EC2ServiceException(init) : new AutoScalingServiceException(init);
}

class Bucket {
  private tokens: number;
  private at: number;
  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }
  take(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

const EC2_CLASS: Record<string, ApiClass> = {
  RunInstances: 'run',
  DescribeInstances: 'describe',
  DescribeLaunchTemplateVersions: 'describe',
  DescribeIamInstanceProfileAssociations: 'describe',
};

export class SimCloud {
  /** Requests answered (or refused) by action: what AWS would see. */
  readonly calls: Record<string, number> = {};
  /** Faults answered, by error code. */
  readonly errors: Record<string, number> = {};
  launched = 0;
  interruptions = 0;
  private readonly instances = new Map<string, SimInstance>();
  private readonly byIp = new Map<string, SimInstance>();
  /** Instances not yet terminated, in launch order: what the listing walks. */
  private readonly live = new Set<SimInstance>();
  private readonly tokens = new Map<string, SimInstance>();
  private readonly buckets = new Map<string, Bucket>();
  private readonly latencyRng: Rng;
  private readonly bootRng: Rng;
  private readonly capacityRng: Rng;
  private readonly interruptRng: Rng;
  private seq = 0;
  private readonly versions: TemplateVersion[] = [
    { number: 1, data: { ImageId: 'ami-0123456789abcdef0', InstanceType: 't3.micro' } },
  ];
  private defaultVersion = 1;
  private readonly group = {
    desired: 0,
    members: new Set<SimInstance>(),
    launchScheduled: false,
    retryScheduled: false,
    activities: [] as Activity[],
    subnet: 0,
  };

  constructor(private readonly o: SimCloudOptions) {
    this.latencyRng = seededRng(o.seed * 7 + 1);
    this.bootRng = seededRng(o.seed * 7 + 2);
    this.capacityRng = seededRng(o.seed * 7 + 3);
    this.interruptRng = seededRng(o.seed * 7 + 4);
  }

  /** AWS API calls in total. */
  get total(): number {
    return Object.values(this.calls).reduce((a, b) => a + b, 0);
  }

  /**
   * The middleware that answers a client's commands. Added at the `deserialize` step with high
   * priority, it sits inside the SDK's retry and signing middleware and answers before the
   * deserializer would read a response.
   */
  middleware(service: 'ec2' | 'autoscaling') {
    // biome-ignore lint/suspicious/noExplicitAny: the SDK's middleware types are per client.
    return (_next: unknown, context: any) => async (args: any) => {
      const action = String(context.commandName ?? '').replace(/Command$/, '');
      const output = await this.answer(service, action, (args.input ?? {}) as Input);
      return {
        output: { ...output, $metadata: { httpStatusCode: 200, requestId: `sim-${this.total}` } },
        response: { statusCode: 200, headers: {} },
      };
    };
  }

  /**
   * What a readiness probe of this address would find now: the port closed until the kernel is up
   * (EC2 says `running`), then `instance_ready_command` failing until boot has finished.
   */
  sshState(host: string): 'closed' | 'booting' | 'ready' {
    const i = this.byIp.get(host);
    if (i?.state !== 'running') return 'closed';
    return this.o.clock.now() >= i.readyAt ? 'ready' : 'booting';
  }

  /** Instances not terminated, for tests. */
  alive(): string[] {
    return [...this.live].filter((i) => i.state !== 'shutting-down').map((i) => i.id);
  }

  private async answer(service: 'ec2' | 'autoscaling', action: string, input: Input): Promise<Answer> {
    this.calls[action] = (this.calls[action] ?? 0) + 1;
    this.o.onCall?.(action, this.o.clock.now());
    const cls: ApiClass = service === 'autoscaling' ? 'autoscaling' : (EC2_CLASS[action] ?? 'mutating');
    let bucket = this.buckets.get(action);
    if (!bucket) {
      const [burst, perSecond] = this.o.apiBuckets[cls];
      bucket = new Bucket(burst, perSecond, this.o.clock.now());
      this.buckets.set(action, bucket);
    }
    const throttled = !bucket.take(this.o.clock.now());
    const factor = action === 'RunInstances' ? this.o.launchLatencyFactor : 1;
    const latency = logNormal(this.latencyRng, this.o.apiLatencyMs * factor, 0.3);
    await new Promise<void>((resolve) => this.o.clock.setTimeout(resolve, latency));
    try {
      if (throttled) {
        throw service === 'ec2'
          ? awsError('ec2', 'RequestLimitExceeded', 'Request limit exceeded.', 503)
          : awsError('autoscaling', 'Throttling', 'Rate exceeded', 400);
      }
      const out = service === 'ec2' ? this.ec2(action, input) : this.autoscaling(action, input);
      this.reconcileGroup();
      return out;
    } catch (error) {
      const code = (error as Error).name;
      this.errors[code] = (this.errors[code] ?? 0) + 1;
      throw error;
    }
  }

  // ------------------------------------------------------------------ EC2

  private ec2(action: string, p: Input): Answer {
    switch (action) {
      case 'DescribeInstances':
        return this.describeInstances(p);
      case 'RunInstances':
        return this.runInstances(p);
      case 'TerminateInstances': {
        const found = this.require(p.InstanceIds as string[]);
        for (const i of found) this.terminate(i);
        return { TerminatingInstances: found.map((i) => ({ InstanceId: i.id })) };
      }
      case 'CreateTags':
      case 'DeleteTags': {
        const found = this.require(p.Resources as string[]);
        for (const i of found)
          for (const t of (p.Tags as { Key: string; Value?: string }[]) ?? []) {
            if (action === 'CreateTags') i.tags.set(t.Key, t.Value ?? '');
            else i.tags.delete(t.Key);
          }
        return {};
      }
      case 'DescribeLaunchTemplateVersions':
        return this.describeVersions(p);
      case 'CreateLaunchTemplateVersion': {
        const number = Math.max(0, ...this.versions.map((v) => v.number)) + 1;
        const source = this.versions.find((v) => String(v.number) === String(p.SourceVersion));
        const version: TemplateVersion = {
          number,
          ...(typeof p.VersionDescription === 'string' ? { description: p.VersionDescription } : {}),
          data: { ...(source?.data ?? {}), ...(p.LaunchTemplateData as object) },
        };
        this.versions.push(version);
        return { LaunchTemplateVersion: this.versionView(version) };
      }
      case 'DeleteLaunchTemplateVersions': {
        const drop = new Set((p.Versions as string[]).map(Number));
        for (let n = this.versions.length - 1; n >= 0; n--) {
          const v = this.versions[n] as TemplateVersion;
          if (drop.has(v.number) && v.number !== this.defaultVersion) this.versions.splice(n, 1);
        }
        return {
          SuccessfullyDeletedLaunchTemplateVersions: [],
          UnsuccessfullyDeletedLaunchTemplateVersions: [],
        };
      }
      case 'DescribeIamInstanceProfileAssociations': {
        const id = ((p.Filters as { Name: string; Values: string[] }[]) ?? []).find(
          (f) => f.Name === 'instance-id',
        )?.Values[0];
        const i = id ? this.instances.get(id) : undefined;
        return {
          IamInstanceProfileAssociations:
            i?.profile !== undefined
              ? [
                  {
                    AssociationId: `iip-assoc-${i.id.slice(2)}`,
                    InstanceId: i.id,
                    State: 'associated',
                    IamInstanceProfile: { Arn: profileArn(i.profile) },
                  },
                ]
              : [],
        };
      }
      case 'AssociateIamInstanceProfile':
      case 'ReplaceIamInstanceProfileAssociation': {
        const ref = p.IamInstanceProfile as { Arn?: string; Name?: string };
        const id = (p.InstanceId as string | undefined) ?? `i-${String(p.AssociationId).slice(10)}`;
        const [i] = this.require([id]);
        if (i) i.profile = ref.Name ?? ref.Arn?.split('/').pop() ?? '';
        return { IamInstanceProfileAssociation: { InstanceId: id, State: 'associating' } };
      }
      case 'ModifyInstanceMetadataOptions':
        this.require([p.InstanceId as string]);
        return { InstanceId: p.InstanceId };
      default:
        throw awsError('ec2', 'InvalidAction', `The action ${action} is not valid for this web service.`);
    }
  }

  private describeInstances(p: Input): Answer {
    const now = this.o.clock.now();
    const ids = p.InstanceIds as string[] | undefined;
    let pool: SimInstance[];
    if (ids && ids.length > 0) pool = this.require(ids);
    else {
      pool = [];
      // Terminated instances are only reached by id (or by a listing that asks for them, which
      // the provider does not); the live set keeps a big fleet's listing from walking an hour of
      // terminated instances.
      const wantsTerminated = ((p.Filters as { Name: string; Values: string[] }[]) ?? []).every(
        (f) => f.Name !== 'instance-state-name' || f.Values.includes('terminated'),
      );
      const source = wantsTerminated ? this.instances.values() : this.live.values();
      for (const i of source) if (i.visibleAt <= now) pool.push(i);
    }
    const filters = (p.Filters as { Name: string; Values: string[] }[] | undefined) ?? [];
    const matched = pool.filter((i) =>
      filters.every((f) => {
        if (f.Name === 'instance-state-name') return f.Values.includes(i.state);
        if (f.Name.startsWith('tag:')) {
          const v = i.tags.get(f.Name.slice(4));
          return v !== undefined && f.Values.includes(v);
        }
        if (f.Name === 'instance-id') return f.Values.includes(i.id);
        throw awsError('ec2', 'InvalidParameterValue', `The filter '${f.Name}' is invalid`);
      }),
    );
    const size =
      ids && ids.length > 0 ? matched.length : Math.min(PAGE_SIZE, Number(p.MaxResults ?? PAGE_SIZE));
    const start = p.NextToken ? Number(p.NextToken) : 0;
    const page = matched.slice(start, start + size);
    const next = start + size < matched.length ? String(start + size) : undefined;
    return {
      Reservations:
        page.length > 0 ? [{ ReservationId: 'r-sim', Instances: page.map((i) => this.view(i)) }] : [],
      ...(next ? { NextToken: next } : {}),
    };
  }

  private runInstances(p: Input): Answer {
    const token = p.ClientToken as string | undefined;
    const known = token ? this.tokens.get(token) : undefined;
    if (known) return { Instances: [this.view(known)] };
    if (this.o.capacityErrorRate > 0 && this.capacityRng() < this.o.capacityErrorRate) {
      throw awsError(
        'ec2',
        'InsufficientInstanceCapacity',
        `We currently do not have sufficient ${String(p.InstanceType ?? 't3.micro')} capacity in the Availability Zone you requested.`,
        500,
      );
    }
    const tags = new Map<string, string>();
    for (const spec of (p.TagSpecifications as {
      ResourceType: string;
      Tags: { Key: string; Value: string }[];
    }[]) ?? [])
      if (spec.ResourceType === 'instance') for (const t of spec.Tags) tags.set(t.Key, t.Value);
    const profile = p.IamInstanceProfile as { Arn?: string; Name?: string } | undefined;
    const instance = this.launch({
      type: String(p.InstanceType ?? 't3.micro'),
      subnet: String(p.SubnetId ?? SIM_SUBNETS[0]),
      spot: (p.InstanceMarketOptions as { MarketType?: string } | undefined)?.MarketType === 'spot',
      tags,
      clientToken: token ?? `sim-${this.seq}`,
      ...(profile ? { profile: profile.Name ?? profile.Arn?.split('/').pop() ?? '' } : {}),
    });
    if (token) this.tokens.set(token, instance);
    return { Instances: [this.view(instance)] };
  }

  private describeVersions(p: Input): Answer {
    const wanted = (p.Versions as string[] | undefined) ?? ['$Default'];
    const out = [];
    for (const w of wanted) {
      const v =
        w === '$Latest'
          ? this.latest()
          : w === '$Default'
            ? this.versions.find((x) => x.number === this.defaultVersion)
            : this.versions.find((x) => String(x.number) === w);
      if (!v)
        throw awsError(
          'ec2',
          'InvalidLaunchTemplateId.VersionNotFound',
          `Could not find launch template version ${w}`,
        );
      out.push(this.versionView(v));
    }
    return { LaunchTemplateVersions: out };
  }

  private latest(): TemplateVersion {
    return this.versions.reduce((a, b) => (b.number > a.number ? b : a));
  }

  private versionView(v: TemplateVersion): Answer {
    return {
      LaunchTemplateId: TEMPLATE_ID,
      LaunchTemplateName: SIM_LAUNCH_TEMPLATE,
      VersionNumber: v.number,
      DefaultVersion: v.number === this.defaultVersion,
      ...(v.description ? { VersionDescription: v.description } : {}),
      CreateTime: new Date(this.o.clock.now()),
      LaunchTemplateData: v.data,
    };
  }

  /** Resolves ids the way EC2 does: an unknown (or not yet visible) id fails the whole call. */
  private require(ids: readonly string[]): SimInstance[] {
    const now = this.o.clock.now();
    const missing: string[] = [];
    const found: SimInstance[] = [];
    for (const id of ids) {
      const i = this.instances.get(id);
      if (!i || i.visibleAt > now) missing.push(id);
      else found.push(i);
    }
    if (missing.length === 1)
      throw awsError('ec2', 'InvalidInstanceID.NotFound', `The instance ID '${missing[0]}' does not exist`);
    if (missing.length > 1)
      throw awsError(
        'ec2',
        'InvalidInstanceID.NotFound',
        `The instance IDs '${missing.join(', ')}' do not exist`,
      );
    return found;
  }

  private launch(spec: {
    type: string;
    subnet: string;
    spot: boolean;
    tags: Map<string, string>;
    clientToken: string;
    profile?: string;
    group?: boolean;
  }): SimInstance {
    const now = this.o.clock.now();
    const seq = ++this.seq;
    const boot = logNormal(this.bootRng, this.o.bootMedianMs, this.o.bootSigma);
    const instance: SimInstance = {
      id: `i-${seq.toString(16).padStart(17, '0')}`,
      seq,
      ip: `10.${(seq >> 16) & 255}.${(seq >> 8) & 255}.${seq & 255}`,
      type: spec.type,
      subnet: spec.subnet,
      spot: spec.spot,
      launchTime: new Date(Math.floor(now / 1000) * 1000),
      clientToken: spec.clientToken,
      visibleAt: now + this.o.consistencyMs,
      readyAt: now + boot,
      state: 'pending',
      tags: spec.tags,
      ...(spec.profile !== undefined ? { profile: spec.profile } : {}),
      ...(spec.group ? { group: true } : {}),
    };
    this.instances.set(instance.id, instance);
    this.byIp.set(instance.ip, instance);
    this.live.add(instance);
    this.launched++;
    this.o.clock.setTimeout(() => {
      if (instance.state === 'pending') instance.state = 'running';
    }, boot / 4);
    if (this.o.interruptionsPerHour > 0) {
      const after = exponential(this.interruptRng, 3_600_000 / this.o.interruptionsPerHour);
      this.o.clock.setTimeout(() => this.interrupt(instance), after);
    }
    return instance;
  }

  private terminate(
    i: SimInstance,
    reason = { Code: 'Client.UserInitiatedShutdown', Message: 'User initiated shutdown' },
  ) {
    if (i.state === 'terminated' || i.state === 'shutting-down') return;
    i.state = 'shutting-down';
    i.reason = reason;
    this.group.members.delete(i);
    this.o.clock.setTimeout(() => this.setTerminated(i), this.o.shuttingDownMs);
  }

  private setTerminated(i: SimInstance): void {
    if (i.state === 'terminated') return;
    i.state = 'terminated';
    this.live.delete(i);
    this.byIp.delete(i.ip);
    if (this.group.members.delete(i)) this.reconcileGroup();
    this.o.clock.setTimeout(() => {
      this.instances.delete(i.id);
      this.tokens.delete(i.clientToken);
    }, this.o.terminatedRetentionMs);
  }

  private interrupt(i: SimInstance): void {
    if (i.state !== 'pending' && i.state !== 'running') return;
    this.interruptions++;
    i.reason = { Code: SPOT, Message: `${SPOT}: Spot instance termination` };
    this.setTerminated(i);
    this.o.onInterrupt?.(i.id);
  }

  private view(i: SimInstance): Answer {
    const states = { pending: 0, running: 16, 'shutting-down': 32, terminated: 48 };
    const tags: { Key: string; Value: string }[] = [];
    for (const [Key, Value] of i.tags) tags.push({ Key, Value });
    return {
      InstanceId: i.id,
      State: { Name: i.state, Code: states[i.state] },
      Tags: tags,
      PrivateIpAddress: i.ip,
      LaunchTime: i.launchTime,
      InstanceType: i.type,
      SubnetId: i.subnet,
      Placement: { AvailabilityZone: `eu-west-1${'abc'[SIM_SUBNETS.indexOf(i.subnet)] ?? 'a'}` },
      ClientToken: i.clientToken,
      ...(i.spot ? { InstanceLifecycle: 'spot' } : {}),
      ...(i.reason && i.state !== 'pending' && i.state !== 'running' ? { StateReason: i.reason } : {}),
    };
  }

  // ------------------------------------------------------------------ Auto Scaling

  private autoscaling(action: string, p: Input): Answer {
    const g = this.group;
    switch (action) {
      case 'DescribeAutoScalingGroups':
        return {
          AutoScalingGroups: ((p.AutoScalingGroupNames as string[]) ?? []).includes(SIM_GROUP)
            ? [
                {
                  AutoScalingGroupName: SIM_GROUP,
                  MinSize: 0,
                  MaxSize: this.o.asgMaxSize,
                  DesiredCapacity: g.desired,
                  LaunchTemplate: { LaunchTemplateId: TEMPLATE_ID, Version: '$Latest' },
                  SuspendedProcesses: [{ ProcessName: 'AZRebalance' }],
                  NewInstancesProtectedFromScaleIn: true,
                  Instances: [...g.members].map((i) => ({
                    InstanceId: i.id,
                    LifecycleState: i.state === 'running' ? 'InService' : 'Pending',
                    ProtectedFromScaleIn: true,
                  })),
                },
              ]
            : [],
        };
      case 'SetDesiredCapacity': {
        const want = Number(p.DesiredCapacity);
        if (want > this.o.asgMaxSize)
          throw awsError(
            'autoscaling',
            'ValidationError',
            `New SetDesiredCapacity value ${want} is above max value ${this.o.asgMaxSize} for the AutoScalingGroup.`,
          );
        g.desired = want;
        return {};
      }
      case 'TerminateInstanceInAutoScalingGroup': {
        const i = this.instances.get(String(p.InstanceId));
        if (!i || !g.members.has(i))
          throw awsError(
            'autoscaling',
            'ValidationError',
            `Instance Id not found - No managed instance found for instance ID: ${String(p.InstanceId)}`,
          );
        if (p.ShouldDecrementDesiredCapacity) g.desired--;
        this.terminate(i);
        return { Activity: { StatusCode: 'InProgress', Description: `Terminating EC2 instance: ${i.id}` } };
      }
      case 'SetInstanceProtection':
        return {};
      case 'DescribeScalingActivities':
        return { Activities: g.activities.slice(0, Number(p.MaxRecords ?? 100)) };
      default:
        throw awsError(
          'autoscaling',
          'InvalidAction',
          `The action ${action} is not valid for this web service.`,
        );
    }
  }

  /** Auto Scaling's side: launch what desired capacity asks for, a while after it asked. */
  private reconcileGroup(): void {
    const g = this.group;
    if (g.desired <= g.members.size || g.launchScheduled || g.retryScheduled) return;
    g.launchScheduled = true;
    this.o.clock.setTimeout(() => {
      g.launchScheduled = false;
      while (g.members.size < g.desired) {
        if (this.o.capacityErrorRate > 0 && this.capacityRng() < this.o.capacityErrorRate) {
          g.activities.unshift({
            ActivityId: `sim-${this.seq}-${g.activities.length}`,
            AutoScalingGroupName: SIM_GROUP,
            Description: 'Launching a new EC2 instance.  Status Reason: launch failed',
            Cause: 'a difference between desired and actual capacity',
            StartTime: new Date(this.o.clock.now()),
            StatusCode: 'Failed',
            StatusMessage: 'We currently do not have sufficient capacity (InsufficientInstanceCapacity).',
            Progress: 100,
          });
          g.activities.length = Math.min(g.activities.length, 100);
          g.retryScheduled = true;
          this.o.clock.setTimeout(() => {
            g.retryScheduled = false;
            this.reconcileGroup();
          }, this.o.asgRetryMs);
          return;
        }
        const v = this.latest();
        const tags = new Map<string, string>();
        for (const spec of (v.data.TagSpecifications as {
          ResourceType: string;
          Tags: { Key: string; Value: string }[];
        }[]) ?? [])
          if (spec.ResourceType === 'instance') for (const t of spec.Tags) tags.set(t.Key, t.Value);
        tags.set('aws:autoscaling:groupName', SIM_GROUP);
        tags.set('aws:ec2launchtemplate:id', TEMPLATE_ID);
        tags.set('aws:ec2launchtemplate:version', String(v.number));
        const subnet = SIM_SUBNETS[g.subnet++ % SIM_SUBNETS.length] as string;
        const instance = this.launch({
          type: String(v.data.InstanceType ?? 't3.micro'),
          subnet,
          spot: false,
          tags,
          clientToken: `fleet-sim-${this.seq}-0`,
          group: true,
        });
        g.members.add(instance);
      }
    }, this.o.asgLaunchDelayMs);
  }
}

function profileArn(name: string): string {
  return name.startsWith('arn:') ? name : `arn:aws:iam::123456789012:instance-profile/${name}`;
}
