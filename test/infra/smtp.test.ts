/**
 * Outgoing email through SES (infra/gitlab/smtp.ts): the POC's gitlab.rb with SMTP evaluated by
 * Ruby as GitLab reads it, the secret fetch run under bash with a stand-in `secret`, and the
 * config keys. The 3k renderers are checked in ha-gitlab-rb.test.ts; the templates in
 * alarms.test.ts (POC) and ha-stack.test.ts (3k).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readInfraConfig } from '../../infra/config.js';
import { OBJECT_TYPES, renderGitlabRb } from '../../infra/gitlab/gitlab-rb.js';
import { renderSmtpSecretFetch, SMTP_SECRET_FILES } from '../../infra/gitlab/smtp.js';
import { evaluateGitlabRb } from './gitlab-rb-ruby.js';

const base = {
  externalUrl: 'https://gitlab.example.com',
  region: 'eu-west-1',
  vpcCidr: '10.40.0.0/16',
  database: { host: 'db.internal', port: 5432, name: 'gitlabhq_production', username: 'gitlab' },
  redis: { host: 'redis.internal', port: '6379' },
  buckets: Object.fromEntries(OBJECT_TYPES.map((t) => [t, `poc-${t}`])) as Record<
    (typeof OBJECT_TYPES)[number],
    string
  >,
  backupBucket: 'poc-backups',
};

describe('gitlab.rb with SMTP through SES', () => {
  it('sets the keys GitLab reads: SES endpoint, STARTTLS on 587, login from the root-only files, From', () => {
    const rails = evaluateGitlabRb(
      renderGitlabRb({ ...base, smtp: { region: 'us-east-1', fromAddress: 'gitlab@mail.example.com' } }),
    ).gitlab_rails;
    expect(rails).toMatchObject({
      smtp_enable: true,
      smtp_address: 'email-smtp.us-east-1.amazonaws.com',
      smtp_port: 587,
      smtp_user_name: `<secret from ${SMTP_SECRET_FILES.username}>`,
      smtp_password: `<secret from ${SMTP_SECRET_FILES.password}>`,
      smtp_domain: 'mail.example.com',
      smtp_authentication: 'login',
      smtp_enable_starttls_auto: true,
      smtp_tls: false,
      smtp_openssl_verify_mode: 'peer',
      gitlab_email_enabled: true,
      gitlab_email_from: 'gitlab@mail.example.com',
    });
  });

  it('sets nothing about SMTP without it', () => {
    const rails = evaluateGitlabRb(renderGitlabRb(base)).gitlab_rails;
    expect(Object.keys(rails).filter((k) => k.startsWith('smtp_') || k.startsWith('gitlab_email'))).toEqual(
      [],
    );
  });
});

describe('the SMTP secret fetch', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-smtp-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const files = { username: join(dir, 'smtp-username'), password: join(dir, 'smtp-password') };

  function run(secretJson: string): Promise<number> {
    const script = join(dir, 'fetch.sh');
    writeFileSync(
      script,
      `set -euo pipefail
umask 077
secret() { [ "$1" = 'ses-smtp' ] && printf '%s' '${secretJson}'; }
${renderSmtpSecretFetch('ses-smtp', files)}`,
    );
    return new Promise((resolve) =>
      execFile('bash', [script], (error) => resolve(error ? ((error as { code?: number }).code ?? 1) : 0)),
    );
  }

  it('writes the username and password into root-only files', async () => {
    expect(await run('{"username":"AKIAEXAMPLE","password":"BPa55+/word"}')).toBe(0);
    expect(readFileSync(files.username, 'utf8')).toBe('AKIAEXAMPLE\n');
    expect(readFileSync(files.password, 'utf8')).toBe('BPa55+/word\n');
    expect(statSync(files.password).mode & 0o777).toBe(0o600);
  });

  it('fails the script when the secret lacks a key, instead of configuring an empty login', async () => {
    expect(await run('{"username":"AKIAEXAMPLE"}')).not.toBe(0);
  });
});

describe('SMTP config keys', () => {
  const read = (ctx: Record<string, string>) => readInfraConfig((k) => ctx[k]);
  it('is off by default and on with smtpSecretName, in the stack region unless smtpRegion says otherwise', () => {
    expect(read({}).smtp).toBeUndefined();
    expect(read({ smtpSecretName: 'ses-smtp' }).smtp).toEqual({
      secretName: 'ses-smtp',
      fromAddress: undefined,
      region: 'eu-west-1',
    });
    expect(read({ smtpSecretName: 'ses-smtp', smtpRegion: 'us-east-1' }).smtp?.region).toBe('us-east-1');
  });
  it('refuses a From that is not an address, and From or region without the secret', () => {
    expect(() => read({ smtpSecretName: 'ses-smtp', smtpFromAddress: 'gitlab' })).toThrow(/smtpFromAddress/);
    expect(() => read({ smtpFromAddress: 'gitlab@example.com' })).toThrow(/need smtpSecretName/);
  });
});
