import { describe, expect, it } from 'vitest';
import { renderJobBootScript, renderManagerBootScript } from '../../infra/fleet/boot-scripts.js';
import { renderFleetConfig } from '../../infra/fleet/runner-configs.js';
import { renderManagerUnit } from '../../infra/fleet/systemd-unit.js';
import { parseConfigText } from '../../manager/config/load.js';

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
    packageSpec: 'runner-fleet@0.1.0',
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
