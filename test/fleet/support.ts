/** Fleet test doubles: an in-memory provider whose calls resolve at once, and a fleet factory. */
import { pino } from 'pino';
import type { FleetObserver, FleetTuning } from '../../manager/fleet/fleet.js';
import { Fleet } from '../../manager/fleet/fleet.js';
import type { JobChecker } from '../../manager/fleet/job-check.js';
import { type LeaseStore, MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import type { PoolPolicy } from '../../manager/fleet/policy.js';
import type {
  ConnectInfo,
  LaunchRequest,
  LaunchResult,
  Provider,
  ProviderInstance,
  ReadyCheck,
  Tags,
} from '../../manager/providers/provider.js';
import { TAG } from '../../manager/providers/tags.js';
import { VirtualClock } from '../../manager/simulator/virtual-clock.js';

export const MIN = 60_000;
export const TEST_LAUNCH_KEY = Buffer.alloc(32, 7);

interface MemInstance {
  id: string;
  tags: Record<string, string>;
  launchedAt: number;
  readyAt: number;
  gone: boolean;
  /** As EC2 records ClientToken: set at launch, never changed. */
  clientToken: string;
}

/** Instances in a Map; `bootMs` of virtual time until ready; every call is recorded. */
export class MemoryProvider implements Provider {
  readonly name = 'memory';
  readonly instances = new Map<string, MemInstance>();
  readonly calls: string[] = [];
  /** Ids passed to terminate, in order. */
  readonly terminated: string[] = [];
  /** When set, every call but prepareLease/endLease hangs: proves a path makes none. */
  hang = false;
  /** When set, a not-ready answer says the probe was free: probe again after this long. */
  freeProbeMs: number | undefined;
  onTerminate?: (ids: readonly string[]) => void;
  private next = 1;

  constructor(
    private readonly clock: VirtualClock,
    private readonly owner: { fleet: string; manager: string } = { fleet: 'test', manager: 'm1' },
    public bootMs = 30_000,
  ) {}

  private record(call: string): Promise<void> {
    this.calls.push(call);
    return this.hang ? new Promise(() => undefined) : Promise.resolve();
  }

  async list(): Promise<ProviderInstance[]> {
    await this.record('list');
    return [...this.instances.values()]
      .filter((i) => i.tags[TAG.fleet] === this.owner.fleet && i.tags[TAG.manager] === this.owner.manager)
      .map((i) => this.view(i));
  }

  async launch(request: LaunchRequest): Promise<LaunchResult> {
    await this.record('launch');
    const launched: ProviderInstance[] = [];
    for (let n = 0; n < request.count; n++) {
      const i: MemInstance = {
        id: `i-${this.next++}`,
        tags: { ...request.tags },
        launchedAt: this.clock.now(),
        readyAt: this.clock.now() + this.bootMs,
        gone: false,
        clientToken: request.count === 1 ? request.token : `${request.token}-${n}`,
      };
      this.instances.set(i.id, i);
      launched.push(this.view(i));
    }
    return { launched, failures: [] };
  }

  async terminate(ids: readonly string[]): Promise<void> {
    await this.record('terminate');
    this.onTerminate?.(ids);
    for (const id of ids) {
      const i = this.instances.get(id);
      if (i) i.gone = true;
      this.terminated.push(id);
    }
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    await this.record('setTags');
    const i = this.instances.get(id);
    if (!i) throw new Error(`no instance ${id}`);
    for (const [k, v] of Object.entries(tags)) {
      if (v === '') delete i.tags[k];
      else i.tags[k] = v;
    }
  }

  async checkReady(id: string): Promise<ReadyCheck> {
    await this.record('checkReady');
    const i = this.instances.get(id);
    if (!i || i.gone) return { ready: false, reason: 'gone' };
    if (this.clock.now() >= i.readyAt) return { ready: true };
    return this.freeProbeMs === undefined
      ? { ready: false, reason: 'booting' }
      : { ready: false, reason: 'port closed', retryInMs: this.freeProbeMs };
  }

  async connectInfo(id: string): Promise<ConnectInfo> {
    await this.record('connectInfo');
    return { kind: 'local', root: `/mem/${id}` };
  }

  alive(): string[] {
    return [...this.instances.values()].filter((i) => !i.gone).map((i) => i.id);
  }

  private view(i: MemInstance): ProviderInstance {
    return {
      id: i.id,
      status: i.gone ? 'gone' : this.clock.now() >= i.readyAt ? 'running' : 'pending',
      tags: { ...i.tags },
      launchedAt: new Date(i.launchedAt),
      clientToken: i.clientToken,
    };
  }
}

export function policy(overrides: Partial<PoolPolicy> = {}): PoolPolicy {
  return {
    idleCount: 0,
    idleTimeMs: 5 * MIN,
    scaleFactor: 0,
    scaleFactorLimit: 0,
    maxInstances: 20,
    maxInstanceLifetimeMs: 6 * 60 * MIN,
    ...overrides,
  };
}

export function tuning(overrides: Partial<FleetTuning> = {}, pool: Partial<PoolPolicy> = {}): FleetTuning {
  return {
    policy: policy(pool),
    maxUseCount: 1,
    acquireTimeoutMs: 15 * MIN,
    readyTimeoutMs: 10 * MIN,
    reconcileIntervalMs: 30_000,
    reconcileFastIntervalMs: 2_000,
    ...overrides,
  };
}

export function makeFleet(
  clock: VirtualClock,
  provider: Provider,
  t: FleetTuning,
  extra: {
    journal?: LeaseStore;
    jobChecker?: JobChecker;
    observer?: FleetObserver;
    managerId?: string;
    launchKey?: Buffer;
  } = {},
): { fleet: Fleet; journal: LeaseStore } {
  const journal = extra.journal ?? new MemoryLeaseStore();
  const fleet = new Fleet({
    provider,
    journal,
    log: pino({ level: 'silent' }),
    fleetName: 'test',
    managerId: extra.managerId ?? 'm1',
    tuning: t,
    clock,
    // One key for every fleet of a test, as the daemon keeps its key across restarts.
    launchKey: extra.launchKey ?? TEST_LAUNCH_KEY,
    ...(extra.jobChecker ? { jobChecker: extra.jobChecker } : {}),
    ...(extra.observer ? { observer: extra.observer } : {}),
  });
  return { fleet, journal };
}

export const job = (id: string, extra: { jobToken?: string } = {}) => ({ id, ...extra });
export const cred = { credentialClass: 'default', notes: [] };
export const noop = () => undefined;

export function startClock(): VirtualClock {
  return new VirtualClock(Date.parse('2024-06-03T08:00:00Z'));
}
