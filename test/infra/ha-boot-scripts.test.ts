import { execFile, execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  type HaBootScriptOptions,
  renderHaBootScript,
  SSHD_KEY_LOOKUP,
  UNSEEDED,
} from '../../infra/gitlab/ha/boot-scripts.js';
import {
  HA_ROLES,
  HA_SECRET_FILES,
  type HaRole,
  ROLE_SECRETS,
} from '../../infra/gitlab/ha/role-gitlab-rb.js';

const arn = (name: string) => `arn:aws:secretsmanager:eu-west-1:1:secret:${name}`;
const secrets = Object.fromEntries(
  Object.keys(HA_SECRET_FILES).map((f) => [
    f,
    { arn: arn(f), jsonKey: f.endsWith('DbPassword') ? 'password' : undefined },
  ]),
);
const options = (role: HaRole): HaBootScriptOptions => ({
  role,
  region: 'eu-west-1',
  gitlabRb: `# gitlab.rb of ${role}\nexternal_url 'https://gitlab.example.com'\n`,
  edition: 'gitlab-ee',
  version: '18.2.1-ee.0',
  secrets,
  signal: { stackName: 'Dev-GitLab', logicalId: `${role}Group` },
  shared:
    role === 'rails' || role === 'sidekiq'
      ? { gitlabSecretsJsonArn: arn('gitlab-secrets-json'), sshHostKeysArn: arn('ssh-host-keys') }
      : undefined,
  gitaly:
    role === 'gitaly'
      ? {
          volumeTag: { key: 'runner-fleet:gitaly-storage', value: 'Dev-GitLab/gitaly-2' },
          mountPoint: '/var/opt/gitlab/git-data',
          hostedZoneId: 'Z123',
          recordName: 'gitaly-2.gitaly.gitlab.internal',
        }
      : undefined,
});
const scripts = Object.fromEntries(HA_ROLES.map((r) => [r, renderHaBootScript(options(r))])) as Record<
  HaRole,
  string
>;
const at = (role: HaRole, text: string) => {
  const i = scripts[role].indexOf(text);
  expect(i, `${role}: ${text}`).toBeGreaterThan(-1);
  return i;
};

