import { describe, expect, it } from 'vitest';
import { OBJECT_TYPES, renderGitlabRb, rubyString, SECRET_FILES } from '../../infra/gitlab/gitlab-rb.js';
import { evaluateGitlabRb } from './gitlab-rb-ruby.js';

const buckets = Object.fromEntries(OBJECT_TYPES.map((t) => [t, `poc-${t.replace(/_/g, '-')}`])) as Record<
  (typeof OBJECT_TYPES)[number],
  string
>;
const options = {
  externalUrl: 'https://gitlab.example.com',
  region: 'eu-west-1',
  vpcCidr: '10.40.0.0/16',
  database: { host: 'db.internal', port: 5432, name: 'gitlabhq_production', username: 'gitlab' },
  redis: { host: 'redis.internal', port: '6379' },
  buckets,
  backupBucket: 'poc-backups',
};

/** `key = value` lines of gitlab.rb, keyed by the left-hand side. */
function settings(rb: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of rb.split('\n')) {
    const m = /^([a-z_]+(?:\['[a-z_]+'\])*|external_url) (?:= )?(.+)$/.exec(line);
    if (m && !line.startsWith('#')) out.set(m[1]!, m[2]!);
  }
  return out;
}

describe('renderGitlabRb', () => {
  const rb = renderGitlabRb(options);
  const s = settings(rb);

  it('serves the external https URL with TLS ended at the NLB, nginx on plain port 80', () => {
    expect(s.get('external_url')).toBe("'https://gitlab.example.com'");
    expect(s.get("nginx['listen_https']")).toBe('false');
    expect(s.get("nginx['listen_port']")).toBe('80');
    expect(s.get("letsencrypt['enable']")).toBe('false');
    expect(rb).toContain('listen 8080; server_name _; return 301 https://$host$request_uri;');
  });

  it('lets the VPC (load balancer health checks) reach the readiness endpoint', () => {
    expect(s.get("gitlab_rails['monitoring_whitelist']")).toBe("['127.0.0.0/8', '::1/128', '10.40.0.0/16']");
  });

  it('uses external PostgreSQL and Redis over TLS', () => {
    expect(s.get("postgresql['enable']")).toBe('false');
    expect(s.get("gitlab_rails['db_host']")).toBe("'db.internal'");
    expect(s.get("gitlab_rails['db_port']")).toBe("'5432'");
    expect(s.get("gitlab_rails['db_sslmode']")).toBe("'require'");
    expect(s.get("redis['enable']")).toBe('false');
    expect(s.get("gitlab_rails['redis_host']")).toBe("'redis.internal'");
    expect(s.get("gitlab_rails['redis_ssl']")).toBe('true');
  });

  it('holds no secret: passwords are read from root-only files at reconfigure', () => {
    expect(s.get("gitlab_rails['db_password']")).toBe(`File.read('${SECRET_FILES.dbPassword}').strip`);
    expect(s.get("gitlab_rails['redis_password']")).toBe(`File.read('${SECRET_FILES.redisPassword}').strip`);
    expect(s.get("gitlab_rails['initial_root_password']")).toBe(
      `File.read('${SECRET_FILES.rootPassword}').strip`,
    );
    expect(rb).not.toMatch(/password'\] = '/);
  });

  it('configures consolidated object storage with the instance profile, one bucket per type', () => {
    expect(s.get("gitlab_rails['object_store']['enabled']")).toBe('true');
    expect(rb).toMatch(
      /\['object_store'\]\['connection'\] = \{[^}]*'provider' => 'AWS'[^}]*'use_iam_profile' => true/s,
    );
    expect(rb).not.toMatch(/aws_access_key_id|aws_secret_access_key/);
    for (const type of OBJECT_TYPES) {
      expect(s.get(`gitlab_rails['object_store']['objects']['${type}']['bucket']`)).toBe(
        `'${buckets[type]}'`,
      );
    }
  });

  it('uploads backups to S3 with server-side encryption', () => {
    expect(s.get("gitlab_rails['backup_upload_remote_directory']")).toBe("'poc-backups'");
    expect(s.get("gitlab_rails['backup_encryption']")).toBe("'AES256'");
    expect(rb).toMatch(/backup_upload_connection'\] = \{[^}]*'use_iam_profile' => true/s);
  });

  it('is Ruby that the Linux package evaluates into the settings GitLab reads', () => {
    const g = evaluateGitlabRb(rb);
    expect(g.external_url).toBe('https://gitlab.example.com');
    expect(g.nginx).toMatchObject({ listen_port: 80, listen_https: false });
    expect(g.letsencrypt.enable).toBe(false);
    expect(g.postgresql.enable).toBe(false);
    expect(g.redis.enable).toBe(false);
    expect(g.gitlab_rails).toMatchObject({
      db_adapter: 'postgresql',
      db_host: 'db.internal',
      db_port: '5432',
      db_database: 'gitlabhq_production',
      db_username: 'gitlab',
      db_password: `<secret from ${SECRET_FILES.dbPassword}>`,
      db_sslmode: 'require',
      redis_host: 'redis.internal',
      redis_ssl: true,
      redis_password: `<secret from ${SECRET_FILES.redisPassword}>`,
      initial_root_password: `<secret from ${SECRET_FILES.rootPassword}>`,
      gitlab_shell_ssh_port: 22,
      backup_upload_remote_directory: 'poc-backups',
    });
    expect(g.gitlab_rails.object_store.connection).toEqual({
      provider: 'AWS',
      region: 'eu-west-1',
      use_iam_profile: true,
    });
    expect(Object.keys(g.gitlab_rails.object_store.objects).sort()).toEqual([...OBJECT_TYPES].sort());
    for (const type of OBJECT_TYPES)
      expect(g.gitlab_rails.object_store.objects[type]).toEqual({ bucket: buckets[type] });
  });

  it('fails the Ruby check on a misspelt setting or a syntax error', () => {
    expect(() => evaluateGitlabRb(`${rb}\ngitlab_rail['db_host'] = 'x'\n`)).toThrow(
      /unknown setting gitlab_rail/,
    );
    expect(() => evaluateGitlabRb(`${rb}\ngitlab_rails['db_host'] = 'x\n`)).toThrow(/syntax|unterminated/i);
  });

  it('quotes values as Ruby strings and refuses a non-https URL', () => {
    expect(rubyString("it's \\ here")).toBe("'it\\'s \\\\ here'");
    expect(() => renderGitlabRb({ ...options, externalUrl: 'http://gitlab.example.com' })).toThrow(/https/);
  });
});
