import { hostname } from 'node:os';
import { z } from 'zod';
import { credentialsSectionSchema } from '../credentials/schema.js';
import { metricsSchema, poolFleetKeys } from '../fleet/config-schema.js';
import { cacheSchema, gitlabSchema, imageSchema, serviceSchema } from '../ops/config-schema.js';
import { awsConfigSchema } from '../providers/aws/config.js';
import { containerSchema } from './container-schema.js';
import { duration } from './zod-duration.js';

export { duration };

const positiveInt = (fallback: number) => z.number().int().positive().default(fallback);
const nonNegativeInt = (fallback: number) => z.number().int().nonnegative().default(fallback);

export const executorSchema = z
  .strictObject({
    /** builds_dir on the instance (gitlab-runner puts CI_PROJECT_DIR below it). */
    builds_dir: z.string().startsWith('/').default('/builds'),
    /** cache_dir on the instance. */
    cache_dir: z.string().startsWith('/').default('/cache'),
    /** After a cancel, how long the job's processes get between SIGTERM and SIGKILL. */
    kill_grace: duration('10s'),
    /** How long cleanup keeps retrying to reach a restarting daemon. */
    daemon_wait: duration('30s'),
  })
  .prefault({});

export const poolSchema = z
  .strictObject({
    max_instances: positiveInt(10),
    idle_count: nonNegativeInt(0),
    idle_time: duration('10m'),
    max_use_count: positiveInt(1),
    capacity_per_instance: z.literal(1).default(1),
    instance_acquire_timeout: duration('15m'),
    instance_ready_timeout: duration('10m'),
    max_instance_lifetime: duration('6h'),
    reconcile_interval: duration('30s'),
    reconcile_interval_fast: duration('2s'),
    ...poolFleetKeys,
  })
  .prefault({});

export const localSchema = z
  .strictObject({
    /** Where local instances live; default: <state_dir>/local. */
    root: z.string().optional(),
    /** Simulated boot time of a local instance, to exercise the waiting path. */
    boot_time: duration('0s'),
    /** First of the 2000 uids local instances' jobs run as, when the daemon runs as root. */
    job_uid_base: z.number().int().min(1000).max(4_000_000_000).default(63000),
  })
  .prefault({});

export const configSchema = z
  .strictObject({
    log_level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
    state_dir: z.string().startsWith('/').optional(),
    socket: z.string().startsWith('/').optional(),
    fleet_name: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'letters, digits, ".", "_" and "-", at most 63')
      .default('default'),
    manager_id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'letters, digits, ".", "_" and "-", at most 63')
      .optional(),
    provider: z.enum(['local', 'aws']).default('local'),
    executor: executorSchema,
    container: containerSchema,
    pool: poolSchema,
    local: localSchema,
    metrics: metricsSchema,
    credentials: credentialsSectionSchema,
    gitlab: gitlabSchema,
    cache: cacheSchema,
    service: serviceSchema,
    image: imageSchema,
    aws: awsConfigSchema.optional(),
  })
  .refine((c) => c.provider !== 'aws' || c.aws !== undefined, {
    message:
      'provider = "aws" needs an [aws] section (at least aws.region and aws.mode; see config.example.toml)',
    path: ['aws'],
  })
  .superRefine((c, ctx) => {
    // Keys that are each valid alone but contradict each other: name both, and which to change.
    const p = c.pool;
    const conflict = (path: PropertyKey[], message: string) =>
      ctx.addIssue({ code: 'custom', path, message });
    const max = `pool.max_instances (${p.max_instances})`;
    if (p.idle_count > p.max_instances)
      conflict(
        ['pool', 'idle_count'],
        `${p.idle_count} is more than ${max}: the warm pool could never be filled; lower idle_count or raise max_instances`,
      );
    p.policy.forEach((block, i) => {
      if (block.idle_count > p.max_instances)
        conflict(
          ['pool', 'policy', i, 'idle_count'],
          `${block.idle_count} is more than ${max}: lower this idle_count or raise max_instances`,
        );
    });
    if (p.adaptive.max_idle > p.max_instances)
      conflict(
        ['pool', 'adaptive', 'max_idle'],
        `${p.adaptive.max_idle} is more than ${max}; lower max_idle (0 means max_instances)`,
      );
    if (p.orphan_boot_grace < p.instance_ready_timeout)
      conflict(
        ['pool', 'orphan_boot_grace'],
        `${ms(p.orphan_boot_grace)} is shorter than pool.instance_ready_timeout (${ms(p.instance_ready_timeout)}): a slow boot would be reaped as an orphan before its readiness deadline; raise orphan_boot_grace`,
      );
    // An Auto Scaling group launches from its one template, in its own subnets, with its own
    // types: a rule cannot move a job elsewhere there, and silently ignoring it would be a lie.
    if (c.provider === 'aws' && c.aws?.mode === 'asg')
      c.credentials.rules.forEach((rule, i) => {
        const keys = Object.entries({
          launch_template: rule.overrides.launchTemplate,
          subnets: rule.overrides.subnets,
          instance_type: rule.overrides.instanceType,
        }).filter(([, v]) => v !== undefined);
        for (const [key] of keys) {
          ctx.addIssue({
            code: 'custom',
            path: ['credentials', 'rule', i, key],
            message: `rule "${rule.name}": ${key} needs aws.mode = "fleet"; in asg mode the group's launch template, subnets and types apply to every job (use a second runner-fleet manager with its own group for such jobs)`,
          });
        }
      });
  });

/** A duration as the operator would write it, for messages. */
function ms(value: number): string {
  if (value % 3_600_000 === 0) return `${value / 3_600_000}h`;
  if (value % 60_000 === 0) return `${value / 60_000}m`;
  if (value % 1000 === 0) return `${value / 1000}s`;
  return `${value}ms`;
}

export type RawConfig = z.input<typeof configSchema>;
type Parsed = z.output<typeof configSchema>;

/** The typed configuration every module receives; paths are resolved and absolute. */
export interface Config extends Omit<Parsed, 'state_dir' | 'socket' | 'manager_id' | 'local'> {
  state_dir: string;
  socket: string;
  manager_id: string;
  local: Parsed['local'] & { root: string };
  /** Where this config came from: a file path, or "embedded default". */
  source: string;
}

export function defaultManagerId(): string {
  return (
    hostname()
      .replace(/[^A-Za-z0-9._-]/g, '-')
      .replace(/^[^A-Za-z0-9]+/, '')
      .slice(0, 63) || 'manager'
  );
}
