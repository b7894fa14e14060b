/**
 * A provider that behaves like EC2 in virtual time: instances boot after a random delay, calls
 * take time, a token bucket throttles the API (RequestLimitExceeded), launches sometimes lack
 * capacity, and spot instances get interrupted. It counts every call the way AWS would bill them
 * against the API rate limits: DescribeInstances pages, RunInstances, TerminateInstances (1,000
 * ids per call), CreateTags, AssociateIamInstanceProfile. Readiness probes and connect info are
 * not AWS calls (SSH probe; addresses known from the launch/listing) and are counted apart.
 */
import type {
  ConnectInfo,
  LaunchRequest,
  LaunchResult,
  LeaseContext,
  Provider,
  ProviderInstance,
  ReadyCheck,
  Tags,
} from '../providers/provider.js';
import { exponential, logNormal, type Rng } from './random.js';
import type { VirtualClock } from './virtual-clock.js';

export interface SimProviderOptions {
  readonly clock: VirtualClock;
  readonly rng: Rng;
  /** Boot-to-ready time: log-normal median and shape. */
  readonly bootMedianMs: number;
  readonly bootSigma: number;
  /** Median latency of an API call (launch calls take three times as long). */
  readonly apiLatencyMs: number;
  /** AWS-style request token bucket: sustained calls per second and burst. */
  readonly apiRatePerSecond: number;
  readonly apiBurst: number;
  /** Probability that a launch call cannot place part of its instances. */
  readonly capacityErrorRate: number;
  /** Spot interruptions per instance-hour (0 = on-demand only). */
  readonly interruptionsPerHour: number;
  /** Called when an instance is interrupted (the job on it, if any, fails as a system failure). */
  readonly onInterrupt?: (id: string) => void;
}

interface SimInstance {
  readonly id: string;
  tags: Record<string, string>;
  readonly launchedAt: number;
  readonly readyAt: number;
  goneAt?: number;
}

/**
 * EC2 lists terminated instances for about an hour, but the listing filters on
 * instance-state-name (pending, running, shutting-down, stopping, stopped): at 10,000 jobs an hour,
 * listing the terminated ones too would mean ten pages per tick. Shutting-down lasts about a minute.
 */
const GONE_VISIBLE_MS = 60_000;
const PAGE_SIZE = 1000;

export class SimProvider implements Provider {
  readonly name = 'sim';
  readonly calls: Record<string, number> = {};
  readonly errors: Record<string, number> = {};
  interruptions = 0;
  launched = 0;
  private readonly instances = new Map<string, SimInstance>();
  private tokens: number;
  private tokensAt: number;
  private nextId = 1;

  constructor(private readonly o: SimProviderOptions) {
    this.tokens = o.apiBurst;
    this.tokensAt = o.clock.now();
  }

  /** AWS API calls in total (what the ≤ 3 per job target is about). */
  get awsCalls(): number {
    let n = 0;
    for (const [kind, count] of Object.entries(this.calls)) if (AWS_CALLS.has(kind)) n += count;
    return n;
  }

  async list(): Promise<ProviderInstance[]> {
    const now = this.o.clock.now();
    const visible: ProviderInstance[] = [];
    for (const i of this.instances.values()) {
      if (i.goneAt !== undefined && now - i.goneAt > GONE_VISIBLE_MS) {
        this.instances.delete(i.id);
        continue;
      }
      visible.push(this.view(i, now));
    }
    const pages = Math.max(1, Math.ceil(visible.length / PAGE_SIZE));
    for (let p = 0; p < pages; p++) await this.call('DescribeInstances');
    return visible;
  }

