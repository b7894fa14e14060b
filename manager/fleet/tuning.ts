/** Config → the fleet's tuning, in one place (the daemon at start, and again on SIGHUP). */
import type { Config } from '../config/schema.js';
import type { FleetTuning } from './fleet.js';

export function fleetTuningFrom(config: Config): FleetTuning {
  const pool = config.pool;
  return {
    policy: {
      idleCount: pool.idle_count,
      idleTimeMs: pool.idle_time,
      scaleFactor: pool.scale_factor,
      scaleFactorLimit: pool.scale_factor_limit,
      maxInstances: pool.max_instances,
      maxInstanceLifetimeMs: pool.max_instance_lifetime,
      schedules: pool.policy.map((block) => ({
        periods: block.periods,
        timezone: block.timezone,
        idleCount: block.idle_count,
        idleTimeMs: block.idle_time,
        scaleFactor: block.scale_factor,
        scaleFactorLimit: block.scale_factor_limit,
      })),
      adaptive: {
        enabled: pool.adaptive.enabled,
        windowMs: pool.adaptive.window,
        leadTimeMs: pool.adaptive.lead_time,
        headroom: pool.adaptive.headroom,
        maxIdle: pool.adaptive.max_idle,
      },
      throttle: {
        limitPerSecond: pool.scale_throttle.limit,
        burst: pool.scale_throttle.burst > 0 ? pool.scale_throttle.burst : pool.max_instances,
      },
    },
    maxUseCount: pool.max_use_count,
    acquireTimeoutMs: pool.instance_acquire_timeout,
    readyTimeoutMs: pool.instance_ready_timeout,
    reconcileIntervalMs: pool.reconcile_interval,
    reconcileFastIntervalMs: pool.reconcile_interval_fast,
    reap: {
      bootGraceMs: pool.orphan_boot_grace,
      maxJobLifetimeMs: pool.max_job_lifetime,
      recheckAfterMs: pool.orphan_recheck,
    },
    jobCheckIntervalMs: pool.job_check_interval,
  };
}
