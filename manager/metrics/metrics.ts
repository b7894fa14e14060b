/**
 * Prometheus metrics for the fleet, with the families fleeting/taskscaler users already graph:
 * instances by state, leases by state, desired and max instances, provider operations and their
 * failures, and histograms of creation, readiness, acquire wait and instance lifetime. A private
 * registry (not prom-client's global one) so tests and the simulator can make as many as they like.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { FleetGauges, FleetObserver, InstanceRecord } from '../fleet/fleet.js';
import { INSTANCE_STATES, type InstanceState } from '../fleet/states.js';
import type { LaunchFailure, Provider } from '../providers/provider.js';

/** What the gauges read at scrape time; the Fleet satisfies it. */
export interface GaugeSource {
  gauges(): FleetGauges;
}

const SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600];
const LIFETIME_BUCKETS = [60, 300, 600, 1800, 3600, 7200, 14400, 21600, 43200, 86400];

export class FleetMetrics implements FleetObserver {
  readonly registry = new Registry();
  private source: GaugeSource | undefined;
  private readonly operations: Counter<'operation'>;
  private readonly failures: Counter<'operation' | 'kind'>;
  private readonly creation: Histogram;
  private readonly readiness: Histogram;
  private readonly acquireWait: Histogram<'source'>;
  private readonly lifetime: Histogram;
  private readonly acquireFailures: Counter<'code'>;
  private readonly reapedTotal: Counter;
  private readonly launchedTotal: Counter;

