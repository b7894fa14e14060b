/**
 * /etc/gitlab/gitlab.rb for each node role of the 3k layout (rails, sidekiq, gitaly, praefect),
 * after the per-role sections of GitLab's 3k reference architecture page (GitLab 18.x docs) and
 * "Configure Gitaly Cluster (Praefect)". One module so that the settings the roles must agree on
 * (tokens, addresses, storage names) are written in one place.
 *
 * As for the POC (../gitlab-rb.ts), no secret is in the text: gitlab.rb is Ruby and reads each
 * token or password from a root-only file that the boot script fetched from Secrets Manager.
 * Values may be CDK tokens; the renderer only interpolates them.
 */
import {
  backupUploadSettings,
  externalPostgresSettings,
  externalRedisSettings,
  type ObjectType,
  objectStoreSettings,
  REDIRECT_PORT,
  rubyString,
  SECRET_FILES,
} from '../gitlab-rb.js';
import { renderSmtpGitlabRb, type SmtpSettings } from '../smtp.js';

export const HA_ROLES = ['rails', 'sidekiq', 'gitaly', 'praefect'] as const;
export type HaRole = (typeof HA_ROLES)[number];

/** Root-only files the boot script writes; gitlab.rb reads them. */
export const HA_SECRET_FILES = {
  ...SECRET_FILES,
  /** Clients (Rails, Sidekiq) → Praefect. */
  praefectExternalToken: '/etc/gitlab/secrets/praefect-external-token',
  /** Praefect → Gitaly: the Gitaly nodes' auth token. */
  praefectInternalToken: '/etc/gitlab/secrets/praefect-internal-token',
  praefectDbPassword: '/etc/gitlab/secrets/praefect-db-password',
  /** gitlab-shell's secret: Gitaly's hooks call the Rails internal API with it. */
  shellSecret: '/etc/gitlab/secrets/gitlab-shell-secret',
} as const;
export type HaSecretFile = keyof typeof HA_SECRET_FILES;

/** Exactly the secrets each role reads (the boot script fetches these, the role may read these). */
export const ROLE_SECRETS: Record<HaRole, readonly HaSecretFile[]> = {
  rails: ['dbPassword', 'redisPassword', 'rootPassword', 'praefectExternalToken', 'shellSecret'],
  sidekiq: ['dbPassword', 'redisPassword', 'praefectExternalToken', 'shellSecret'],
  gitaly: ['praefectInternalToken', 'shellSecret'],
  praefect: ['praefectExternalToken', 'praefectInternalToken', 'praefectDbPassword'],
};

export const PORTS = { praefect: 2305, gitaly: 8075, gitalyMetrics: 9236, praefectMetrics: 9652 } as const;
/** Where each Gitaly node mounts its own data volume. */
export const GITALY_DATA_DIR = '/var/opt/gitlab/git-data';
/** The one virtual storage Rails and Sidekiq see; Praefect maps it onto every Gitaly node. */
export const VIRTUAL_STORAGE = 'default';

export interface PostgresEndpoint {
  host: string;
  port: string | number;
  name: string;
  username: string;
}

interface Common {
  /** Public URL, e.g. https://gitlab.example.com. */
  externalUrl: string;
  /** The Rails internal API through the internal load balancer, e.g. http://internal-nlb. */
  internalApiUrl: string;
}

export interface ApplicationOptions extends Common {
  region: string;
  vpcCidr: string;
  database: PostgresEndpoint;
  redis: { host: string; port: string | number };
  /** Praefect behind the internal load balancer, e.g. tcp://internal-nlb:2305. */
  praefectAddress: string;
  buckets: Record<ObjectType, string>;
  backupBucket: string;
  /** Outgoing email through SES (../smtp.ts): Rails and Sidekiq both send mail. */
  smtp?: Pick<SmtpSettings, 'region' | 'fromAddress'>;
}

export interface GitalyOptions extends Common {
  /** This node's storage name, e.g. gitaly-1: Praefect's configuration names the same. */
  storageName: string;
  region: string;
  /** Server-side repository backups go straight from Gitaly to this bucket. */
  backupBucket: string;
}

