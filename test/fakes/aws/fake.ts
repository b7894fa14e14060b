// The wire-level AWS fake: one HTTP server on 127.0.0.1 that answers unmodified AWS SDK v3 clients
// (EC2, Auto Scaling, SSM, STS, S3 HeadBucket) pointed at it with `endpoint`, plus the knobs tests
// use to inject faults and inspect what the provider did. See README.md for the tour.

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ASG_XMLNS, asgActions, queryErrorBody, queryResponse } from './autoscaling.js';
import type { ClockMode } from './clock.js';
import { handleControl } from './control.js';
import { ec2Actions, ec2ErrorBody, ec2Response } from './ec2.js';
import { AwsError } from './errors.js';
import { decodeForm } from './query.js';
import { addDocumentContent, putParameterValue, ssmActions, stopCommands } from './ssm.js';
import { STS_XMLNS, stsActions } from './sts.js';
import {
  type AsgActivity,
  type AsgTag,
  type AutoScalingGroup,
  type Backing,
  type CapacityRule,
  type FakeInstance,
  type LaunchTemplateData,
  type MixedInstancesPolicy,
  type SsmParameter,
  type Subnet,
  type Timing,
  World,
  type WorldOptions,
} from './world.js';

export { DEFAULT_SUBNETS } from './world.js';
export type { Backing, CapacityRule, FakeInstance, LaunchTemplateData, Subnet, Timing };

export type Service = 'ec2' | 'autoscaling' | 'ssm' | 'sts' | 's3';

export interface CallRecord {
  seq: number;
  /** Wall-clock ms. */
  at: number;
  service: Service;
  action: string;
  /** Flattened request parameters (query keys, or top-level JSON keys), secrets redacted. */
  params: Record<string, string>;
  status: number;
  /** The error code answered, if any (including injected throttling). */
  error?: string;
  /**
   * The IAM actions AWS authorizes for this call: the action itself (`ec2:RunInstances`; S3's
   * HeadBucket is `s3:ListBucket`) plus what the parameters imply (`ec2:CreateTags` for tags on
   * create, `iam:PassRole` for an instance profile).
   */
  iamActions: string[];
}

export interface AwsFakeOptions extends WorldOptions {
  /** Port on 127.0.0.1; default 0 (random). */
  port?: number;
  clock?: ClockMode;
  /** Largest request body accepted, in bytes. */
  maxBodyBytes?: number;
}

export interface AutoScalingGroupSeed {
  name: string;
  minSize?: number;
  maxSize: number;
  desiredCapacity?: number;
  launchTemplate?: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string };
  mixedInstancesPolicy?: MixedInstancesPolicy;
  subnetIds?: string[];
  tags?: AsgTag[];
  newInstancesProtectedFromScaleIn?: boolean;
  suspendedProcesses?: string[];
}

export type VanishCause = 'spot' | 'shutdown' | 'external';

const REDACTED = '<redacted>';
const MAX_CALL_LOG = 10_000;
const XML = 'text/xml;charset=UTF-8';

interface Throttle {
  count: number;
  /** Wall-clock ms until which every call is throttled. */
  until: number;
}

interface InjectedFailure {
  code: string;
  message: string;
  status: number;
  count: number;
}

export class AwsFake {
  readonly world: World;
  private server: http.Server;
  private log: CallRecord[] = [];
  private seq = 0;
  private throttles = new Map<string, Throttle>();
  private failures = new Map<string, InjectedFailure[]>();
  private latency = new Map<string, number>();
  private answerDelay = new Map<string, number>();
  private denied = new Set<string>();
  private maxBodyBytes: number;
  private closed = false;

