/**
 * Config sections for running the manager for real: where GitLab is and where the runner token
 * lives (`[gitlab]`), the gitlab-runner S3 cache (`[cache]`), the systemd service (`[service]`) and
 * where the job AMI's package manifest is published (`[image]`). Imported into `configSchema`.
 */
import { z } from 'zod';
import { duration } from '../config/zod-duration.js';

const ssmParameterName = z
  .string()
  .regex(/^\/?[A-Za-z0-9_.\-/]{1,1011}$/, 'an SSM parameter name: letters, digits, "_", ".", "-" and "/"');

export const gitlabSchema = z
  .strictObject({
    /** The GitLab instance the runner serves, e.g. https://gitlab.example.com. */
    url: z
      .url({ protocol: /^https?$/, error: 'expected an http(s) URL like "https://gitlab.example.com"' })
      .optional(),
    /** SSM SecureString parameter holding the runner authentication token (glrt-…). */
    runner_token_parameter: ssmParameterName.optional(),
    /** File holding the runner authentication token, when SSM is not used (mode 0600). */
    runner_token_file: z.string().startsWith('/').optional(),
  })
  .refine((g) => !(g.runner_token_parameter && g.runner_token_file), {
    message: 'set runner_token_parameter or runner_token_file, not both',
  })
  .prefault({});

export const cacheSchema = z
  .strictObject({
    /** S3 bucket for gitlab-runner's distributed cache; no [runners.cache] is rendered when unset. */
    bucket: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name (lower case, 3-63 characters)')
      .optional(),
    /** The bucket's region; defaults to [aws] region. */
    region: z
      .string()
      .regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region like "eu-central-1"')
      .optional(),
    /** Only for S3-compatible stores or VPC endpoints: host[:port], no scheme. */
    server_address: z.string().min(1).optional(),
  })
  .prefault({});

export const serviceSchema = z
  .strictObject({
    /** The user the daemon runs as; the hooks (started by gitlab-runner) must reach its socket. */
    user: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}\$?$/, 'a Unix user name')
      .default('gitlab-runner'),
    /** How long `systemctl stop` waits for running jobs (drain) before stopping anyway. */
    stop_timeout: duration('15m'),
  })
  .prefault({});

export const imageSchema = z
  .strictObject({
    /**
     * The image build publishes one SSM String parameter per AMI, `<prefix>/<ami-id>`, holding
     * JSON `{"packages": {"git": "…", "git-lfs": "…", "gitlab-runner": "…"}}`; doctor reads it.
     */
    manifest_parameter_prefix: ssmParameterName.default('/runner-fleet/ami'),
  })
  .prefault({});

export type GitlabSettings = z.output<typeof gitlabSchema>;
export type CacheSettings = z.output<typeof cacheSchema>;
export type ServiceSettings = z.output<typeof serviceSchema>;
export type ImageSettings = z.output<typeof imageSchema>;