export interface PraefectOptions extends Common {
  database: PostgresEndpoint;
  gitalyNodes: { storage: string; address: string }[];
  replicationFactor: number;
}

export type RoleOptions =
  | { role: 'rails'; options: ApplicationOptions }
  | { role: 'sidekiq'; options: ApplicationOptions }
  | { role: 'gitaly'; options: GitalyOptions }
  | { role: 'praefect'; options: PraefectOptions };

const secret = (file: HaSecretFile) => `File.read(${rubyString(HA_SECRET_FILES[file])}).strip`;

export function renderRoleGitlabRb(r: RoleOptions): string {
  if (!r.options.externalUrl.startsWith('https://')) {
    throw new Error(`externalUrl must be https:// (TLS ends at the load balancer): ${r.options.externalUrl}`);
  }
  const header = `# Rendered by runner-fleet infra (infra/gitlab/ha/role-gitlab-rb.ts), role ${r.role}.
# Edit the renderer, not this file: a replacement node boots with the rendered text again.

external_url ${rubyString(r.options.externalUrl)}
`;
  switch (r.role) {
    case 'rails':
      return header + rails(r.options);
    case 'sidekiq':
      return header + sidekiq(r.options);
    case 'gitaly':
      return header + gitaly(r.options);
    case 'praefect':
      return header + praefect(r.options);
  }
}

/** Services a Gitaly or Praefect node must not run (the reference architecture's list). */
const storageNodeServices = (who: string) => `
## Only ${who} on this node.
postgresql['enable'] = false
redis['enable'] = false
nginx['enable'] = false
puma['enable'] = false
sidekiq['enable'] = false
gitlab_workhorse['enable'] = false
prometheus['enable'] = false
alertmanager['enable'] = false
gitlab_exporter['enable'] = false
gitlab_kas['enable'] = false
gitlab_rails['rake_cache_clear'] = false
gitlab_rails['auto_migrate'] = false
`;

function externalDataStores(o: ApplicationOptions): string {
  return `
## External PostgreSQL (RDS Multi-AZ; no PgBouncer or Consul needed, see docs/infrastructure.md).
${externalPostgresSettings(o.database, HA_SECRET_FILES.dbPassword)}## Migrations run from the boot script, on one node at a time, never from a reconfigure.
gitlab_rails['auto_migrate'] = false

## External Redis (ElastiCache with automatic failover: one primary endpoint, no Sentinel).
${externalRedisSettings(o.redis, HA_SECRET_FILES.redisPassword)}
## Git data through Praefect (Gitaly Cluster) behind the internal load balancer.
gitaly['enable'] = false
gitlab_rails['repositories_storages'] = {
  ${rubyString(VIRTUAL_STORAGE)} => {
    'gitaly_address' => ${rubyString(o.praefectAddress)},
    'gitaly_token' => ${secret('praefectExternalToken')}
  }
}
gitlab_shell['secret_token'] = ${secret('shellSecret')}

## The monitoring node is replaced by CloudWatch (ha/monitoring.ts).
prometheus['enable'] = false
alertmanager['enable'] = false

## Consolidated object storage in S3 with the instance profile's credentials (no keys).
${objectStoreSettings(o.region, o.buckets)}`;
}

function rails(o: ApplicationOptions): string {
  return `
## Rails only: the application role leaves PostgreSQL, Redis and Consul off (the page's Rails section).
roles(['application_role'])

## TLS ends at the external NLB; nginx serves plain HTTP on port 80 behind it.
letsencrypt['enable'] = false
nginx['listen_port'] = 80
nginx['listen_https'] = false
nginx['real_ip_trusted_addresses'] = [${rubyString(o.vpcCidr)}]
nginx['custom_nginx_config'] = 'server { listen ${REDIRECT_PORT}; server_name _; return 301 https://$host$request_uri; }'
gitlab_rails['gitlab_shell_ssh_port'] = 22
## Both load balancers probe /-/readiness from inside the VPC.
gitlab_rails['monitoring_whitelist'] = ['127.0.0.0/8', '::1/128', ${rubyString(o.vpcCidr)}]

## Sidekiq runs on its own nodes.
sidekiq['enable'] = false
${externalDataStores(o)}
## First boot only: the root password comes from Secrets Manager, never from user data.
gitlab_rails['initial_root_password'] = ${secret('rootPassword')}
gitlab_rails['store_initial_root_password'] = false

## Nightly backups from one Rails node (boot-scripts.ts); repositories go server-side from Gitaly to S3.
${backupUploadSettings(o.region, o.backupBucket)}${o.smtp ? renderSmtpGitlabRb(o.smtp) : ''}`;
}

