import { describe, expect, it } from 'vitest';
import { renderJobBootScript, renderManagerBootScript } from '../../infra/fleet/boot-scripts.js';
import {
  RUNNER_TOKEN_PLACEHOLDER,
  renderFleetConfig,
  renderGitlabRunnerConfig,
} from '../../infra/fleet/runner-configs.js';
import { renderManagerUnit } from '../../infra/fleet/systemd-unit.js';

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

describe('renderGitlabRunnerConfig', () => {
  const toml = renderGitlabRunnerConfig({
    gitlabUrl: 'https://gitlab.example.com',
    runnerName: 'runner-fleet-ci',
    concurrent: 20,
    binPath: '/usr/bin/runner-fleet',
    cacheBucket: 'ci-cache',
    region: 'eu-west-1',
  });

  it('wires every custom executor stage to the CLI', () => {
    expect(toml).toContain('executor = "custom"');
    for (const stage of ['config', 'prepare', 'run', 'cleanup']) {
      expect(toml).toContain(`${stage}_exec = "/usr/bin/runner-fleet"\n    ${stage}_args = ["${stage}"]`);
    }
    expect(toml).toMatch(/builds_dir = "\/builds"\n\s+cache_dir = "\/cache"/);
  });

  it('leaves a placeholder for the token and uses the S3 cache with IAM credentials', () => {
    expect(toml).toContain(`token = "${RUNNER_TOKEN_PLACEHOLDER}"`);
    expect(toml).toContain('AuthenticationType = "iam"');
    expect(toml).toContain('BucketName = "ci-cache"');
    expect(toml).not.toMatch(/AccessKey|SecretKey/);
  });
});

describe('renderManagerBootScript', () => {
  const gitlabRunnerConfig = `token = "${RUNNER_TOKEN_PLACEHOLDER}"\n`;
  const script = renderManagerBootScript({
    region: 'eu-west-1',
    packageSpec: 'runner-fleet@0.1.0',
    runnerTokenParameter: '/runner-fleet/ci/runner-token',
    gitlabRunnerConfig,
    fleetConfig: 'fleet_name = "ci"\n',
    systemdUnit: renderManagerUnit(),
    logGroupName: '/runner-fleet/ci',
  });

  it('reads the runner token from the SSM SecureString at boot, never holding it in user data', () => {
    expect(script).toContain(
      "aws ssm get-parameter --name '/runner-fleet/ci/runner-token' --with-decryption",
    );
    expect(script).toMatch(/os\.environ\["RUNNER_TOKEN"\]/);
    expect(script).toContain('unset RUNNER_TOKEN');
    expect(script).not.toMatch(/glrt-/);
    // The token is substituted from the environment, never passed as an argument.
    expect(script).not.toMatch(/sed .*RUNNER_TOKEN/);
  });

  it('writes gitlab-runner config root-only and the unit, then starts both services', () => {
    const umask = script.indexOf('umask 077');
    expect(umask).toBeGreaterThan(-1);
    expect(umask).toBeLessThan(script.indexOf('> /etc/gitlab-runner/config.toml'));
    expect(script).toContain(
      `cat > /etc/systemd/system/runner-fleet.service <<'UNIT_EOF'\n${renderManagerUnit()}`,
    );
    expect(script).toContain('systemctl enable --now runner-fleet.service');
    expect(script).toContain('systemctl restart gitlab-runner.service');
    expect(script).toContain('npm install --global --prefix /usr runner-fleet@0.1.0');
  });

  it('ships the daemon log to the log group', () => {
    expect(script).toContain('"log_group_name":"/runner-fleet/ci"');
    expect(script).toContain('/var/log/runner-fleet/daemon.log');
  });
});

describe('renderJobBootScript', () => {
  const script = renderJobBootScript({ maxLifetimeMinutes: 240 });

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
});

describe('renderFleetConfig', () => {
  it('describes the stack resources for the daemon', () => {
    const toml = renderFleetConfig({
      fleetName: 'ci',
      region: 'eu-west-1',
      mode: 'asg',
      maxInstances: 20,
      maxInstanceLifetimeMinutes: 240,
      launchTemplateId: 'lt-1',
      autoScalingGroupName: 'runner-fleet-ci-jobs',
      subnetIds: ['subnet-a', 'subnet-b'],
      gitlabUrl: 'https://gitlab.example.com',
      defaultProfile: { name: 'default', instanceProfileArn: 'arn:aws:iam::1:instance-profile/d' },
      profiles: [{ name: 'default', instanceProfileArn: 'arn:aws:iam::1:instance-profile/d' }],
    });
    expect(toml).toContain('fleet_name = "ci"');
    expect(toml).toContain('provider = "aws"');
    expect(toml).toContain('max_instance_lifetime = "240m"');
    expect(toml).toContain('auto_scaling_group_name = "runner-fleet-ci-jobs"');
    expect(toml).toContain('subnets = ["subnet-a", "subnet-b"]');
    expect(toml).toContain('default_profile = "arn:aws:iam::1:instance-profile/d"');
  });
});
