import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parseDuration } from '../manager/config/duration.js';
import { ConfigError, loadConfig, locateConfig, parseConfigText } from '../manager/config/load.js';
import { CLI, REPO_ROOT } from './support/daemon.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'rf-config-'));

function fileWith(text: string): string {
  const path = join(dir, `c-${Math.random().toString(16).slice(2)}.toml`);
  writeFileSync(path, text);
  return path;
}

describe('config loading', () => {
  it('accepts config.example.toml and every default it documents', () => {
    const config = loadConfig({ path: join(REPO_ROOT, 'config.example.toml'), explicit: true });
    const defaults = parseConfigText('', 'empty.toml');
    expect(config.pool).toEqual(defaults.pool);
    expect(config.executor).toEqual(defaults.executor);
    expect(config.container).toEqual(defaults.container);
    expect(config.provider).toBe('local');
  });

  it('names the file and line of a TOML syntax error', () => {
    const path = fileWith('fleet_name = "a"\n[pool\nidle_count = 1\n');
    expect(() => loadConfig({ path, explicit: true })).toThrow(
      new RegExp(`${path}:2:\\d+: TOML syntax error`),
    );
  });

  it('refuses an unknown key, naming it, its table and its line', () => {
    const path = fileWith('[pool]\nidle_count = 1\nmax_instnces = 4\n');
    expect(() => loadConfig({ path, explicit: true })).toThrow(
      `${path}:3: unknown key "max_instnces" in [pool]`,
    );
  });

  it('names the key path and the expected type of a wrong value', () => {
    expect(() => parseConfigText('[pool]\nmax_instances = "ten"\n', 'f.toml')).toThrow(
      'f.toml:2: pool.max_instances: expected number, got string "ten"',
    );
    expect(() => parseConfigText('[pool]\nidle_time = "5 minutes"\n', 'f.toml')).toThrow(
      /f.toml:2: pool.idle_time: expected a duration/,
    );
    expect(() => parseConfigText('provider = "gcp"\n', 'f.toml')).toThrow(/f.toml:1: provider: /);
  });

  it('says what was given when a value is not one of the allowed ones', () => {
    expect(() => parseConfigText('provider = "gcp"\n', 'f.toml')).toThrow(
      'f.toml:1: provider: expected one of "local", "aws", got string "gcp"',
    );
    expect(() => parseConfigText('log_level = "verbose"\n', 'f.toml')).toThrow(
      /f.toml:1: log_level: expected one of "trace", .*, got string "verbose"/,
    );
  });

  it('names both keys of a contradiction between two valid values', () => {
    const cases: Array<[string, RegExp]> = [
      [
        '[pool]\nmax_instances = 2\nidle_count = 5\n',
        /f.toml:3: pool.idle_count: 5 is more than pool.max_instances \(2\)/,
      ],
      [
        '[pool]\nmax_instances = 2\n[[pool.policy]]\nperiods = ["* 9-17 * * 1-5"]\nidle_count = 4\n',
        /f.toml:5: pool.policy.0.idle_count: 4 is more than pool.max_instances \(2\)/,
      ],
      [
        '[pool]\nmax_instances = 3\n[pool.adaptive]\nmax_idle = 9\n',
        /f.toml:4: pool.adaptive.max_idle: 9 is more than pool.max_instances \(3\)/,
      ],
      [
        '[pool]\norphan_boot_grace = "5m"\n',
        /f.toml:2: pool.orphan_boot_grace: 5m is shorter than pool.instance_ready_timeout \(10m\)/,
      ],
    ];
    for (const [text, message] of cases) expect(() => parseConfigText(text, 'f.toml'), text).toThrow(message);
    // At the limit is fine.
    expect(parseConfigText('[pool]\nmax_instances = 2\nidle_count = 2\n', 'f.toml').pool.idle_count).toBe(2);
  });

  it('refuses per-rule launch settings in asg mode, naming the line and the key', () => {
    const text = `provider = "aws"
[aws]
region = "eu-west-1"
mode = "asg"
asg_name = "runners"
[credentials]
gitlab_url = "https://gitlab.example.com"
[[credentials.rule]]
name = "deploy-prod"
project_path = "platform/**"
instance_profile = "prod-deploy"
subnets = ["subnet-0123456789abcdef0"]
`;
    expect(() => parseConfigText(text, 'f.toml')).toThrow(
      /f.toml:12: credentials.rule.0.subnets: rule "deploy-prod": subnets needs aws.mode = "fleet"/,
    );
    expect(() =>
      parseConfigText(
        text.replace(
          'mode = "asg"\nasg_name = "runners"',
          'mode = "fleet"\nlaunch_template = "lt-0123456789abcdef0"\nsubnets = ["subnet-0123456789abcdef0"]',
        ),
        'f.toml',
      ),
    ).not.toThrow();
  });

  it('says so when a named file is missing', () => {
    expect(() => loadConfig({ path: join(dir, 'nope.toml'), explicit: true })).toThrow(ConfigError);
    expect(() => loadConfig({ path: join(dir, 'nope.toml'), explicit: true })).toThrow(
      /config file not found: .*nope.toml/,
    );
  });

  it('prefers --config, then RUNNER_FLEET_CONFIG', () => {
    expect(locateConfig('/x/a.toml', { RUNNER_FLEET_CONFIG: '/y/b.toml' }).path).toBe('/x/a.toml');
    expect(locateConfig(undefined, { RUNNER_FLEET_CONFIG: '/y/b.toml' }).path).toBe('/y/b.toml');
  });

  it('uses a per-user state directory without any config file', () => {
    const config = loadConfig({ path: undefined, explicit: false }, { XDG_STATE_HOME: '/tmp/xdg' });
    expect(config.state_dir).toBe('/tmp/xdg/runner-fleet');
    expect(config.socket).toBe('/tmp/xdg/runner-fleet/control.sock');
    expect(config.source).toBe('embedded default');
  });

  it("without XDG_STATE_HOME: root uses the system state directory (its jobs cannot pass root's 0700 home)", () => {
    const config = loadConfig({ path: undefined, explicit: false }, { HOME: '/home/someone' });
    const asRoot = process.getuid?.() === 0;
    expect(config.state_dir).toBe(
      asRoot ? '/var/lib/runner-fleet' : join(homedir(), '.local/state/runner-fleet'),
    );
  });

  it('parses durations the way gitlab-runner writes them', () => {
    expect(parseDuration('30s')).toBe(30_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('250ms')).toBe(250);
    expect(parseDuration('0')).toBe(0);
    expect(parseDuration('300')).toBeUndefined();
    expect(parseDuration('5 m')).toBeUndefined();
  });
});

describe('daemon refuses bad configs at once', () => {
  const daemon = async (path: string) => {
    const started = Date.now();
    try {
      await run(process.execPath, [CLI, 'daemon', '--config', path], { timeout: 20_000 });
      return { code: 0, stderr: '', ms: Date.now() - started };
    } catch (error) {
      const e = error as { code: number; stderr: string };
      return { code: e.code, stderr: e.stderr, ms: Date.now() - started };
    }
  };

  it('exits 78 naming an unknown key', async () => {
    const path = fileWith('[pool]\nidle_cuont = 2\n');
    const result = await daemon(path);
    expect(result.code).toBe(78);
    expect(result.stderr).toContain(`${path}:2: unknown key "idle_cuont" in [pool]`);
  });

  it('exits 78 naming the line of a syntax error', async () => {
    const path = fileWith('fleet_name = "unterminated\n');
    const result = await daemon(path);
    expect(result.code).toBe(78);
    expect(result.stderr).toContain(`${path}:1:`);
  });

  it('exits 78 naming a missing file', async () => {
    const result = await daemon(join(dir, 'missing.toml'));
    expect(result.code).toBe(78);
    expect(result.stderr).toContain(`config file not found: ${join(dir, 'missing.toml')}`);
  });
});
