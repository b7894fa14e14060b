/**
 * The GitLab instance's scripts, run for real with bash against stub commands on PATH (aws, curl,
 * rpm, dnf, gitlab-ctl, blkid, mkfs.xfs, mount …) that record how they were called: what the
 * scripts would do to a volume or a package is read from those calls, not from the script text.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  renderGitlabApplyScript,
  renderGitlabBootScript,
  renderSsmApplyCommand,
} from '../../infra/gitlab/boot-script.js';
import { renderAttachDataVolumeScript } from '../../infra/gitlab/data-volume.js';
import { bashSyntaxCheck } from './user-data.js';

let dir: string;
let bin: string;
let state: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rf-gitlab-scripts-'));
  bin = join(dir, 'bin');
  state = join(dir, 'state');
  mkdirSync(bin);
  mkdirSync(state);
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A stub command: logs `name args…` to state/calls, then runs `body` (bash). */
function stub(name: string, body = '') {
  const file = join(bin, name);
  writeFileSync(file, `#!/bin/bash\necho "${name} $*" >> "${state}/calls"\n${body}\n`);
  chmodSync(file, 0o755);
}
const calls = () =>
  existsSync(join(state, 'calls')) ? readFileSync(join(state, 'calls'), 'utf8').trim().split('\n') : [];

