/**
 * gitlab.rb per role of the 3k layout, checked with Debian's ruby: `ruby -c` for syntax, then the
 * file is evaluated the way the Linux package's reconfigure reads it (top-level settings objects,
 * `external_url`, `roles`, secrets read with File.read) and the resulting settings are compared
 * with the keys GitLab documents for that role.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_GITLAB_VERSION } from '../../infra/config.js';
import { OBJECT_TYPES, type ObjectType } from '../../infra/gitlab/gitlab-rb.js';
import {
  type ApplicationOptions,
  HA_ROLES,
  HA_SECRET_FILES,
  type HaRole,
  ROLE_SECRETS,
  type RoleOptions,
  renderRoleGitlabRb,
} from '../../infra/gitlab/ha/role-gitlab-rb.js';
import type { Json } from './synth.js';

const dir = mkdtempSync(join(tmpdir(), 'ha-gitlab-rb-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * Evaluates a gitlab.rb like omnibus-gitlab does: every top-level settings object is an
 * auto-vivifying hash; a name that is not one of them is a NameError, so a typo fails the test.
 * Secret files read as `<secret NAME>`, which shows which file feeds which setting.
 */
const EVALUATOR = `
require 'json'
class Settings < Hash
  def initialize; super() { |h, k| h[k] = Settings.new }; end
end
CONFIG = Settings.new
class << File
  alias_method :real_read, :read
  def read(path, *rest)
    return "<secret #{File.basename(path)}>\\n" if path.to_s.start_with?('/etc/gitlab/secrets/')
    real_read(path, *rest)
  end
end
def external_url(url); CONFIG['external_url'] = url; end
def roles(list); CONFIG['roles'] = list; end
def git_data_dirs(value); CONFIG['git_data_dirs'] = value; end
%w[gitlab_rails gitaly praefect nginx letsencrypt postgresql redis sidekiq puma gitlab_workhorse
   prometheus alertmanager gitlab_exporter gitlab_kas gitlab_shell node_exporter].each do |name|
  Object.send(:define_method, name) { CONFIG[name] }
end
load ARGV[0]
puts JSON.generate(CONFIG)
`;
const evaluator = join(dir, 'evaluate.rb');
writeFileSync(evaluator, EVALUATOR);

/**
 * gitlab.rb keys the Linux package no longer accepts, with the release that removed them. A removed
 * key fails `gitlab-ctl reconfigure` and the package upgrade's config check, so none may be rendered
 * for the GitLab version this app pins. Sources: GitLab's deprecations and removals pages;
 * omnibus-gitlab MR 7549 (Sidekiq min/max concurrency, 17.0).
 */
const REMOVED_KEYS: { path: string[]; removedIn: [number, number]; use: string }[] = [
  { path: ['sidekiq', 'max_concurrency'], removedIn: [17, 0], use: "sidekiq['concurrency']" },
  { path: ['sidekiq', 'min_concurrency'], removedIn: [17, 0], use: "sidekiq['concurrency']" },
  // The flat Gitaly and Praefect keys of GitLab 15 gave way to gitaly/praefect['configuration'] in 16.0.
  ...['auth_token', 'listen_addr', 'prometheus_listen_addr', 'storage'].map((key) => ({
    path: ['gitaly', key],
    removedIn: [16, 0] as [number, number],
    use: "gitaly['configuration']",
  })),
  ...['auth_token', 'listen_addr', 'virtual_storages', 'database_host', 'database_password'].map((key) => ({
    path: ['praefect', key],
    removedIn: [16, 0] as [number, number],
    use: "praefect['configuration']",
  })),
  { path: ['git_data_dirs'], removedIn: [18, 0], use: "gitaly['configuration'][:storage]" },
];

