/**
 * The fleet's config keys, beside the code that reads them (schema.ts spreads them into [pool]
 * and adds [metrics]). Names follow gitlab-runner's `[runners.autoscaler]` where one exists.
 */
import { z } from 'zod';
import { duration } from '../config/zod-duration.js';
import { validatePeriod } from './policy.js';

const nonNegative = (fallback: number) => z.number().nonnegative().default(fallback);
const nonNegativeInt = (fallback: number) => z.number().int().nonnegative().default(fallback);

/** One `[[pool.policy]]` block: while one of its periods matches, its values replace [pool]'s. */
export const schedulePolicySchema = z
  .strictObject({
    /** Cron expressions (5 fields, or 6 with seconds); the block applies in any matching minute. */
    periods: z.array(z.string().min(1)).min(1).default(['* * * * *']),
    /** IANA time zone the periods are read in, e.g. "Europe/Berlin"; empty = the host's zone. */
    timezone: z.string().default(''),
    idle_count: nonNegativeInt(0),
    idle_time: duration('10m'),
    scale_factor: nonNegative(0),
    scale_factor_limit: nonNegativeInt(0),
  })
  .superRefine((block, ctx) => {
    if (block.timezone) {
      try {
        new Intl.DateTimeFormat('en', { timeZone: block.timezone });
      } catch {
        ctx.addIssue({
          code: 'custom',
          path: ['timezone'],
          message: `unknown time zone "${block.timezone}"`,
        });
        return;
      }
    }
    block.periods.forEach((period, index) => {
      const problem = validatePeriod(period, block.timezone);
      if (problem)
        ctx.addIssue({ code: 'custom', path: ['periods', index], message: `invalid cron period ${problem}` });
    });
  });

/** Keys added to [pool]. */
export const poolFleetKeys = {
  /** Extra idle capacity as a factor of the jobs running (taskscaler's scale_factor); 0 = off. */
  scale_factor: nonNegative(0),
  /** Cap on what scale_factor adds; 0 = no cap other than max_instances. */
  scale_factor_limit: nonNegativeInt(0),
  policy: z.array(schedulePolicySchema).default([]),
  /** Token bucket on launches, in instances: `limit` per second sustained, `burst` at once. */
  scale_throttle: z
    .strictObject({
      limit: nonNegative(100),
      /** 0 = max_instances. */
      burst: nonNegativeInt(0),
    })
    .prefault({}),
  /** Size the warm pool from the recent arrival rate (the schedule's idle_count stays the floor). */
  adaptive: z
    .strictObject({
      enabled: z.boolean().default(false),
      window: duration('30m'),
      /** Boot-to-ready time the pool must cover; "0" = the median observed by this daemon. */
      lead_time: duration('0'),
      headroom: z.number().nonnegative().max(10).default(2),
      /** 0 = max_instances. */
      max_idle: nonNegativeInt(0),
    })
    .prefault({}),
  /**
   * Terminate every instance of this manager when the daemon stops, leased ones too (their jobs
   * then fail as system failures and GitLab may retry them): run `runner-fleet drain --wait` first.
   */
  delete_instances_on_shutdown: z.boolean().default(false),
  /** An instance neither ready nor leased this long after launch is an orphan. */
  orphan_boot_grace: duration('15m'),
  /** A suspected orphan is terminated only if it is still one this long after it was marked. */
  orphan_recheck: duration('1m'),
  /** A lease older than this is over unless GitLab says its job still runs. */
  max_job_lifetime: duration('6h'),
  /** How often a lease's job is checked against GitLab (GET /api/v4/job with its job token). */
  job_check_interval: duration('5m'),
  /** Bound on one such check; a timeout counts as "still running". */
  job_check_timeout: duration('10s'),
};

export const metricsSchema = z
  .strictObject({
    /**
     * host:port for the Prometheus /metrics and /healthz endpoint; empty = off. Off by default so
     * that nothing listens on a port nobody asked for (and test daemons never collide on one).
     */
    listen: z
      .string()
      .default('')
      .refine((v) => v === '' || /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(v), {
        message: 'expected host:port, e.g. "127.0.0.1:9402", or "" for off',
      }),
  })
  .prefault({});