function run(script: string) {
  const file = join(dir, 'script.sh');
  writeFileSync(file, script);
  const result = spawnSync('bash', [file], {
    encoding: 'utf8',
    env: { PATH: `${bin}:/usr/bin:/bin`, HOME: dir },
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('the data volume attach script', () => {
  const volume = 'vol-0123456789abcdef0';
  let byId: string;
  let mount: string;
  let fstab: string;
  const script = (waitAttempts?: number) =>
    renderAttachDataVolumeScript({
      volumeId: volume,
      region: 'eu-west-1',
      byIdDir: byId,
      mountPoint: mount,
      fstab,
      waitAttempts,
    });
  const device = () => join(byId, 'nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0');

  beforeEach(() => {
    byId = join(dir, 'by-id');
    mount = join(dir, 'var-opt-gitlab');
    fstab = join(dir, 'fstab');
    mkdirSync(byId);
    writeFileSync(fstab, '# fstab\n');
    // Each describe-volumes answers the next line of state/volume (the last one repeats).
    stub(
      'aws',
      `case "$1 $2" in
  "ec2 describe-volumes") line="$(head -n1 "${state}/volume")"; [ "$(wc -l < "${state}/volume")" -gt 1 ] && sed -i 1d "${state}/volume"; echo "$line" ;;
  "ec2 attach-volume") touch "${byId}/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0" ;;
  *) exit 1 ;;
esac`,
    );
    stub(
      'curl',
      `case "$*" in *api/token*) echo TOKEN ;; *meta-data/instance-id*) echo i-new ;; *) exit 22 ;; esac`,
    );
    stub(
      'blkid',
      `[ -f "${state}/fs" ] || exit 2
[ "$1" = -s ] && echo 1111-2222 || echo "$1: LABEL=gitlab-data TYPE=xfs"`,
    );
    stub('mkfs.xfs', `touch "${state}/fs"`);
    stub('mountpoint', 'exit 1');
    stub('mount');
    stub('sleep');
  });
  const volumeStates = (...lines: string[]) => writeFileSync(join(state, 'volume'), `${lines.join('\n')}\n`);

  it('first boot: attaches the empty volume, creates a file system, adds it to fstab and mounts it', () => {
    volumeStates('available\tNone');
    const r = run(script());
    expect(r.code, r.stderr).toBe(0);
    const c = calls();
    expect(c).toContain(`aws ec2 attach-volume --volume-id ${volume} --instance-id i-new --device /dev/sdf`);
    expect(c).toContain(`mkfs.xfs -q -L gitlab-data ${device()}`);
    expect(c).toContain(`mount ${mount}`);
    expect(readFileSync(fstab, 'utf8')).toBe(`# fstab\nUUID=1111-2222 ${mount} xfs defaults,nofail 0 2\n`);
    expect(c.findIndex((l) => l.startsWith('aws ec2 attach-volume'))).toBeLessThan(
      c.findIndex((l) => l.startsWith('mkfs.xfs')),
    );
  });

  it('replacement: waits while the old instance still holds the volume, then attaches it and never formats it', () => {
    volumeStates('in-use\ti-old', 'in-use\ti-old', 'available\tNone');
    writeFileSync(join(state, 'fs'), '');
    const r = run(script());
    expect(r.code, r.stderr).toBe(0);
    const c = calls();
    expect(c.filter((l) => l === 'sleep 10')).toHaveLength(2);
    expect(r.stdout).toContain('attached to i-old; waiting for it to be released (1/60)');
    expect(c).toContain(`aws ec2 attach-volume --volume-id ${volume} --instance-id i-new --device /dev/sdf`);
    expect(c.some((l) => l.startsWith('mkfs'))).toBe(false);
  });

  it('run again on the same instance: no second attach, no format, no duplicate fstab line', () => {
    volumeStates('in-use\ti-new');
    writeFileSync(join(state, 'fs'), '');
    writeFileSync(device(), '');
    writeFileSync(fstab, `# fstab\nUUID=1111-2222 ${mount} xfs defaults,nofail 0 2\n`);
    const r = run(script());
    expect(r.code, r.stderr).toBe(0);
    expect(calls().some((l) => l.includes('attach-volume') || l.startsWith('mkfs'))).toBe(false);
    expect(readFileSync(fstab, 'utf8').match(/UUID=/g)).toHaveLength(1);
  });

  it('gives up (bounded) when another instance keeps the volume, naming the command, without detaching it', () => {
    volumeStates('in-use\ti-old');
    const r = run(script(3));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`still attached to i-old`);
    expect(r.stderr).toContain(`aws ec2 detach-volume --volume-id ${volume}`);
    expect(calls().filter((l) => l === 'sleep 10')).toHaveLength(3);
    expect(calls().some((l) => l.includes('attach-volume') || l.includes('detach-volume'))).toBe(false);
  });
});

describe('the apply script (first boot and every configuration change)', () => {
  let etc: string;
  let repos: string;
  const script = (version: string) =>
    renderGitlabApplyScript({
      region: 'eu-west-1',
      gitlabRb: "external_url 'https://gitlab.example.com'\n",
      edition: 'gitlab-ee',
      version,
      secrets: {
        databaseSecretArn: 'arn:db',
        redisAuthTokenSecretArn: 'arn:redis',
        rootPasswordSecretArn: 'arn:root',
      },
      etcDir: etc,
      reposDir: repos,
      secretFiles: {
        dbPassword: join(dir, 'etc-gitlab', 'secrets', 'db-password'),
        redisPassword: join(dir, 'etc-gitlab', 'secrets', 'redis-auth-token'),
        rootPassword: join(dir, 'etc-gitlab', 'secrets', 'initial-root-password'),
      },
    });

  beforeEach(() => {
    etc = join(dir, 'etc-gitlab');
    repos = join(dir, 'repos');
    mkdirSync(repos);
    stub(
      'aws',
      `case "$*" in *arn:db*) echo '{"username":"gitlab","password":"db-pw"}' ;; *arn:redis*) echo redis-token ;; *arn:root*) echo root-pw ;; *) exit 1 ;; esac`,
    );
    // jq .password, enough for the one filter the script uses.
    stub(
      'jq',
      `"${process.execPath}" -e 'console.log(JSON.parse(require("fs").readFileSync(0, "utf8")).password)'`,
    );
    stub(
      'rpm',
      `[ -f "${state}/installed" ] || exit 1
[ "$2" = --qf ] && cat "${state}/installed"; exit 0`,
    );
    stub('dnf');
    stub('gitlab-ctl');
  });
  const installed = (v: string) => writeFileSync(join(state, 'installed'), v);

  it('fresh instance: secrets into 0600 files, gitlab.rb, the signed repository, the pinned package, reconfigure', () => {
    const r = run(script('18.2.1'));
    expect(r.code, r.stderr).toBe(0);
    expect(
      calls().filter((l) => !l.startsWith('aws') && !l.startsWith('jq') && !l.startsWith('rpm')),
    ).toEqual(['dnf install -y gitlab-ee-18.2.1-ee.0', 'gitlab-ctl reconfigure']);
    expect(readFileSync(join(etc, 'secrets', 'db-password'), 'utf8')).toBe('db-pw\n');
    expect(readFileSync(join(etc, 'secrets', 'redis-auth-token'), 'utf8')).toBe('redis-token\n');
    expect(statSync(join(etc, 'secrets', 'db-password')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(etc, 'gitlab.rb'), 'utf8')).toBe("external_url 'https://gitlab.example.com'\n");
    expect(statSync(join(etc, 'gitlab.rb')).mode & 0o777).toBe(0o600);
    const repo = readFileSync(join(repos, 'gitlab-ee.repo'), 'utf8');
    expect(repo).toContain('baseurl=https://packages.gitlab.com/gitlab/gitlab-ee/amazon/2023/$basearch');
    expect(repo).toMatch(/^gpgcheck=1$/m);
    expect(repo).toMatch(/^repo_gpgcheck=1$/m);
    // Secrets never reach the output (the SSM console keeps it).
    expect(r.stdout + r.stderr).not.toMatch(/db-pw|redis-token|root-pw/);
  });

  it('same version: reconfigure only (a gitlab.rb change applied in place)', () => {
    installed('18.2.1');
    const r = run(script('18.2.1'));
    expect(r.code, r.stderr).toBe(0);
    expect(calls().some((l) => l.startsWith('dnf'))).toBe(false);
    expect(calls()).toContain('gitlab-ctl reconfigure');
  });

  it('upgrade from the previous required stop: installs the new version', () => {
    installed('17.11.3');
    const r = run(script('18.2.1'));
    expect(r.code, r.stderr).toBe(0);
    expect(calls()).toContain('dnf install -y gitlab-ee-18.2.1-ee.0');
  });

  it('refuses to jump over a required upgrade stop, or to downgrade, and changes nothing', () => {
    installed('17.3.7');
    let r = run(script('18.2.1'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('refusing GitLab 17.3.7 -> 18.2.1: it skips the required upgrade stop 17.5');
    installed('18.5.1');
    r = run(script('18.2.1'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('a downgrade');
    expect(calls().some((l) => l.startsWith('dnf') || l.startsWith('gitlab-ctl'))).toBe(false);
  });

  it('the SSM command leaves an instance alone until its first boot finished, and is valid bash', () => {
    const command = renderSsmApplyCommand(script('18.2.1'));
    bashSyntaxCheck(command);
    const r = run(command);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('first boot has not finished');
    expect(calls()).toEqual([]);
  });
});

describe('the first-boot script', () => {
  const boot = renderGitlabBootScript({
    region: 'eu-west-1',
    attachScript: renderAttachDataVolumeScript({ volumeId: 'vol-1', region: 'eu-west-1' }),
    applyScript: renderGitlabApplyScript({
      region: 'eu-west-1',
      gitlabRb: "external_url 'https://gitlab.example.com'\n",
      edition: 'gitlab-ee',
      version: '18.2.1',
      secrets: {
        databaseSecretArn: 'arn:db',
        redisAuthTokenSecretArn: 'arn:redis',
        rootPasswordSecretArn: 'arn:root',
      },
    }),
    secrets: { gitlabSecretsJsonSecretArn: 'arn:gitlab-secrets', sshHostKeysSecretArn: 'arn:host-keys' },
    backupBucket: 'poc-backups',
  });
  const at = (text: string) => {
    const i = boot.indexOf(text);
    expect(i, text).toBeGreaterThan(-1);
    return i;
  };

  it('is valid bash', () => bashSyntaxCheck(boot));

  it('mounts the data volume and restores the keys before GitLab is installed, stores them after', () => {
    expect(at('/usr/local/sbin/gitlab-attach-data\n')).toBeLessThan(
      at('host_keys="$(secret \'arn:host-keys\')"'),
    );
    expect(at("secret 'arn:gitlab-secrets'")).toBeLessThan(at('/usr/local/sbin/gitlab-apply-config\n'));
    expect(at('/usr/local/sbin/gitlab-apply-config\n')).toBeLessThan(
      at("put-secret-value --secret-id 'arn:gitlab-secrets'"),
    );
    expect(at("put-secret-value --secret-id 'arn:host-keys'")).toBeLessThan(
      at('touch /var/lib/runner-fleet-gitlab/first-boot-done'),
    );
  });

  it('holds no credential and no install script piped into a shell', () => {
    expect(boot).not.toMatch(/AKIA|aws_secret_access_key|\| *(ba)?sh\b/);
    expect(boot).toContain('gitlab-backup create');
  });
});