  private constructor(options: AwsFakeOptions) {
    this.world = new World(options);
    this.maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`aws fake internal error: ${err instanceof Error ? err.stack : String(err)}`);
        } else {
          res.destroy();
        }
      });
    });
  }

  static async start(options: AwsFakeOptions = {}): Promise<AwsFake> {
    const fake = new AwsFake(options);
    await new Promise<void>((resolve, reject) => {
      fake.server.once('error', reject);
      fake.server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    return fake;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Spread into any SDK client's constructor: `new EC2Client({ ...fake.clientConfig() })`. */
  clientConfig(): {
    endpoint: string;
    region: string;
    credentials: { accessKeyId: string; secretAccessKey: string };
  } {
    return {
      endpoint: this.url,
      region: this.world.region,
      credentials: { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret' },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.world.clock.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    stopCommands(this.world);
    await this.world.closeBackings();
  }

  // ------------------------------------------------------------------ seeding

  addLaunchTemplate(
    name: string,
    data: LaunchTemplateData | LaunchTemplateData[],
    defaultVersion = 1,
  ): { LaunchTemplateId: string; LaunchTemplateName: string } {
    const t = this.world.addLaunchTemplate(name, Array.isArray(data) ? data : [data], defaultVersion);
    return { LaunchTemplateId: t.LaunchTemplateId, LaunchTemplateName: t.LaunchTemplateName };
  }

  addAutoScalingGroup(seed: AutoScalingGroupSeed): void {
    if (!seed.launchTemplate && !seed.mixedInstancesPolicy) {
      throw new Error('aws fake: an Auto Scaling group needs launchTemplate or mixedInstancesPolicy');
    }
    const g: AutoScalingGroup = {
      AutoScalingGroupName: seed.name,
      AutoScalingGroupARN: `arn:aws:autoscaling:${this.world.region}:${this.world.accountId}:autoScalingGroup:${randomUUID()}:autoScalingGroupName/${seed.name}`,
      MinSize: seed.minSize ?? 0,
      MaxSize: seed.maxSize,
      DesiredCapacity: seed.desiredCapacity ?? seed.minSize ?? 0,
      DefaultCooldown: 300,
      HealthCheckType: 'EC2',
      HealthCheckGracePeriod: 300,
      CreatedTime: this.world.now(),
      LaunchTemplate: seed.launchTemplate,
      MixedInstancesPolicy: seed.mixedInstancesPolicy,
      subnetIds: seed.subnetIds ?? this.world.subnets.map((s) => s.subnetId),
      Tags: seed.tags ?? [],
      NewInstancesProtectedFromScaleIn: seed.newInstancesProtectedFromScaleIn ?? false,
      SuspendedProcesses: seed.suspendedProcesses ?? [],
      TerminationPolicies: ['Default'],
      instances: [],
      activities: [],
      retryScheduled: false,
    };
    this.world.addGroup(g);
  }

  putParameter(name: string, value: string, type: SsmParameter['Type'] = 'String'): void {
    putParameterValue(this.world, name, value, type, true);
  }

  /** An SSM Command document (its content as CloudFormation gets it); SendCommand runs it here. */
  addDocument(name: string, content: unknown): void {
    addDocumentContent(this.world, name, content);
  }

  addBucket(name: string): void {
    this.world.buckets.add(name);
  }

  setCallerIdentity(identity: { Account?: string; Arn?: string; UserId?: string }): void {
    Object.assign(this.world.callerIdentity, identity);
  }

  setBacking(backing: Backing | undefined): void {
    this.world.backing = backing;
  }

  // ------------------------------------------------------------------ inspection

  /** Snapshots of every instance the fake still remembers (including terminated ones in retention). */
  instances(): FakeInstance[] {
    return [...this.world.instances.values()].sort((a, b) => a.seq - b.seq).map((i) => structuredClone(i));
  }

  instance(id: string): FakeInstance | undefined {
    const i = this.world.instances.get(id);
    return i ? structuredClone(i) : undefined;
  }

  /** The user data an instance was launched with, decoded from base64 (the call log redacts it). */
  userData(id: string): string | undefined {
    const raw = this.world.userData.get(id);
    return raw === undefined ? undefined : Buffer.from(raw, 'base64').toString('utf8');
  }

  /** Where the instance's backing sshd listens, once it is running. */
  endpoint(id: string): { host: string; port: number } | undefined {
    const i = this.world.instances.get(id);
    if (!i || i.backingPort === undefined) return undefined;
    return { host: i.PrivateIpAddress, port: i.backingPort };
  }

  group(name: string):
    | (Omit<AutoScalingGroup, 'instances'> & {
        instances: { InstanceId: string; ProtectedFromScaleIn: boolean }[];
      })
    | undefined {
    const g = this.world.groups.get(name);
    return g ? structuredClone(g) : undefined;
  }

  activities(groupName: string): AsgActivity[] {
    return structuredClone(this.world.groups.get(groupName)?.activities ?? []);
  }

  parameter(name: string): SsmParameter | undefined {
    const p = this.world.parameters.get(name);
    return p ? structuredClone(p) : undefined;
  }

  // ------------------------------------------------------------------ call log

  calls(action?: string): CallRecord[] {
    return structuredClone(action ? this.log.filter((c) => c.action === action) : this.log);
  }

  callCount(action: string, opts: { includeErrors?: boolean } = {}): number {
    return this.log.filter(
      (c) => c.action === action && (opts.includeErrors !== false || c.error === undefined),
    ).length;
  }

  clearCalls(): void {
    this.log = [];
  }

  // ------------------------------------------------------------------ faults and timing

  /**
   * Throttles `action` (or '*' for every action): the next `count` calls, and/or every call for
   * `forMs` wall-clock milliseconds. EC2 answers `RequestLimitExceeded` (HTTP 503), Auto Scaling
   * and STS `Throttling` (400), SSM `ThrottlingException` (400), as AWS does.
   */
  throttle(action: string, opts: { count?: number; forMs?: number } = { count: 1 }): void {
    this.throttles.set(action, {
      count: opts.count ?? 0,
      until: opts.forMs ? Date.now() + opts.forMs : 0,
    });
  }

  /** Answers the next `count` calls of `action` with an arbitrary error. */
  failNext(action: string, error: { code: string; message?: string; status?: number; count?: number }): void {
    const list = this.failures.get(action) ?? [];
    list.push({
      code: error.code,
      message: error.message ?? `Injected ${error.code}`,
      status: error.status ?? 400,
      count: error.count ?? 1,
    });
    this.failures.set(action, list);
  }

  /**
   * Refuses launches that match every given field (instance types, subnets, zones, market) with
   * `InsufficientInstanceCapacity` (or `code`) once `available` launches have been used up.
   * Applies to RunInstances (error), CreateFleet (per-override `Errors`) and Auto Scaling launches.
   */
  insufficientCapacity(rule: CapacityRule = {}): void {
    this.world.capacityRules.push({ ...rule });
  }

  /** The next `count` launched instances (optionally of these types) stay `pending` forever. */
  stuckPending(opts: { count?: number; instanceTypes?: string[] } = {}): void {
    this.world.bootFaults.push({
      kind: 'stuck-pending',
      remaining: opts.count ?? 1,
      instanceTypes: opts.instanceTypes,
    });
  }

  /** The next `count` launched instances go from `pending` to `terminated` (Server.InternalError). */
  failBoot(opts: { count?: number; instanceTypes?: string[] } = {}): void {
    this.world.bootFaults.push({
      kind: 'fail',
      remaining: opts.count ?? 1,
      instanceTypes: opts.instanceTypes,
    });
  }

  /**
   * Makes an instance go away underneath the provider. `spot`: reclaimed, straight to terminated
   * with `Server.SpotInstanceTermination`; `shutdown`: the OS powered off (dead-man switch), which
   * terminates or stops per InstanceInitiatedShutdownBehavior; `external`: someone else terminated it.
   */
  vanish(id: string, cause: VanishCause = 'spot'): void {
    const inst = this.world.instances.get(id);
    if (!inst) throw new Error(`aws fake: no instance ${id}`);
    if (cause === 'spot') {
      this.world.setTerminated(inst, {
        Code: 'Server.SpotInstanceTermination',
        Message: 'Server.SpotInstanceTermination: Spot instance termination',
      });
    } else if (cause === 'shutdown') {
      if (inst.InstanceInitiatedShutdownBehavior === 'terminate') {
        this.world.setTerminated(inst, {
          Code: 'Client.InstanceInitiatedShutdown',
          Message: 'Client.InstanceInitiatedShutdown: Instance initiated shutdown',
        });
      } else {
        this.world.setStopped(inst);
      }
    } else {
      this.world.terminate(inst);
    }
    this.world.clock.runDue();
  }

  setTiming(timing: Partial<Timing>): void {
    Object.assign(this.world.timing, timing);
  }

  /**
   * Holds one action's answers for `ms` after the call took effect: the launch happened, the
   * caller has not heard of it yet (the window a SIGKILL between a launch and its bookkeeping hits).
   */
  setAnswerDelay(ms: number, action: string): void {
    if (ms <= 0) this.answerDelay.delete(action);
    else this.answerDelay.set(action, ms);
  }

  /** Adds wall-clock latency to every answer (or to one action's answers). */
  setLatency(ms: number, action = '*'): void {
    if (ms <= 0) this.latency.delete(action);
    else this.latency.set(action, ms);
  }

  /** Answers these actions (dry run or not) with `UnauthorizedOperation` / `AccessDenied`. */
  deny(...actions: string[]): void {
    for (const a of actions) this.denied.add(a);
  }

  allow(...actions: string[]): void {
    for (const a of actions) this.denied.delete(a);
  }

  /** Page size for DescribeInstances calls without MaxResults (EC2 itself sends everything). */
  setDescribePageSize(n: number): void {
    this.world.describeDefaultPageSize = n;
  }

  clearFaults(): void {
    this.throttles.clear();
    this.failures.clear();
    this.latency.clear();
    this.answerDelay.clear();
    this.denied.clear();
    this.world.capacityRules = [];
    this.world.bootFaults = [];
  }

  /**
   * Virtual clock: moves time forward and fires due transitions. By default it then waits for the
   * backing hooks those transitions started (so `running` is reached when sshd is up); pass
   * `{ settle: false }` to look at an instance while its hook is still in progress.
   */
  async advance(ms: number, opts: { settle?: boolean } = {}): Promise<void> {
    this.world.clock.advance(ms);
    if (opts.settle === false) return;
    await this.world.settle();
    this.world.clock.runDue();
  }

  /** Waits for backing hooks (onRunning/onTerminated) started so far. */
  async settle(): Promise<void> {
    await this.world.settle();
  }

  /** Real clock: resolves when `predicate` holds, checking every 10 ms, or rejects after `timeoutMs`. */
  async waitFor(predicate: () => boolean, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error('aws fake: waitFor timed out');
      this.world.clock.runDue();
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  // ------------------------------------------------------------------ HTTP

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req, this.maxBodyBytes);
    if (body === undefined) {
      res.writeHead(413, { 'content-type': 'text/plain' });
      res.end('request body too large');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname.startsWith('/__fake/')) {
      await handleControl(this, req.method ?? 'GET', url.pathname.slice('/__fake/'.length), body, res);
      return;
    }
    this.world.clock.runDue();
    const requestId = randomUUID();
    const service = detectService(req, body);
    switch (service) {
      case 'ssm':
        return this.handleSsm(req, body, requestId, res);
      case 's3':
        return this.handleS3(req, url, requestId, res);
      case 'ec2':
      case 'autoscaling':
      case 'sts':
        return this.handleQuery(service, body, requestId, res);
      default:
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end('aws fake: cannot tell which service this request is for');
    }
  }

  private async handleQuery(
    service: 'ec2' | 'autoscaling' | 'sts',
    body: string,
    requestId: string,
    res: http.ServerResponse,
  ): Promise<void> {
    const { flat, tree } = decodeForm(body);
    const action = flat.Action ?? '';
    const record = this.record(service, action, redactQuery(flat));
    await this.delay(action);
    const send = (status: number, xml: string) => {
      record.status = status;
      res.writeHead(status, { 'content-type': XML, 'x-amzn-requestid': requestId });
      res.end(xml);
    };
    const fail = (err: AwsError) => {
      record.error = err.code;
      if (service === 'ec2') send(err.status, ec2ErrorBody(err, requestId));
      else send(err.status, queryErrorBody(service === 'sts' ? STS_XMLNS : ASG_XMLNS, err, requestId));
    };
    try {
      this.injected(service, action);
      if (service === 'ec2') {
        const handler = ec2Actions[action];
        if (!handler)
          throw new AwsError('InvalidAction', `The action ${action} is not valid for this web service.`);
        if (flat.DryRun === 'true') {
          throw new AwsError('DryRunOperation', 'Request would have succeeded, but DryRun flag is set.', 412);
        }
        const inner = handler(this.world, tree, flat);
        this.world.clock.runDue();
        const hold = this.answerDelay.get(action) ?? 0;
        if (hold > 0) await new Promise((r) => setTimeout(r, hold));
        send(200, ec2Response(action, requestId, inner));
      } else if (service === 'autoscaling') {
        const handler = asgActions[action];
        if (!handler)
          throw new AwsError('InvalidAction', `Could not find operation ${action} for version 2011-01-01`);
        const result = handler(this.world, tree);
        this.world.clock.runDue();
        send(200, queryResponse(ASG_XMLNS, action, requestId, result));
      } else {
        const handler = stsActions[action];
        if (!handler)
          throw new AwsError('InvalidAction', `Could not find operation ${action} for version 2011-06-15`);
        send(200, queryResponse(STS_XMLNS, action, requestId, handler(this.world)));
      }
    } catch (err) {
      if (!(err instanceof AwsError)) throw err;
      fail(err);
    }
  }

  private async handleSsm(
    req: http.IncomingMessage,
    body: string,
    requestId: string,
    res: http.ServerResponse,
  ): Promise<void> {
    const target = String(req.headers['x-amz-target'] ?? '');
    const action = target.startsWith('AmazonSSM.') ? target.slice('AmazonSSM.'.length) : target;
    let input: Record<string, unknown> = {};
    try {
      const parsed: unknown = body ? JSON.parse(body) : {};
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed))
        input = parsed as Record<string, unknown>;
    } catch {
      // answered below as a serialization error
    }
    const params: Record<string, string> = {};
    for (const [k, v] of Object.entries(input)) params[k] = typeof v === 'string' ? v : JSON.stringify(v);
    // Parameter values are where secrets (runner tokens) live: never in the log.
    if ('Value' in params) params.Value = REDACTED;
    const record = this.record('ssm', action, params);
    await this.delay(action);
    const send = (status: number, json: unknown) => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': requestId });
      res.end(JSON.stringify(json));
    };
    try {
      this.injected('ssm', action);
      const handler = ssmActions[action];
      if (!handler) throw new AwsError('UnknownOperationException', `Unknown operation ${action}`);
      send(200, handler(this.world, input));
    } catch (err) {
      if (!(err instanceof AwsError)) throw err;
      record.error = err.code;
      send(err.status, { __type: err.code, message: err.message });
    }
  }

  private async handleS3(
    req: http.IncomingMessage,
    url: URL,
    requestId: string,
    res: http.ServerResponse,
  ): Promise<void> {
    const bucket = decodeURIComponent(url.pathname.split('/')[1] ?? '');
    const action =
      req.method === 'HEAD' && url.pathname.replace(/\/$/, '') === `/${bucket}`
        ? 'HeadBucket'
        : `${req.method} ${url.pathname}`;
    const record = this.record('s3', action, { Bucket: bucket });
    await this.delay(action);
    const headers = { 'x-amz-request-id': requestId, 'x-amz-id-2': requestId };
    const send = (status: number, extra: Record<string, string> = {}, text = '') => {
      record.status = status;
      res.writeHead(status, { ...headers, ...extra });
      res.end(req.method === 'HEAD' ? undefined : text);
    };
    if (action !== 'HeadBucket') {
      record.error = 'NotImplemented';
      send(
        501,
        { 'content-type': 'application/xml' },
        '<Error><Code>NotImplemented</Code><Message>The aws fake only implements HeadBucket</Message></Error>',
      );
      return;
    }
    try {
      this.injected('s3', action);
    } catch (err) {
      if (!(err instanceof AwsError)) throw err;
      record.error = err.code;
      send(err.status);
      return;
    }
    // HeadBucket answers carry no body: the SDK names the error after the status (NotFound, Forbidden).
    if (!this.world.buckets.has(bucket)) {
      record.error = 'NotFound';
      send(404);
      return;
    }
    send(200, { 'x-amz-bucket-region': this.world.region });
  }

  private record(service: Service, action: string, params: Record<string, string>): CallRecord {
    const rec: CallRecord = {
      seq: this.seq++,
      at: Date.now(),
      service,
      action,
      params,
      status: 0,
      iamActions: iamActionsOf(service, action, params),
    };
    this.log.push(rec);
    if (this.log.length > MAX_CALL_LOG) this.log.splice(0, this.log.length - MAX_CALL_LOG);
    return rec;
  }

  private async delay(action: string): Promise<void> {
    const ms = this.latency.get(action) ?? this.latency.get('*') ?? 0;
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
  }

  /** Throws the injected fault that applies to this call, if any: deny, throttle, failNext. */
  private injected(service: Service, action: string): void {
    if (this.denied.has(action)) {
      if (service === 'ec2') {
        throw new AwsError(
          'UnauthorizedOperation',
          `You are not authorized to perform this operation. User: ${this.world.callerIdentity.Arn} is not authorized to perform: ec2:${action} because no identity-based policy allows the ec2:${action} action.`,
          403,
        );
      }
      throw new AwsError(
        service === 'ssm' ? 'AccessDeniedException' : 'AccessDenied',
        `User: ${this.world.callerIdentity.Arn} is not authorized to perform: ${service}:${action}`,
        403,
      );
    }
    for (const key of [action, '*']) {
      const t = this.throttles.get(key);
      if (!t) continue;
      const inBurst = t.until > Date.now();
      if (!inBurst && t.count <= 0) {
        this.throttles.delete(key);
        continue;
      }
      if (!inBurst) t.count--;
      if (service === 'ec2') throw new AwsError('RequestLimitExceeded', 'Request limit exceeded.', 503);
      if (service === 'ssm') throw new AwsError('ThrottlingException', 'Rate exceeded', 400);
      if (service === 's3') throw new AwsError('SlowDown', 'Please reduce your request rate.', 503);
      throw new AwsError('Throttling', 'Rate exceeded', 400);
    }
    const queue = this.failures.get(action);
    const f = queue?.[0];
    if (queue && f) {
      if (--f.count <= 0) queue.shift();
      throw new AwsError(f.code, f.message, f.status);
    }
  }
}