  async launch(request: LaunchRequest): Promise<LaunchResult> {
    await this.call('RunInstances', 3);
    let placed = request.count;
    const failures = [];
    if (this.o.rng() < this.o.capacityErrorRate) {
      placed = Math.floor(request.count * this.o.rng());
      failures.push({
        code: 'InsufficientInstanceCapacity',
        message: 'We currently do not have sufficient capacity in the Availability Zone you requested.',
        count: request.count - placed,
      });
      this.errors.InsufficientInstanceCapacity = (this.errors.InsufficientInstanceCapacity ?? 0) + 1;
    }
    const now = this.o.clock.now();
    const launched: ProviderInstance[] = [];
    for (let n = 0; n < placed; n++) {
      const id = `i-${(this.nextId++).toString(16).padStart(17, '0')}`;
      const instance: SimInstance = {
        id,
        tags: { ...request.tags },
        launchedAt: now,
        readyAt: now + logNormal(this.o.rng, this.o.bootMedianMs, this.o.bootSigma),
      };
      this.instances.set(id, instance);
      this.launched++;
      launched.push(this.view(instance, now));
      if (this.o.interruptionsPerHour > 0) {
        const after = exponential(this.o.rng, 3_600_000 / this.o.interruptionsPerHour);
        this.o.clock.setTimeout(() => this.interrupt(id), after);
      }
    }
    return { launched, failures };
  }

  async terminate(ids: readonly string[]): Promise<void> {
    for (let n = 0; n < Math.max(1, Math.ceil(ids.length / PAGE_SIZE)); n++)
      await this.call('TerminateInstances');
    const now = this.o.clock.now();
    for (const id of ids) {
      const instance = this.instances.get(id);
      if (instance && instance.goneAt === undefined) instance.goneAt = now;
    }
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    await this.call('CreateTags');
    const instance = this.instances.get(id);
    if (!instance || instance.goneAt !== undefined) throw new Error(`InvalidInstanceID.NotFound: ${id}`);
    for (const [k, v] of Object.entries(tags)) {
      if (v === '') delete instance.tags[k];
      else instance.tags[k] = v;
    }
  }

  async checkReady(id: string): Promise<ReadyCheck> {
    this.count('probe');
    await this.delay(20);
    const instance = this.instances.get(id);
    if (!instance || instance.goneAt !== undefined) return { ready: false, reason: 'instance is gone' };
    return this.o.clock.now() >= instance.readyAt
      ? { ready: true }
      : { ready: false, reason: 'still booting' };
  }

  async connectInfo(id: string): Promise<ConnectInfo> {
    this.count('connectInfo');
    return { kind: 'local', root: `/sim/${id}` };
  }

  async prepareLease(_id: string, lease: LeaseContext): Promise<void> {
    // Only a job that needs an instance profile costs a call.
    if (lease.instanceProfile) await this.call('AssociateIamInstanceProfile');
  }

  /** Ids of instances still alive, for tests. */
  alive(): string[] {
    return [...this.instances.values()].filter((i) => i.goneAt === undefined).map((i) => i.id);
  }

  private interrupt(id: string): void {
    const instance = this.instances.get(id);
    if (!instance || instance.goneAt !== undefined) return;
    instance.goneAt = this.o.clock.now();
    this.interruptions++;
    this.o.onInterrupt?.(id);
  }

  private view(i: SimInstance, now: number): ProviderInstance {
    return {
      id: i.id,
      status: i.goneAt !== undefined ? 'gone' : now >= i.readyAt ? 'running' : 'pending',
      tags: { ...i.tags },
      launchedAt: new Date(i.launchedAt),
      detail: { type: 'sim.large' },
    };
  }

  private count(kind: string): void {
    this.calls[kind] = (this.calls[kind] ?? 0) + 1;
  }

  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => this.o.clock.setTimeout(resolve, ms));
  }

  /** One API call: latency, then the request bucket decides whether it is throttled. */
  private async call(kind: string, latencyFactor = 1): Promise<void> {
    this.count(kind);
    await this.delay(logNormal(this.o.rng, this.o.apiLatencyMs * latencyFactor, 0.3));
    const now = this.o.clock.now();
    this.tokens = Math.min(
      this.o.apiBurst,
      this.tokens + ((now - this.tokensAt) * this.o.apiRatePerSecond) / 1000,
    );
    this.tokensAt = now;
    if (this.tokens < 1) {
      this.errors.RequestLimitExceeded = (this.errors.RequestLimitExceeded ?? 0) + 1;
      const error = new Error('Request limit exceeded.') as Error & { code: string };
      error.code = 'RequestLimitExceeded';
      throw error;
    }
    this.tokens -= 1;
  }
}

export const AWS_CALLS: ReadonlySet<string> = new Set([
  'DescribeInstances',
  'RunInstances',
  'TerminateInstances',
  'CreateTags',
  'AssociateIamInstanceProfile',
]);