/** The removed keys (for `version`) that an evaluated gitlab.rb sets. */
function removedKeysIn(c: Json, version: string): string[] {
  const [major, minor] = version.split('.').map(Number) as [number, number];
  return REMOVED_KEYS.filter(({ removedIn: [m, n] }) => major > m || (major === m && minor >= n))
    .filter(({ path }) => path.reduce<Json>((node, key) => node?.[key], c) !== undefined)
    .map(({ path, use }) => `${path.join('.')} (use ${use})`);
}

function write(role: string, text: string): string {
  const file = join(dir, `${role}.gitlab.rb`);
  writeFileSync(file, text);
  return file;
}
function evaluate(role: string, text: string): Json {
  return JSON.parse(execFileSync('ruby', [evaluator, write(role, text)], { encoding: 'utf8' }));
}
const secretOf = (file: keyof typeof HA_SECRET_FILES) => `<secret ${HA_SECRET_FILES[file].split('/').pop()}>`;

const buckets = Object.fromEntries(OBJECT_TYPES.map((t) => [t, `gl-${t}`])) as Record<ObjectType, string>;
const common = { externalUrl: 'https://gitlab.example.com', internalApiUrl: 'http://internal.elb.example' };
const app: ApplicationOptions = {
  ...common,
  region: 'eu-west-1',
  vpcCidr: '10.40.0.0/16',
  database: { host: 'db.rds', port: 5432, name: 'gitlabhq_production', username: 'gitlab' },
  redis: { host: 'redis.cache', port: 6379 },
  praefectAddress: 'tcp://internal.elb.example:2305',
  buckets,
  backupBucket: 'gl-backups',
};
const gitalyNodes = [1, 2, 3].map((i) => ({
  storage: `gitaly-${i}`,
  address: `tcp://gitaly-${i}.gitlab-ha.internal:8075`,
}));
const inputs: Record<HaRole, RoleOptions> = {
  rails: { role: 'rails', options: app },
  sidekiq: { role: 'sidekiq', options: app },
  gitaly: {
    role: 'gitaly',
    options: { ...common, storageName: 'gitaly-2', region: 'eu-west-1', backupBucket: 'gl-backups' },
  },
  praefect: {
    role: 'praefect',
    options: {
      ...common,
      database: { host: 'praefect.rds', port: '5432', name: 'praefect_production', username: 'praefect' },
      gitalyNodes,
      replicationFactor: 3,
    },
  },
};
const rendered = Object.fromEntries(HA_ROLES.map((r) => [r, renderRoleGitlabRb(inputs[r])])) as Record<
  HaRole,
  string
>;
const config = Object.fromEntries(HA_ROLES.map((r) => [r, evaluate(r, rendered[r])])) as Record<HaRole, Json>;

