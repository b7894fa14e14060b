import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { renderUnit } from '../../manager/ops/systemd.js';

const BASE = {
  user: 'gitlab-runner',
  node: '/usr/bin/node',
  cli: '/usr/lib/node_modules/runner-fleet/dist/cli.js',
  configPath: '/etc/runner-fleet/config.toml',
  stateDir: '/var/lib/runner-fleet',
  stopTimeoutMs: 15 * 60_000,
};

/** `Key=value` lines of the [Service] section (repeated keys collected in order). */
function serviceKeys(unit: string): Map<string, string[]> {
  const section = unit.split('[Service]')[1]?.split('[Install]')[0] ?? '';
  const keys = new Map<string, string[]>();
  for (const line of section.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) keys.set(m[1] as string, [...(keys.get(m[1] as string) ?? []), m[2] as string]);
  }
  return keys;
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('systemd unit', () => {
  it('runs the daemon as the service user, drains on stop, reloads with SIGHUP, and is hardened', () => {
    const k = serviceKeys(renderUnit(BASE));
    const one = (key: string) => k.get(key)?.join('|');
    expect(one('User')).toBe('gitlab-runner');
    expect(one('ExecStart')).toBe(
      '/usr/bin/node /usr/lib/node_modules/runner-fleet/dist/cli.js daemon --config /etc/runner-fleet/config.toml',
    );
    expect(one('ExecStop')).toBe(
      '-/usr/bin/node /usr/lib/node_modules/runner-fleet/dist/cli.js drain --wait --config /etc/runner-fleet/config.toml',
    );
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('TimeoutStopSec')).toBe('900s');
    expect(one('Restart')).toBe('on-failure');
    expect(one('RestartPreventExitStatus')).toBe('78');
    expect(one('StateDirectory')).toBe('runner-fleet');
    expect(one('StateDirectoryMode')).toBe('0700');
    expect(one('StandardOutput')).toBe('journal');
    for (const [key, value] of Object.entries({
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ProtectHome: 'yes',
      PrivateTmp: 'yes',
      PrivateDevices: 'yes',
      CapabilityBoundingSet: '',
    }))
      expect(one(key), key).toBe(value);
    expect(k.has('MemoryDenyWriteExecute')).toBe(false); // V8 would crash
  });

  it('uses ReadWritePaths for a custom state dir, keeps /home readable for nvm installs, quotes paths', () => {
    const k = serviceKeys(
      renderUnit({
        ...BASE,
        node: '/home/ops/.nvm/versions/node/v20.11.0/bin/node',
        cli: '/home/ops/my tools/cli.js',
        stateDir: '/srv/runner-fleet',
      }),
    );
    expect(k.get('ReadWritePaths')).toEqual(['/srv/runner-fleet']);
    expect(k.has('StateDirectory')).toBe(false);
    expect(k.get('ProtectHome')).toEqual(['read-only']);
    expect(k.get('ExecStart')?.[0]).toBe(
      '/home/ops/.nvm/versions/node/v20.11.0/bin/node "/home/ops/my tools/cli.js" daemon --config /etc/runner-fleet/config.toml',
    );
    expect(() => renderUnit({ ...BASE, cli: 'dist/cli.js' })).toThrow(/absolute/);
  });

  // .ci/run installs systemd; a machine without systemd-analyze fails here rather than skipping.
  it('passes systemd-analyze verify (ExecStart pointing at a real executable)', () => {
    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    expect(analyze.status, 'systemd-analyze is missing: apt-get install -y systemd').toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'rf-unit-'));
    dirs.push(dir);
    const cli = join(dir, 'cli.js');
    writeFileSync(cli, '#!/usr/bin/env node\n');
    chmodSync(cli, 0o755);
    const unit = join(dir, 'runner-fleet.service');
    writeFileSync(unit, renderUnit({ ...BASE, node: process.execPath, cli }));
    const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', timeout: 60_000 });
    // verify also reports on units ours refers to (gitlab-runner.service is not installed here).
    const problems = `${r.stdout}\n${r.stderr}`
      .split('\n')
      .filter(
        (l) => l.trim() !== '' && l.includes('runner-fleet.service') && !/gitlab-runner\.service/.test(l),
      );
    expect(problems, `${r.stdout}${r.stderr}`).toEqual([]);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});