function redactQuery(flat: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(flat))
    out[k] = k === 'UserData' || k.endsWith('.UserData') ? REDACTED : v;
  return out;
}

/** The SigV4 credential scope names the service; target header and API version are fallbacks. */
export function detectService(req: http.IncomingMessage, body: string): Service | undefined {
  const auth = String(req.headers.authorization ?? '');
  const scope = /Credential=[^/]+\/\d{8}\/[^/]+\/([^/]+)\/aws4_request/.exec(auth)?.[1];
  if (scope === 'ec2' || scope === 'autoscaling' || scope === 'ssm' || scope === 'sts' || scope === 's3')
    return scope;
  const target = String(req.headers['x-amz-target'] ?? '');
  if (target.startsWith('AmazonSSM.')) return 'ssm';
  const version = new URLSearchParams(body).get('Version');
  if (version === '2016-11-15') return 'ec2';
  if (version === '2011-01-01') return 'autoscaling';
  if (version === '2011-06-15') return 'sts';
  if (req.method === 'HEAD') return 's3';
  return undefined;
}

async function readBody(req: http.IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > limit) return undefined;
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** What IAM checks for one call (see CallRecord.iamActions). */
export function iamActionsOf(service: Service, action: string, params: Record<string, string>): string[] {
  if (service === 's3') return [action === 'HeadBucket' ? 's3:ListBucket' : `s3:${action}`];
  const actions = [`${service}:${action}`];
  const keys = Object.keys(params);
  // Tags in the launch request are authorized as ec2:CreateTags (with ec2:CreateAction).
  if (
    service === 'ec2' &&
    action !== 'CreateTags' &&
    keys.some((k) => /^TagSpecification\.\d+\.Tag\./.test(k))
  )
    actions.push('ec2:CreateTags');
  if (service === 'ec2' && keys.some((k) => /^IamInstanceProfile\.(Arn|Name)$/.test(k)))
    actions.push('iam:PassRole');
  return actions;
}
