/**
 * Renders /etc/gitlab/gitlab.rb for the POC instance.
 *
 * Secrets never appear in the rendered text: gitlab.rb is Ruby, so it reads them from root-only
 * files that the boot script fetches from Secrets Manager with the instance role. That keeps
 * passwords out of user data, the launch template and CloudFormation.
 *
 * Values may be CDK tokens (endpoint addresses, bucket names): the function only interpolates
 * them into the text, so it works the same for synth and for unit tests with plain strings.
 */

import { renderSmtpGitlabRb, type SmtpSettings } from './smtp.js';

/** Object types of GitLab's consolidated object storage form, each with its own bucket. */
export const OBJECT_TYPES = [
  'artifacts',
  'external_diffs',
  'lfs',
  'uploads',
  'packages',
  'dependency_proxy',
  'terraform_state',
  'ci_secure_files',
  'pages',
] as const;
export type ObjectType = (typeof OBJECT_TYPES)[number];

/** Where the boot script leaves each secret (root:root 0600). gitlab.rb reads them from here. */
export const SECRET_FILES = {
  dbPassword: '/etc/gitlab/secrets/db-password',
  redisPassword: '/etc/gitlab/secrets/redis-auth-token',
  rootPassword: '/etc/gitlab/secrets/initial-root-password',
} as const;

/** Instance port the load balancer's plain-HTTP listener forwards to. */
export const REDIRECT_PORT = 8080;

export interface GitlabRbOptions {
  /** Public URL, e.g. https://gitlab.example.com. TLS ends at the load balancer. */
  externalUrl: string;
  region: string;
  /** CIDR the load balancer health checks and the VPC's monitoring come from. */
  vpcCidr: string;
  database: { host: string; port: string | number; name: string; username: string };
  redis: { host: string; port: string | number };
  buckets: Record<ObjectType, string>;
  backupBucket: string;
  secretFiles?: typeof SECRET_FILES;
  /** Outgoing email through SES (smtp.ts); unset: GitLab's default (no SMTP). */
  smtp?: Pick<SmtpSettings, 'region' | 'fromAddress'>;
}

/** Single-quoted Ruby string literal. */
export function rubyString(value: string | number): string {
  return `'${String(value).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function readSecret(path: string): string {
  return `File.read(${rubyString(path)}).strip`;
}

/** The S3 connection of object storage and backups: the instance profile's credentials, no keys. */
function s3Connection(region: string): string {
  return `{
  'provider' => 'AWS',
  'region' => ${rubyString(region)},
  'use_iam_profile' => true
}`;
}

/** GitLab's database on RDS: TLS required, the password read from a root-only file. */
export function externalPostgresSettings(db: GitlabRbOptions['database'], passwordFile: string): string {
  return `postgresql['enable'] = false
gitlab_rails['db_adapter'] = 'postgresql'
gitlab_rails['db_encoding'] = 'unicode'
gitlab_rails['db_host'] = ${rubyString(db.host)}
gitlab_rails['db_port'] = ${rubyString(db.port)}
gitlab_rails['db_database'] = ${rubyString(db.name)}
gitlab_rails['db_username'] = ${rubyString(db.username)}
gitlab_rails['db_password'] = ${readSecret(passwordFile)}
gitlab_rails['db_sslmode'] = 'require'
`;
}

/** Redis on ElastiCache: TLS, the AUTH token read from a root-only file. */
export function externalRedisSettings(redis: GitlabRbOptions['redis'], passwordFile: string): string {
  return `redis['enable'] = false
gitlab_rails['redis_host'] = ${rubyString(redis.host)}
gitlab_rails['redis_port'] = ${rubyString(redis.port)}
gitlab_rails['redis_ssl'] = true
gitlab_rails['redis_password'] = ${readSecret(passwordFile)}
`;
}

/** Consolidated object storage in S3, one bucket per object type (every node that runs Rails code). */
export function objectStoreSettings(region: string, buckets: Record<ObjectType, string>): string {
  const objectLines = OBJECT_TYPES.map(
    (type) => `gitlab_rails['object_store']['objects']['${type}']['bucket'] = ${rubyString(buckets[type])}`,
  );
  return `gitlab_rails['object_store']['enabled'] = true
gitlab_rails['object_store']['proxy_download'] = false
gitlab_rails['object_store']['connection'] = ${s3Connection(region)}
gitlab_rails['object_store']['storage_options'] = {
  'server_side_encryption' => 'AES256'
}
${objectLines.join('\n')}
`;
}

/** Where gitlab-backup uploads to: the backup bucket, encrypted at rest; its lifecycle rule prunes old ones. */
export function backupUploadSettings(region: string, backupBucket: string): string {
  return `gitlab_rails['backup_upload_connection'] = ${s3Connection(region)}
gitlab_rails['backup_upload_remote_directory'] = ${rubyString(backupBucket)}
gitlab_rails['backup_encryption'] = 'AES256'
gitlab_rails['backup_keep_time'] = 86400
`;
}

export function renderGitlabRb(o: GitlabRbOptions): string {
  const secrets = o.secretFiles ?? SECRET_FILES;
  if (!o.externalUrl.startsWith('https://')) {
    throw new Error(`externalUrl must be https:// (TLS ends at the load balancer): ${o.externalUrl}`);
  }

  return `# Rendered by runner-fleet infra (infra/gitlab/gitlab-rb.ts). Edit the renderer, not this file:
# a replacement instance boots with the rendered text again.

external_url ${rubyString(o.externalUrl)}

## TLS is terminated by the Network Load Balancer; nginx serves plain HTTP on port 80 behind it.
letsencrypt['enable'] = false
nginx['listen_port'] = 80
nginx['listen_https'] = false
nginx['real_ip_trusted_addresses'] = [${rubyString(o.vpcCidr)}]
## The load balancer's TCP 80 listener lands on 8080, which only redirects to HTTPS.
nginx['custom_nginx_config'] = 'server { listen ${REDIRECT_PORT}; server_name _; return 301 https://$host$request_uri; }'

## Git over SSH reaches this instance through the load balancer's TCP 22 listener.
gitlab_rails['gitlab_shell_ssh_port'] = 22

## Readiness and liveness probes come from the load balancer inside the VPC.
gitlab_rails['monitoring_whitelist'] = ['127.0.0.0/8', '::1/128', ${rubyString(o.vpcCidr)}]

## External PostgreSQL (Amazon RDS).
${externalPostgresSettings(o.database, secrets.dbPassword)}
## External Redis (Amazon ElastiCache, in-transit encryption, AUTH token).
${externalRedisSettings(o.redis, secrets.redisPassword)}
## First boot only: the root password comes from Secrets Manager, never from user data.
gitlab_rails['initial_root_password'] = ${readSecret(secrets.rootPassword)}
gitlab_rails['store_initial_root_password'] = false

## Consolidated object storage in S3 with the instance profile's credentials (no keys).
${objectStoreSettings(o.region, o.buckets)}
## Backups go to S3, encrypted at rest; the bucket's lifecycle rule prunes old ones.
${backupUploadSettings(o.region, o.backupBucket)}${o.smtp ? renderSmtpGitlabRb(o.smtp) : ''}`;
}
