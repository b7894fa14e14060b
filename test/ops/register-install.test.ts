import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../manager/config/load.js';
import { install } from '../../manager/ops/install.js';
import { register } from '../../manager/ops/register.js';
import { AwsFake } from '../fakes/aws/fake.js';
import { type FakeGitlab, startFakeGitlab } from './fake-gitlab.js';

let gitlab: FakeGitlab;
let dir: string;
beforeEach(async () => {
  gitlab = await startFakeGitlab();
  dir = mkdtempSync(join(tmpdir(), 'rf-register-'));
});
afterEach(async () => {
  await gitlab.close();
  rmSync(dir, { recursive: true, force: true });
});

const PAT = 'glpat-not-in-any-output';

describe('register', () => {
  it('creates the runner and stores its glrt- token in a 0600 file; the PAT goes only in a header', async () => {
    gitlab.accessTokens.set(PAT, ['create_runner']);
    const file = join(dir, 'runner-token');
    const config = parseConfigText(
      `[gitlab]\nrunner_token_file = "${file}"\n`,
      '/etc/runner-fleet/config.toml',
    );
    const said: string[] = [];
    const r = await register(
      config,
      {
        gitlabUrl: gitlab.url,
        accessToken: PAT,
        runnerType: 'group_type',
        groupId: 7,
        tagList: ['aws', 'x'],
      },
      (l) => said.push(l),
    );
    expect(r).toMatchObject({ ok: true, runnerId: 100 });
    expect(readFileSync(file, 'utf8')).toMatch(/^glrt-fake100\w+\n$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const req = gitlab.requests[0];
    expect(req?.headers['private-token']).toBe(PAT);
    expect(JSON.parse(req?.body ?? '{}')).toEqual({
      runner_type: 'group_type',
      group_id: 7,
      tag_list: 'aws,x',
    });
    expect([...said, r.message].join('\n')).not.toMatch(/glpat-|glrt-/);
  });

  it('explains 403 (missing create_runner scope) and 401, and stores nothing', async () => {
    gitlab.accessTokens.set(PAT, ['api', 'read_user']);
    const file = join(dir, 'runner-token');
    const config = parseConfigText(
      `[gitlab]\nrunner_token_file = "${file}"\n`,
      '/etc/runner-fleet/config.toml',
    );
    const forbidden = await register(
      config,
      { gitlabUrl: gitlab.url, accessToken: PAT, runnerType: 'instance_type' },
      () => {},
    );
    expect(forbidden.ok).toBe(false);
    expect(forbidden.message).toMatch(/403 Forbidden.*"create_runner" scope.*administrator/);
    const unknown = await register(
      config,
      { gitlabUrl: gitlab.url, accessToken: 'glpat-wrong', runnerType: 'instance_type' },
      () => {},
    );
    expect(unknown.message).toMatch(/401 Unauthorized.*wrong, expired or revoked/);
    expect(unknown.message).not.toContain('glpat-wrong');
    expect(existsSync(file)).toBe(false);
  });

  it('stores in SSM as a SecureString, and deletes the new runner again if storing fails', async () => {
    const fake = await AwsFake.start();
    try {
      gitlab.accessTokens.set(PAT, ['create_runner']);
      const config = parseConfigText(
        `[gitlab]\nrunner_token_parameter = "/rf/token"\n[cache]\nregion = "${fake.world.region}"\n`,
        '/etc/runner-fleet/config.toml',
      );
      const aws = { endpoint: fake.url, credentials: fake.clientConfig().credentials };
      const ok = await register(
        config,
        { gitlabUrl: gitlab.url, accessToken: PAT, runnerType: 'instance_type' },
        () => {},
        aws,
      );
      expect(ok.ok).toBe(true);
      expect(fake.parameter('/rf/token')).toMatchObject({
        Type: 'SecureString',
        Value: expect.stringMatching(/^glrt-/),
      });
      expect(JSON.stringify(fake.calls('PutParameter'))).not.toContain('glrt-');
      fake.failNext('PutParameter', { code: 'AccessDeniedException', message: 'not allowed' });
      const failed = await register(
        config,
        { gitlabUrl: gitlab.url, accessToken: PAT, runnerType: 'instance_type' },
        () => {},
        aws,
      );
      expect(failed.ok).toBe(false);
      expect(failed.message).toMatch(
        /not allowed to write SSM parameter \/rf\/token.*runner 101 was deleted again/,
      );
      expect([...gitlab.runnerTokens.values()]).toEqual([100]);
    } finally {
      await fake.close();
    }
  });
});

describe('install', () => {
  const base = (root: string) => ({
    root,
    user: 'gitlab-runner',
    node: '/usr/bin/node',
    cli: '/usr/lib/node_modules/runner-fleet/dist/cli.js',
    stateDir: '/var/lib/runner-fleet',
    stopTimeoutMs: 900_000,
    exampleConfig: '# example config\n',
    dryRun: false,
    lookupUser: () => ({ uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }),
  });

  it('writes unit, state dir and config; a second run changes nothing; an edited config is kept', () => {
    const root = join(dir, 'root');
    const dry: string[] = [];
    expect(install({ ...base(root), dryRun: true }, (l) => dry.push(l)).ok).toBe(true);
    expect(existsSync(root)).toBe(false);
    expect(dry.join('\n')).toMatch(/would create \/etc\/systemd\/system\/runner-fleet.service/);

    const first = install(base(root));
    expect(first.steps.map((s) => s.action)).toEqual(['create', 'create', 'create']);
    expect(statSync(join(root, 'var/lib/runner-fleet')).mode & 0o777).toBe(0o700);
    // Only the state directory is private: the parents a fresh root lacked are the usual 0755.
    expect(statSync(join(root, 'var')).mode & 0o777).toBe(0o755);
    expect(statSync(join(root, 'var/lib')).mode & 0o777).toBe(0o755);
    expect(statSync(join(root, 'etc/runner-fleet/config.toml')).mode & 0o777).toBe(0o640);
    expect(readFileSync(join(root, 'etc/systemd/system/runner-fleet.service'), 'utf8')).toContain(
      'User=gitlab-runner',
    );

    writeFileSync(join(root, 'etc/runner-fleet/config.toml'), 'fleet_name = "mine"\n');
    const second = install(base(root));
    expect(second.steps.map((s) => s.action)).toEqual(['unchanged', 'unchanged', 'unchanged']);
    expect(readFileSync(join(root, 'etc/runner-fleet/config.toml'), 'utf8')).toBe('fleet_name = "mine"\n');

    const moved = install({ ...base(root), cli: '/opt/runner-fleet/dist/cli.js' });
    expect(moved.steps[2]).toMatchObject({
      action: 'update',
      path: '/etc/systemd/system/runner-fleet.service',
    });
  });

  it('refuses a user that does not exist, with the fix', () => {
    const r = install({ ...base(join(dir, 'r')), lookupUser: () => undefined });
    expect(r.ok).toBe(false);
    expect(r.steps[0]?.detail).toMatch(/install gitlab-runner first/);
  });
});