describe('gitlab.rb per role: Ruby', () => {
  it.each(HA_ROLES)('%s passes ruby -c', (role) => {
    expect(execFileSync('ruby', ['-c', write(role, rendered[role])], { encoding: 'utf8' })).toContain(
      'Syntax OK',
    );
  });

  it('ruby -c catches a broken file (the check can fail)', () => {
    expect(() =>
      execFileSync('ruby', ['-c', write('broken', `${rendered.praefect}\n}`)], { stdio: 'pipe' }),
    ).toThrow();
  });

  it('each role reads exactly the secret files its boot script fetches, and none is inline', () => {
    for (const role of HA_ROLES) {
      const read = [...rendered[role].matchAll(/File\.read\('([^']+)'\)/g)].map((m) => m[1]);
      expect(new Set(read), role).toEqual(new Set(ROLE_SECRETS[role].map((f) => HA_SECRET_FILES[f])));
      expect(rendered[role]).not.toMatch(/(password|token|secret_token)'?\]?:? =?>? ?'[^<']/);
    }
  });
});

describe('gitlab.rb per role: the keys GitLab documents', () => {
  it('rails: external data stores, Praefect as the only storage, no Sidekiq or Gitaly, TLS at the NLB', () => {
    const c = config.rails;
    expect(c.roles).toEqual(['application_role']);
    expect(c.external_url).toBe('https://gitlab.example.com');
    expect([c.gitaly.enable, c.sidekiq.enable, c.postgresql.enable, c.redis.enable]).toEqual([
      false,
      false,
      false,
      false,
    ]);
    expect(c.gitlab_rails.repositories_storages).toEqual({
      default: {
        gitaly_address: 'tcp://internal.elb.example:2305',
        gitaly_token: secretOf('praefectExternalToken'),
      },
    });
    expect(c.gitlab_rails.db_host).toBe('db.rds');
    expect(c.gitlab_rails.db_password).toBe(secretOf('dbPassword'));
    expect(c.gitlab_rails.db_sslmode).toBe('require');
    expect(c.gitlab_rails.redis_password).toBe(secretOf('redisPassword'));
    expect(c.gitlab_rails.redis_ssl).toBe(true);
    expect(c.gitlab_rails.auto_migrate).toBe(false);
    expect(c.gitlab_shell.secret_token).toBe(secretOf('shellSecret'));
    expect(c.gitlab_rails.initial_root_password).toBe(secretOf('rootPassword'));
    expect([c.nginx.listen_port, c.nginx.listen_https, c.letsencrypt.enable]).toEqual([80, false, false]);
    expect(c.gitlab_rails.monitoring_whitelist).toContain('10.40.0.0/16');
    expect(c.gitlab_rails.object_store.connection.use_iam_profile).toBe(true);
    for (const t of OBJECT_TYPES) expect(c.gitlab_rails.object_store.objects[t].bucket).toBe(`gl-${t}`);
    expect(c.gitlab_rails.backup_upload_remote_directory).toBe('gl-backups');
  });

  it('sidekiq: sidekiq_role with queue groups, the same data stores and storage, no web or root password', () => {
    const c = config.sidekiq;
    expect(c.roles).toEqual(['sidekiq_role']);
    expect(c.sidekiq.queue_groups).toEqual(['*', '*', '*', '*']);
    expect(c.sidekiq.concurrency).toBe(20);
    expect(c.sidekiq.listen_address).toBe('0.0.0.0');
    expect(c.gitlab_rails.repositories_storages).toEqual(config.rails.gitlab_rails.repositories_storages);
    for (const key of [
      'db_host',
      'db_password',
      'redis_host',
      'redis_password',
      'auto_migrate',
      'object_store',
    ])
      expect(c.gitlab_rails[key], key).toEqual(config.rails.gitlab_rails[key]);
    expect(c.gitlab_shell.secret_token).toBe(secretOf('shellSecret'));
    expect(c.gitlab_rails).not.toHaveProperty('initial_root_password');
    expect(c).not.toHaveProperty('nginx');
  });

  it('gitaly: its own storage on the data volume, Praefect internal token, callbacks to the internal API', () => {
    const c = config.gitaly;
    expect(c.gitaly.enable).toBe(true);
    expect(c.gitaly.configuration.listen_addr).toBe('0.0.0.0:8075');
    expect(c.gitaly.configuration.auth.token).toBe(secretOf('praefectInternalToken'));
    expect(c.gitaly.configuration.storage).toEqual([
      { name: 'gitaly-2', path: '/var/opt/gitlab/git-data/repositories' },
    ]);
    expect(c.gitlab_rails.internal_api_url).toBe('http://internal.elb.example');
    expect(c.gitlab_shell.secret_token).toBe(secretOf('shellSecret'));
    expect(c.gitaly.configuration.backup.go_cloud_url).toBe('s3://gl-backups?region=eu-west-1');
    for (const service of [
      'postgresql',
      'redis',
      'nginx',
      'puma',
      'sidekiq',
      'gitlab_workhorse',
      'prometheus',
    ])
      expect(c[service].enable, service).toBe(false);
    expect(c.gitlab_rails.auto_migrate).toBe(false);
    expect(c.gitlab_rails).not.toHaveProperty('db_password');
  });

  it('praefect: listens for clients with the external token, reaches every Gitaly with the internal one', () => {
    const c = config.praefect;
    expect([c.praefect.enable, c.praefect.auto_migrate, c.gitaly.enable]).toEqual([true, false, false]);
    const p = c.praefect.configuration;
    expect(p.listen_addr).toBe('0.0.0.0:2305');
    expect(p.auth.token).toBe(secretOf('praefectExternalToken'));
    expect(p.database).toEqual({
      host: 'praefect.rds',
      port: 5432,
      user: 'praefect',
      password: secretOf('praefectDbPassword'),
      dbname: 'praefect_production',
      sslmode: 'require',
    });
    expect(p.virtual_storage).toHaveLength(1);
    expect(p.virtual_storage[0].name).toBe('default');
    expect(p.virtual_storage[0].default_replication_factor).toBe(3);
    expect(p.virtual_storage[0].node).toEqual(
      gitalyNodes.map((n) => ({ ...n, token: secretOf('praefectInternalToken') })),
    );
    for (const service of ['postgresql', 'redis', 'nginx', 'puma', 'sidekiq', 'gitlab_workhorse'])
      expect(c[service].enable, service).toBe(false);
  });

  it('the roles agree: clients and Praefect share the external token, Praefect and Gitaly the internal one', () => {
    const praefect = config.praefect.praefect.configuration;
    expect(config.rails.gitlab_rails.repositories_storages.default.gitaly_token).toBe(praefect.auth.token);
    expect(praefect.virtual_storage[0].node[1].token).toBe(config.gitaly.gitaly.configuration.auth.token);
    expect(praefect.virtual_storage[0].node[1].storage).toBe(
      config.gitaly.gitaly.configuration.storage[0].name,
    );
    expect(praefect.auth.token).not.toBe(config.gitaly.gitaly.configuration.auth.token);
  });

  it(`uses no key the Linux package removed by GitLab ${DEFAULT_GITLAB_VERSION}, the pinned version`, () => {
    for (const role of HA_ROLES)
      expect(removedKeysIn(config[role], DEFAULT_GITLAB_VERSION), role).toEqual([]);
    // The check sees a removed key: the GitLab 16 Sidekiq setting and the GitLab 17 storage form.
    const old = evaluate(
      'old',
      `${rendered.sidekiq}sidekiq['max_concurrency'] = 20\ngit_data_dirs({ 'default' => { 'path' => '/x' } })\n`,
    );
    expect(removedKeysIn(old, DEFAULT_GITLAB_VERSION)).toEqual([
      "sidekiq.max_concurrency (use sidekiq['concurrency'])",
      "git_data_dirs (use gitaly['configuration'][:storage])",
    ]);
    expect(removedKeysIn(old, '16.11.0')).toEqual([]);
  });

  it('refuses a non-https external URL', () => {
    expect(() => renderRoleGitlabRb({ role: 'rails', options: { ...app, externalUrl: 'http://x' } })).toThrow(
      /https/,
    );
  });
});

describe('SMTP through SES (Rails and Sidekiq send mail)', () => {
  const smtp = { region: 'eu-west-1', fromAddress: 'gitlab@example.com' };
  it('configures SMTP on Rails and Sidekiq, reading the login from root-only files', () => {
    for (const role of ['rails', 'sidekiq'] as const) {
      const c = evaluate(role, renderRoleGitlabRb({ role, options: { ...app, smtp } }));
      expect(c.gitlab_rails, role).toMatchObject({
        smtp_enable: true,
        smtp_address: 'email-smtp.eu-west-1.amazonaws.com',
        smtp_port: 587,
        smtp_domain: 'example.com',
        gitlab_email_from: 'gitlab@example.com',
      });
      expect(String(c.gitlab_rails.smtp_password), role).toContain('smtp-password');
    }
  });
  it('leaves SMTP out when it is not configured', () => {
    const c = evaluate('rails', rendered.rails);
    expect(c.gitlab_rails.smtp_enable).toBeUndefined();
  });
});