function sidekiq(o: ApplicationOptions): string {
  return `
roles(['sidekiq_role'])

## Four processes on every queue, as the reference architecture's Sidekiq nodes (4 vCPU). Threads
## per process: \`concurrency\` (GitLab 17.0 removed min_concurrency/max_concurrency).
sidekiq['listen_address'] = '0.0.0.0'
sidekiq['queue_groups'] = ['*'] * 4
sidekiq['concurrency'] = 20
${externalDataStores(o)}${o.smtp ? renderSmtpGitlabRb(o.smtp) : ''}`;
}

function gitaly(o: GitalyOptions): string {
  return `${storageNodeServices('Gitaly')}
## Gitaly calls back into Rails (hooks, access checks) through the internal load balancer.
gitlab_rails['internal_api_url'] = ${rubyString(o.internalApiUrl)}
gitlab_shell['secret_token'] = ${secret('shellSecret')}

gitaly['enable'] = true
gitaly['configuration'] = {
  listen_addr: '0.0.0.0:${PORTS.gitaly}',
  prometheus_listen_addr: '0.0.0.0:${PORTS.gitalyMetrics}',
  ## Praefect's internal token: only Praefect talks to this node.
  auth: {
    token: ${secret('praefectInternalToken')}
  },
  pack_objects_cache: {
    enabled: true
  },
  ## Server-side repository backups (gitlab-backup create REPOSITORIES_SERVER_SIDE=true): each
  ## repository is streamed from Gitaly to S3 with the instance profile, not through a Rails node.
  backup: {
    go_cloud_url: ${rubyString(`s3://${o.backupBucket}?region=${o.region}`)}
  },
  storage: [
    {
      name: ${rubyString(o.storageName)},
      path: ${rubyString(`${GITALY_DATA_DIR}/repositories`)}
    }
  ]
}
`;
}

function praefect(o: PraefectOptions): string {
  const nodes = o.gitalyNodes
    .map(
      (n) => `        {
          storage: ${rubyString(n.storage)},
          address: ${rubyString(n.address)},
          token: ${secret('praefectInternalToken')}
        }`,
    )
    .join(',\n');
  return `${storageNodeServices('Praefect')}gitaly['enable'] = false
gitlab_rails['internal_api_url'] = ${rubyString(o.internalApiUrl)}

praefect['enable'] = true
## Schema migrations run from the boot script (praefect sql-migrate), not on every reconfigure.
praefect['auto_migrate'] = false
praefect['configuration'] = {
  listen_addr: '0.0.0.0:${PORTS.praefect}',
  prometheus_listen_addr: '0.0.0.0:${PORTS.praefectMetrics}',
  ## The external token: what Rails and Sidekiq present.
  auth: {
    token: ${secret('praefectExternalToken')}
  },
  ## Praefect's own database on RDS: a direct connection, no PgBouncer in between.
  database: {
    host: ${rubyString(o.database.host)},
    port: ${Number.isInteger(Number(o.database.port)) ? Number(o.database.port) : `${rubyString(o.database.port)}.to_i`},
    user: ${rubyString(o.database.username)},
    password: ${secret('praefectDbPassword')},
    dbname: ${rubyString(o.database.name)},
    sslmode: 'require'
  },
  ## Replicas are checked in the background; bad ones are repaired by replication.
  background_verification: {
    verification_interval: '168h'
  },
  virtual_storage: [
    {
      name: ${rubyString(VIRTUAL_STORAGE)},
      default_replication_factor: ${o.replicationFactor},
      node: [
${nodes}
      ]
    }
  ]
}
`;
}