describe('3k boot scripts', () => {
  it.each(HA_ROLES)('%s is valid bash (bash -n)', (role) => {
    execFileSync('bash', ['-n'], { input: scripts[role] });
  });

  it('bash -n catches a broken script (the check can fail)', () => {
    expect(() =>
      execFileSync('bash', ['-n'], { input: `${scripts.rails}\nif then`, stdio: 'pipe' }),
    ).toThrow();
  });

  it('fetches exactly the role secrets into root-only files before gitlab.rb exists, and signals at the end', () => {
    for (const role of HA_ROLES) {
      const gitlabRb = at(role, "cat > /etc/gitlab/gitlab.rb <<'GITLAB_RB_EOF'");
      expect(at(role, 'umask 077')).toBeLessThan(gitlabRb);
      for (const file of Object.keys(HA_SECRET_FILES) as (keyof typeof HA_SECRET_FILES)[]) {
        const fetch = `secret '${arn(file)}'`;
        if (ROLE_SECRETS[role].includes(file)) {
          expect(at(role, `> ${HA_SECRET_FILES[file]}`)).toBeLessThan(gitlabRb);
          expect(at(role, fetch)).toBeLessThan(gitlabRb);
        } else expect(scripts[role], `${role} must not read ${file}`).not.toContain(fetch);
      }
      expect(scripts[role].trimEnd().endsWith('signal 0')).toBe(true);
      expect(scripts[role]).toContain(`--resource '${role}Group'`);
      expect(scripts[role]).toContain("trap 'signal 1' ERR");
      expect(at(role, 'touch /etc/gitlab/skip-auto-reconfigure')).toBeLessThan(
        at(role, 'dnf install -y gitlab-ee-18.2.1-ee.0'),
      );
    }
  });

  it('Rails claims gitlab-secrets.json with one idempotency token per `{}` version, then waits or seeds', () => {
    const s = scripts.rails;
    expect(s).toContain('--client-request-token "seed-$(jq -r .VersionId <<<"$snapshot")"');
    // The only node that sets up the database is the one whose claim won.
    expect(at('rails', 'if [ "$current" = "$claim" ]; then seeder=1; break; fi')).toBeLessThan(
      at('rails', 'gitlab-rake gitlab:db:configure'),
    );
    // Everyone else writes the shared file before the first reconfigure generates its own keys.
    expect(at('rails', 'printf \'%s\' "$current" > /etc/gitlab/gitlab-secrets.json')).toBeLessThan(
      at('rails', 'gitlab-ctl reconfigure'),
    );
    // The seeder publishes the host keys before the file others wait for.
    expect(at('rails', `put-secret-value --secret-id '${arn('ssh-host-keys')}'`)).toBeLessThan(
      at(
        'rails',
        `put-secret-value --secret-id '${arn('gitlab-secrets-json')}' --secret-string file:///etc/gitlab/gitlab-secrets.json`,
      ),
    );
    expect(s).toContain('SKIP_POST_DEPLOYMENT_MIGRATIONS=true gitlab-rake db:migrate');
    expect(s).toContain('http://127.0.0.1/-/readiness');
  });

  it('Rails looks git SSH keys up in the database: sshd (the real one) applies the command to git only', () => {
    const s = scripts.rails;
    const block = s.slice(s.indexOf("<<'SSHD_EOF'\n") + 13, s.indexOf('SSHD_EOF\nfi'));
    expect(block).toBe(SSHD_KEY_LOOKUP);
    expect(at('rails', 'sshd -t')).toBeGreaterThan(at('rails', 'gitlab-ctl reconfigure'));
    expect(at('rails', 'systemctl reload sshd')).toBeLessThan(s.lastIndexOf('signal 0'));
    for (const role of ['sidekiq', 'gitaly', 'praefect'] as const)
      expect(scripts[role]).not.toContain('AuthorizedKeysCommand');

    const dir = mkdtempSync(join(tmpdir(), 'ha-sshd-'));
    try {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
      const config = join(dir, 'sshd_config');
      writeFileSync(config, `HostKey ${join(dir, 'host_key')}\nPasswordAuthentication no\n${block}`);
      const sshd = ['/usr/sbin/sshd', 'sshd'].find((p) => {
        try {
          execFileSync(p, ['-t', '-f', config], { stdio: 'pipe' });
          return true;
        } catch (e) {
          if ((e as { code?: string }).code === 'ENOENT') return false;
          throw e;
        }
      });
      expect(sshd, 'sshd -t accepts the config').toBeDefined();
      const effective = (user: string) =>
        execFileSync(sshd!, ['-T', '-f', config, '-C', `user=${user},host=h,addr=127.0.0.1`], {
          encoding: 'utf8',
        });
      expect(effective('git')).toContain(
        'authorizedkeyscommand /opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell-authorized-keys-check git %u %k',
      );
      expect(effective('git')).toContain('authorizedkeyscommanduser git');
      expect(effective('ec2-user')).not.toContain('gitlab-shell-authorized-keys-check');
      // After the block, settings apply to every user again.
      writeFileSync(config, `${readFileSync(config, 'utf8')}PermitRootLogin no\n`);
      expect(effective('ec2-user')).toContain('permitrootlogin no');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Rails turns on incremental logging once the database is set up, before it signals ready', () => {
    const enable = at('rails', "gitlab-rails runner 'Feature.enable(:ci_enable_live_trace)'");
    expect(enable).toBeGreaterThan(at('rails', 'gitlab-rake gitlab:db:configure'));
    expect(enable).toBeGreaterThan(
      at('rails', 'SKIP_POST_DEPLOYMENT_MIGRATIONS=true gitlab-rake db:migrate'),
    );
    expect(enable).toBeLessThan(scripts.rails.lastIndexOf('signal 0'));
    for (const role of ['sidekiq', 'gitaly', 'praefect'] as const)
      expect(scripts[role]).not.toContain('ci_enable_live_trace');
  });

  it('Rails schedules the nightly backup on every node, run by the lowest in-service instance only', () => {
    const s = scripts.rails;
    expect(s).toContain(
      "echo '0 2 * * * root /usr/local/sbin/gitlab-backup-once' > /etc/cron.d/gitlab-backup",
    );
    const guard = at('rails', 'if [ "$me" != "$first" ]; then exit 0; fi');
    expect(guard).toBeLessThan(
      at('rails', 'gitlab-backup create CRON=1 STRATEGY=copy REPOSITORIES_SERVER_SIDE=true'),
    );
    expect(s).toContain("Instances[?LifecycleState=='InService'].InstanceId");
    for (const role of ['sidekiq', 'gitaly', 'praefect'] as const)
      expect(scripts[role]).not.toContain('gitlab-backup');
  });

  it('the backup job is valid bash and picks the lowest in-service instance id', () => {
    const job = /cat > \/usr\/local\/sbin\/gitlab-backup-once <<'BACKUP_EOF'\n([\s\S]*?)BACKUP_EOF/.exec(
      scripts.rails,
    )![1]!;
    execFileSync('bash', ['-n'], { input: job });
    // Run the selection with stand-ins for curl, aws and gitlab-backup on PATH.
    const pick = (me: string) =>
      execFileSync(
        'bash',
        [
          '-c',
          `curl() { case "$*" in *instance-id*) echo ${me} ;; *) echo token ;; esac; }
aws() { case "$2" in describe-auto-scaling-instances) echo group ;; *) printf 'i-0bbb\ti-0aaa\ti-0ccc\n' ;; esac; }
export -f curl aws
sed 's|exec /opt/gitlab/bin/gitlab-backup create.*|echo BACKUP|' | bash`,
        ],
        { input: job, encoding: 'utf8' },
      ).trim();
    expect(pick('i-0aaa')).toBe('BACKUP');
    expect(pick('i-0bbb')).toBe('');
  });

  it('of several Rails nodes booting at once, exactly one wins the claim (Secrets Manager idempotency semantics)', async () => {
    // The claim loop as rendered, run by five contenders at once against a stand-in `aws` that keeps
    // the secret in files and applies PutSecretValue's documented rule: a ClientRequestToken that
    // already made a version with a different value is refused (ResourceExistsException).
    const claim = /\nseeder=0\n[\s\S]*?\ndone\n/.exec(scripts.rails)![0];
    const dir = mkdtempSync(join(tmpdir(), 'ha-claim-'));
    try {
      mkdirSync(join(dir, 'bin'));
      mkdirSync(join(dir, 'tokens'));
      writeFileSync(join(dir, 'value'), UNSEEDED);
      writeFileSync(join(dir, 'version'), 'v0-00000000-0000-0000-0000-000000000000');
      const fake = join(dir, 'bin', 'aws');
      writeFileSync(
        fake,
        `#!/bin/bash
set -u
exec 9>"$STATE/lock"; flock 9
value="" token=""
args=("$@")
for ((i = 0; i < \${#args[@]}; i++)); do
  case "\${args[i]}" in
    --secret-string) value="\${args[i + 1]}" ;;
    --client-request-token) token="\${args[i + 1]}" ;;
  esac
done
case "$2" in
  get-secret-value)
    if [[ " $* " == *" --query SecretString "* ]]; then cat "$STATE/value"; echo
    else jq -n --arg v "$(cat "$STATE/value")" --arg id "$(cat "$STATE/version")" '{SecretString: $v, VersionId: $id}'; fi ;;
  put-secret-value)
    if [ -n "$token" ] && [ -e "$STATE/tokens/$token" ]; then
      if [ "$(cat "$STATE/tokens/$token")" = "$value" ]; then exit 0; fi
      echo 'ResourceExistsException' >&2; exit 254
    fi
    token="\${token:-$RANDOM$RANDOM}"
    printf '%s' "$value" > "$STATE/tokens/$token"; printf '%s' "$value" > "$STATE/value"; echo "$token" > "$STATE/version" ;;
esac
`,
      );
      chmodSync(fake, 0o755);
      const run = promisify(execFile);
      const contender = (id: number) =>
        run(
          'bash',
          [
            '-c',
            `set -euo pipefail
secret() { aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text; }
sleep() { :; }
instance_id=i-${id}
${claim}
echo "$seeder"`,
          ],
          { env: { ...process.env, STATE: dir, PATH: `${join(dir, 'bin')}:${process.env.PATH}` } },
        ).then((r) => r.stdout.trim());
      const results = await Promise.all([1, 2, 3, 4, 5].map(contender));
      expect(results.filter((r) => r === '1')).toHaveLength(1);
      const winner = results.indexOf('1') + 1;
      expect(readFileSync(join(dir, 'value'), 'utf8')).toBe(`{"seeding":"i-${winner}"}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Sidekiq only waits for the shared gitlab-secrets.json, never creates it', () => {
    const s = scripts.sidekiq;
    expect(s).toContain(`'${UNSEEDED}' | '{"seeding":'*) sleep 30`);
    expect(s).not.toContain('put-secret-value');
    expect(s).not.toContain('db:migrate');
  });

  it('Gitaly attaches its own volume found by tag, formats only a blank one, and takes its DNS name', () => {
    const s = scripts.gitaly;
    const find = at('gitaly', "--filters 'Name=tag:runner-fleet:gitaly-storage,Values=Dev-GitLab/gitaly-2'");
    const attach = at(
      'gitaly',
      'aws ec2 attach-volume --volume-id "$volume_id" --instance-id "$instance_id"',
    );
    const mount = at('gitaly', 'mount /var/opt/gitlab/git-data');
    expect(find).toBeLessThan(attach);
    expect(attach).toBeLessThan(mount);
    expect(mount).toBeLessThan(at('gitaly', 'gitlab-ctl reconfigure'));
    expect(s).toContain('if ! blkid "$device" >/dev/null 2>&1; then mkfs.xfs');
    expect(s).toContain('"UPSERT"');
    expect(s).toContain('gitaly-2.gitaly.gitlab.internal');
  });

  it('Praefect migrates its database with bounded retries before it restarts', () => {
    expect(at('praefect', 'sql-migrate')).toBeLessThan(at('praefect', 'gitlab-ctl restart praefect'));
    expect(scripts.praefect).toContain('for attempt in 1 2 3 4 5');
  });

  it('refuses to render without what a role needs', () => {
    expect(() => renderHaBootScript({ ...options('rails'), shared: undefined })).toThrow(/gitlab-secrets/);
    expect(() => renderHaBootScript({ ...options('gitaly'), gitaly: undefined })).toThrow(/volume/);
    expect(() => renderHaBootScript({ ...options('praefect'), secrets: {} })).toThrow(
      /praefectExternalToken/,
    );
  });
});

describe('SMTP secret', () => {
  it('is fetched into root-only files by the nodes given it, after the role secrets', () => {
    const rails = renderHaBootScript({ ...options('rails'), smtpSecretId: 'ses-smtp' });
    expect(rails).toContain("secret 'ses-smtp' | jq -er .password > /etc/gitlab/secrets/smtp-password");
    expect(rails.indexOf('umask 077')).toBeLessThan(rails.indexOf("secret 'ses-smtp'"));
    expect(scripts.gitaly).not.toContain('smtp');
  });
});
