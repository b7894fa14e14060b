import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  renderGitlabRunnerInstall,
  renderJobBootScript,
  renderManagerBootScript,
} from '../../infra/fleet/boot-scripts.js';
import { renderFleetConfig } from '../../infra/fleet/runner-configs.js';
import { renderManagerUnit } from '../../infra/fleet/systemd-unit.js';
import { parseConfigText } from '../../manager/config/load.js';
import { bashSyntaxCheck } from './user-data.js';

/** `Key=value` pairs of one systemd section. */
function section(unit: string, name: string): Map<string, string[]> {
  const body = unit.split(/^\[/m).find((s) => s.startsWith(`${name}]`)) ?? '';
  const out = new Map<string, string[]>();
  for (const line of body.split('\n').slice(1)) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) out.set(m[1]!, [...(out.get(m[1]!) ?? []), m[2]!]);
  }
  return out;
}

describe('renderManagerUnit', () => {
  const unit = renderManagerUnit();
  const service = section(unit, 'Service');

  it('runs the daemon as gitlab-runner with the system config, restarting on failure', () => {
    expect(service.get('ExecStart')).toEqual([
      '/usr/bin/runner-fleet daemon --config /etc/runner-fleet/config.toml',
    ]);
    expect(service.get('User')).toEqual(['gitlab-runner']);
    expect(service.get('Restart')).toEqual(['on-failure']);
    expect(service.get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    expect(section(unit, 'Install').get('WantedBy')).toEqual(['multi-user.target']);
    expect(section(unit, 'Unit').get('After')).toEqual(['network-online.target']);
  });

  it('is hardened', () => {
    for (const [key, value] of [
      ['NoNewPrivileges', 'true'],
      ['ProtectSystem', 'strict'],
      ['PrivateTmp', 'true'],
      ['CapabilityBoundingSet', ''],
      ['RestrictSUIDSGID', 'true'],
      ['StateDirectory', 'runner-fleet'],
    ]) {
      expect(service.get(key!), key).toEqual([value]);
    }
  });

  it('takes another binary, config or user', () => {
    const other = section(
      renderManagerUnit({ binPath: '/opt/rf/bin/runner-fleet', configPath: '/srv/c.toml', user: 'ci' }),
      'Service',
    );
    expect(other.get('ExecStart')).toEqual(['/opt/rf/bin/runner-fleet daemon --config /srv/c.toml']);
    expect(other.get('User')).toEqual(['ci']);
  });
});

describe('renderManagerBootScript', () => {
  const script = renderManagerBootScript({
    region: 'eu-west-1',
    packageS3Url: 's3://cdk-assets/abc.tgz',
    gitlabRunner: { version: '18.2.0' },
    fleetConfig: 'fleet_name = "ci"\n',
    systemdUnit: renderManagerUnit(),
    logGroupName: '/runner-fleet/ci',
  });

  it('writes the runner entry with runner-config (token from SSM inside the command, never in the script)', () => {
    expect(script).toContain('runner-fleet runner-config --write --config /etc/runner-fleet/config.toml');
    expect(script).not.toMatch(/glrt-|RUNNER_TOKEN|get-parameter/);
    // The runner-fleet config exists before runner-config reads it.
    expect(script.indexOf('> /etc/runner-fleet/config.toml')).toBeLessThan(
      script.indexOf('runner-fleet runner-config --write'),
    );
  });

  it('writes the unit, then starts both services', () => {
    expect(script).toContain(
      `cat > /etc/systemd/system/runner-fleet.service <<'UNIT_EOF'\n${renderManagerUnit()}`,
    );
    expect(script).toContain('systemctl enable --now runner-fleet.service');
    expect(script).toContain('systemctl restart gitlab-runner.service');
  });

  it('ships the daemon log to the log group', () => {
    expect(script).toContain('"log_group_name":"/runner-fleet/ci"');
    expect(script).toContain('/var/log/runner-fleet/daemon.log');
  });
});

describe('renderJobBootScript', () => {
  const script = renderJobBootScript({ maxLifetimeMinutes: 240, gitlabRunner: { version: '18.2.0' } });

  it('arms the dead-man switch before anything that could fail', () => {
    const lines = script.split('\n');
    expect(lines[0]).toBe('#!/bin/bash');
    const shutdown = lines.findIndex((l) => l.startsWith('shutdown -P +240'));
    expect(shutdown).toBeGreaterThan(0);
    expect(shutdown).toBeLessThan(lines.findIndex((l) => l.startsWith('set -e')));
  });

  it('installs the gitlab-runner helper for cache and artifacts', () => {
    expect(script).toContain('/usr/local/bin/gitlab-runner');
  });

  it('on the baked job AMI (infra/ami) is the dead-man switch alone', () => {
    const baked = renderJobBootScript({ maxLifetimeMinutes: 240 });
    expect(baked.split('\n').filter((l) => l && !l.startsWith('#'))).toEqual([
      "shutdown -P +240 'runner-fleet: maximum instance lifetime reached'",
    ]);
    bashSyntaxCheck(baked);
  });
});

describe('renderFleetConfig', () => {
  const options = {
    fleetName: 'ci',
    region: 'eu-west-1',
    mode: 'asg' as const,
    maxInstances: 20,
    maxInstanceLifetimeMinutes: 240,
    launchTemplateId: 'lt-0123456789abcdef0',
    autoScalingGroupName: 'runner-fleet-ci-jobs',
    subnetIds: ['subnet-0123456789abcdef0', 'subnet-0123456789abcdef1'],
    gitlabUrl: 'https://gitlab.example.com',
    runnerTokenParameter: '/runner-fleet/ci/runner-token',
    cacheBucket: 'ci-cache',
    defaultProfile: { name: 'default', instanceProfileArn: 'arn:aws:iam::111111111111:instance-profile/d' },
    profiles: [{ name: 'default', instanceProfileArn: 'arn:aws:iam::111111111111:instance-profile/d' }],
  };

  it('uses only keys the daemon knows (its own loader parses it)', () => {
    for (const mode of ['asg', 'fleet'] as const) {
      const config = parseConfigText(
        renderFleetConfig({ ...options, mode }),
        '/etc/runner-fleet/config.toml',
        {},
      );
      expect(config.aws?.mode).toBe(mode);
      if (mode === 'asg') expect(config.aws?.asg_name).toBe('runner-fleet-ci-jobs');
      else expect(config.aws?.launch_template).toBe('lt-0123456789abcdef0');
    }
  });

  it('refuses asg mode without a group name', () => {
    expect(() => renderFleetConfig({ ...options, autoScalingGroupName: undefined })).toThrow(/group name/);
  });
});

describe('renderGitlabRunnerInstall (run with bash against a stub curl and install)', () => {
  const binary = 'pretend gitlab-runner binary\n';
  const sha = createHash('sha256').update(binary).digest('hex');
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rf-runner-install-'));
    mkdirSync(join(dir, 'bin'));
    const stub = (name: string, body: string) => {
      writeFileSync(join(dir, 'bin', name), `#!/bin/bash\necho "${name} $*" >> "${dir}/calls"\n${body}\n`);
      chmodSync(join(dir, 'bin', name), 0o755);
    };
    // curl -o FILE URL writes the binary; the release list names it beside other files.
    stub(
      'curl',
      `case "$*" in
  *release.sha256*) printf '%s  binaries/gitlab-runner-linux-arm64\\n%s  binaries/gitlab-runner-linux-amd64\\n' "${'0'.repeat(64)}" "${sha}" ;;
  *) printf '${binary.trimEnd()}\\n' > "$5" ;;
esac`,
    );
    stub('install', '');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const run = (release: { version: string; sha256?: string }) => {
    const r = spawnSync('bash', ['-c', `set -euo pipefail\n${renderGitlabRunnerInstall(release)}`], {
      encoding: 'utf8',
      env: { PATH: `${join(dir, 'bin')}:/usr/bin:/bin` },
    });
    const calls = existsSync(join(dir, 'calls')) ? readFileSync(join(dir, 'calls'), 'utf8') : '';
    return {
      code: r.status,
      stderr: r.stderr,
      installed: /^install -m 0755 .* \/usr\/local\/bin\/gitlab-runner$/m.test(calls),
      calls,
    };
  };

  it('installs the binary whose SHA-256 matches the pinned one', () => {
    const r = run({ version: '18.2.0', sha256: sha });
    expect(r.code, r.stderr).toBe(0);
    expect(r.installed).toBe(true);
    expect(r.calls).toContain(
      'https://gitlab-runner-downloads.s3.amazonaws.com/v18.2.0/binaries/gitlab-runner-linux-amd64',
    );
  });

  it('refuses a binary that does not match, installing nothing', () => {
    const r = run({ version: '18.2.0', sha256: 'f'.repeat(64) });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('gitlab-runner 18.2.0: checksum mismatch, not installing');
    expect(r.installed).toBe(false);
  });

  it('without a pin, checks against the release’s own list (the amd64 line)', () => {
    const r = run({ version: '18.2.0' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.installed).toBe(true);
    expect(r.calls).toContain('v18.2.0/release.sha256');
  });
});
