/**
 * The `[aws]` section of the config: how the AWS provider launches and reaches instances. Lives
 * beside the provider (schema.ts only mounts it) so the keys and the code that reads them change
 * together. Every key is documented in config.example.toml.
 */
import { z } from 'zod';
import { duration } from '../../config/zod-duration.js';

/** Capacity errors on which a spot launch is retried on-demand for the count still missing. */
export const DEFAULT_FAILOVER_CODES = [
  'InsufficientInstanceCapacity',
  'InsufficientCapacity',
  'MaxSpotInstanceCountExceeded',
  'SpotMaxPriceTooLow',
  'UnfulfillableCapacity',
];

/**
 * cloud-init finished (its boot-finished marker exists) and the gitlab-runner helper answers, so
 * caches and artifacts work. A non-blocking check: the fleet polls it with backoff.
 */
export const DEFAULT_READY_COMMAND =
  'test -f /var/lib/cloud/instance/boot-finished && gitlab-runner --version >/dev/null';

export const awsConfigSchema = z
  .strictObject({
    region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'an AWS region such as "eu-west-1"'),
    /** `asg`: steer an Auto Scaling group's desired capacity. `fleet`: CreateFleet type instant. */
    mode: z.enum(['asg', 'fleet']),
    asg_name: z.string().min(1).optional(),
    /** Launch template id (`lt-…`) or name; in `asg` mode the group's own template is used. */
    launch_template: z.string().min(1).optional(),
    launch_template_version: z
      .string()
      .regex(/^(\$Default|\$Latest|\d+)$/)
      .default('$Default'),
    instance_types: z.array(z.string().min(1)).default([]),
    subnets: z.array(z.string().regex(/^subnet-[0-9a-f]+$/, 'a subnet id "subnet-…"')).default([]),
    /**
     * Which list's order is the stronger preference when building CreateFleet overrides:
     * `instance_types` tries every subnet of the first type before the second type.
     */
    priorities: z.enum(['instance_types', 'subnets', 'none']).default('instance_types'),
    market: z.enum(['spot', 'on-demand']).default('on-demand'),
    spot_allocation_strategy: z
      .enum([
        'price-capacity-optimized',
        'capacity-optimized',
        'capacity-optimized-prioritized',
        'lowest-price',
        'diversified',
      ])
      .default('price-capacity-optimized'),
    on_demand_failover_codes: z.array(z.string().min(1)).default(DEFAULT_FAILOVER_CODES),
    ssh_user: z
      .string()
      .regex(/^[a-z_][a-z0-9_.-]{0,31}$/i)
      .default('ec2-user'),
    ssh_port: z.number().int().min(1).max(65535).default(22),
    private_address: z.boolean().default(true),
    metadata_hop_limit: z.number().int().min(1).max(64).default(1),
    /** Dead-man switch; default: [pool] max_instance_lifetime plus one hour for a last job. */
    max_instance_lifetime: z.string().optional(),
    install_tools: z.boolean().default(false),
    instance_ready_command: z.string().min(1).default(DEFAULT_READY_COMMAND),
    /**
     * asg mode: instances launched within one key window share one SSH identity (one launch
     * template version); a new window starts after this long (or after 100 instances).
     */
    // At most 30 minutes: it bounds how many instances share a key. Provenance does not depend on
    // it: a window's instances are accepted until an hour after it stopped being $Latest.
    asg_key_window: duration('10m', { minMs: 10_000, maxMs: 30 * 60_000 }),
    /** Launch calls per second (token bucket refill) and the bucket size. */
    launch_rate: z.number().positive().default(2),
    launch_burst: z.number().int().positive().default(5),
    /** Endpoint override for every AWS client (tests, VPC endpoints, LocalStack-like fakes). */
    endpoint: z.url().optional(),
    /** Instance profile (name or ARN) instances start with and jobs without a rule get. */
    instance_profile: z.string().default(''),
    /** Root device of the AMI, where the encrypted root volume is enforced. */
    root_device_name: z.string().startsWith('/dev/').default('/dev/xvda'),
  })
  .superRefine((aws, ctx) => {
    if (aws.mode === 'asg' && !aws.asg_name)
      ctx.addIssue({ code: 'custom', path: ['asg_name'], message: 'aws.mode = "asg" needs aws.asg_name' });
    if (aws.mode === 'fleet') {
      if (!aws.launch_template)
        ctx.addIssue({
          code: 'custom',
          path: ['launch_template'],
          message: 'aws.mode = "fleet" needs aws.launch_template (id "lt-…" or name)',
        });
      if (aws.subnets.length === 0)
        ctx.addIssue({ code: 'custom', path: ['subnets'], message: 'aws.mode = "fleet" needs aws.subnets' });
    }
  })
  .transform((aws, ctx) => {
    let lifetime: number | undefined;
    if (aws.max_instance_lifetime !== undefined) {
      const parsed = duration('0s').safeParse(aws.max_instance_lifetime);
      if (!parsed.success || parsed.data <= 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['max_instance_lifetime'],
          message: `expected a positive duration like "7h", got "${aws.max_instance_lifetime}"`,
        });
        return z.NEVER;
      }
      lifetime = parsed.data;
    }
    return { ...aws, max_instance_lifetime: lifetime };
  });

export type AwsConfig = z.output<typeof awsConfigSchema>;