  constructor(options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'runner_fleet_' });
    const self = this;
    new Gauge({
      name: 'runner_fleet_instances',
      help: 'Instances this manager owns, by life-cycle state',
      labelNames: ['state'],
      registers,
      collect() {
        const g = self.source?.gauges();
        for (const state of INSTANCE_STATES) this.set({ state }, g?.byState[state] ?? 0);
      },
    });
    new Gauge({
      name: 'runner_fleet_leases',
      help: 'Job leases by state: acquired (running on an instance) or waiting (queued for one)',
      labelNames: ['state'],
      registers,
      collect() {
        const g = self.source?.gauges();
        this.set({ state: 'acquired' }, g?.byState.leased ?? 0);
        this.set({ state: 'waiting' }, g?.waiting ?? 0);
      },
    });
    const simple = (name: string, help: string, read: (g: ReturnType<GaugeSource['gauges']>) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const g = self.source?.gauges();
          this.set(g ? read(g) : 0);
        },
      });
    simple('runner_fleet_desired_instances', 'Instances the last scaling decision wanted', (g) => g.desired);
    simple('runner_fleet_max_instances', 'max_instances in effect', (g) => g.maxInstances);
    simple(
      'runner_fleet_idle_target',
      'Idle job slots the pool aims for (schedule, scale factor, adaptive)',
      (g) => g.idleTarget,
    );
    simple(
      'runner_fleet_launching_instances',
      'Instances asked for whose launch call has not returned',
      (g) => g.launching,
    );
    simple('runner_fleet_draining', '1 while the manager is draining', (g) => (g.draining ? 1 : 0));
    simple(
      'runner_fleet_foreign_instances',
      "Instances carrying this manager's tags that it did not launch (provenance failed); never used nor terminated",
      (g) => g.foreign,
    );
    new Gauge({
      name: 'runner_fleet_stuck_instances',
      help: 'Instances that stayed in their state well past the deadline for it (readiness, max_job_lifetime, a terminate that keeps failing), by state',
      labelNames: ['state'],
      registers,
      collect() {
        const g = self.source?.gauges();
        // Every state, zeros included: an alert on the sum must see 0, not an absent series.
        for (const state of INSTANCE_STATES) this.set({ state }, g?.stuck[state] ?? 0);
      },
    });
    this.operations = new Counter({
      name: 'runner_fleet_provider_operations_total',
      help: 'Provider calls by operation (list, launch, terminate, set_tags, check_ready, connect_info, prepare_lease, end_lease)',
      labelNames: ['operation'],
      registers,
    });
    this.failures = new Counter({
      name: 'runner_fleet_provider_operation_failures_total',
      help: 'Failed provider calls and partial launch failures, by operation and kind (error code)',
      labelNames: ['operation', 'kind'],
      registers,
    });
    this.launchedTotal = new Counter({
      name: 'runner_fleet_instances_launched_total',
      help: 'Instances launched',
      registers,
    });
    this.creation = new Histogram({
      name: 'runner_fleet_instance_creation_seconds',
      help: 'Duration of launch calls',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.readiness = new Histogram({
      name: 'runner_fleet_instance_readiness_seconds',
      help: 'Time from launch until the instance was ready for a job',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.acquireWait = new Histogram({
      name: 'runner_fleet_acquire_wait_seconds',
      help: 'How long a job waited for its instance; source is idle (warm pool) or waited (queued)',
      labelNames: ['source'],
      buckets: [0, ...SECONDS_BUCKETS],
      registers,
    });
    this.lifetime = new Histogram({
      name: 'runner_fleet_instance_lifetime_seconds',
      help: 'Time from launch until the instance was terminated or vanished',
      buckets: LIFETIME_BUCKETS,
      registers,
    });
    this.acquireFailures = new Counter({
      name: 'runner_fleet_acquire_failures_total',
      help: 'Acquires that ended without an instance, by code (timeout, draining, canceled, provider, stopping)',
      labelNames: ['code'],
      registers,
    });
    this.reapedTotal = new Counter({
      name: 'runner_fleet_orphans_reaped_total',
      help: 'Orphaned instances terminated after the two-phase re-check',
      registers,
    });
  }

  attach(source: GaugeSource): void {
    this.source = source;
  }

  operation(operation: string, error?: unknown): void {
    this.operations.inc({ operation });
    if (error !== undefined) this.failures.inc({ operation, kind: errorKind(error) });
  }

  // FleetObserver
  instanceState(instance: InstanceRecord, _from: InstanceState | undefined, now: number): void {
    if (instance.state === 'terminated') this.lifetime.observe(Math.max(0, now - instance.createdAt) / 1000);
  }

  launched(_requested: number, launched: number, failures: readonly LaunchFailure[], callMs: number): void {
    this.creation.observe(callMs / 1000);
    this.launchedTotal.inc(launched);
    for (const f of failures) this.failures.inc({ operation: 'launch', kind: f.code }, f.count);
  }

  ready(_instance: InstanceRecord, readyMs: number): void {
    this.readiness.observe(readyMs / 1000);
  }

  acquired(waitMs: number, fromIdle: boolean): void {
    this.acquireWait.observe({ source: fromIdle ? 'idle' : 'waited' }, waitMs / 1000);
  }

  acquireFailed(code: string): void {
    this.acquireFailures.inc({ code });
  }

  reaped(): void {
    this.reapedTotal.inc();
  }
}

function errorKind(error: unknown): string {
  const e = error as { code?: unknown; name?: unknown };
  const kind = typeof e?.code === 'string' ? e.code : typeof e?.name === 'string' ? e.name : 'error';
  // Label values must stay a small set: cut anything that looks free-form.
  return /^[A-Za-z0-9_.-]{1,64}$/.test(kind) ? kind : 'error';
}

const OPERATION_NAMES: Record<string, string> = {
  list: 'list',
  launch: 'launch',
  terminate: 'terminate',
  setTags: 'set_tags',
  checkReady: 'check_ready',
  connectInfo: 'connect_info',
  prepareLease: 'prepare_lease',
  endLease: 'end_lease',
};

/** The provider with every call counted (and failures by kind), without changing what it does. */
export function instrumentProvider(
  provider: Provider,
  count: (operation: string, error?: unknown) => void,
): Provider {
  return new Proxy(provider, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      const operation = typeof property === 'string' ? OPERATION_NAMES[property] : undefined;
      if (!operation || typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        try {
          const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          count(operation);
          return result;
        } catch (error) {
          count(operation, error);
          throw error;
        }
      };
    },
  });
}
