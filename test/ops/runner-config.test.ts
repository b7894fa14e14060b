import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderRunnerEntry, runnerName, writeRunnerConfig } from '../../manager/commands/runner-config.js';
import { parseConfigText } from '../../manager/config/load.js';
import { ENTRY_MARKER, MergeError, mergeRunnerEntry } from '../../manager/ops/runner-toml.js';
import { parseRunnerEntry } from '../support/gitlab-runner.js';

const PATHS = { node: '/usr/bin/node', cli: '/usr/lib/node_modules/runner-fleet/dist/cli.js' };

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rf-runner-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function config(extra = '') {
  return parseConfigText(
    `state_dir = "/var/lib/runner-fleet"\nfleet_name = "blue"\n[pool]\nmax_instances = 8\n${extra}`,
    '/etc/runner-fleet/config.toml',
  );
}

const OPERATOR_FILE = `# my gitlab-runner config, hand-written
concurrent = 20   # across all runners
check_interval = 3

[session_server]
  session_timeout = 1800

# the docker runner for the old pipelines
[[runners]]
  name = "docker-old"
  url = "https://gitlab.example.com"
  token = "glrt-other-runner-token"
  executor = "docker"
  [runners.docker]
    image = "alpine:3"   # keep
    volumes = ["/cache"]
  [runners.cache]
    Type = "s3"
    [runners.cache.s3]
      BucketName = "someone-elses"

[[runners]]
  name = "shell"
  executor = "shell"
  pre_build_script = """
echo fake header follows
[[runners]]
"""
`;

describe('runner entry', () => {
  it('is the text parseRunnerEntry understands, with url, marker and no secret when printing', () => {
    const c = config('[gitlab]\nurl = "https://gitlab.corp.example"\nrunner_token_parameter = "/rf/token"\n');
    const text = renderRunnerEntry(c, PATHS);
    expect(text.startsWith(`${ENTRY_MARKER}\n[[runners]]\n`)).toBe(true);
    const entry = parseRunnerEntry(text);
    // The hooks' CommonJS bundle beside cli.js, not cli.js itself (it starts faster).
    expect(entry.custom.run_args).toEqual([
      '/usr/lib/node_modules/runner-fleet/dist/executor/bundle/hooks.cjs',
      'run',
      '--socket',
      '/var/lib/runner-fleet/control.sock',
    ]);
    const doc = parse(text) as { runners: Array<Record<string, unknown>> };
    expect(doc.runners[0]?.url).toBe('https://gitlab.corp.example');
    expect(doc.runners[0]?.token).toBe('glrt-REPLACE-ME');
    expect(doc.runners[0]?.limit).toBe(8);
    expect(text).toContain('fills it from the SSM parameter /rf/token');
    expect(doc.runners[0]?.cache).toBeUndefined();
  });

  it('renders the S3 cache section with IAM auth, region from [cache] or [aws]', () => {
    const c = config('[cache]\nbucket = "rf-cache-123"\nregion = "eu-central-1"\n');
    const doc = parse(renderRunnerEntry(c, PATHS, { token: 'glrt-abc' })) as {
      runners: Array<{ token: string; cache: Record<string, unknown> }>;
    };
    expect(doc.runners[0]?.token).toBe('glrt-abc');
    expect(doc.runners[0]?.cache).toEqual({
      Type: 's3',
      Shared: true,
      s3: { BucketName: 'rf-cache-123', BucketLocation: 'eu-central-1', AuthenticationType: 'iam' },
    });
    const withEndpoint = config(
      '[cache]\nbucket = "rf-cache-123"\nregion = "eu-central-1"\nserver_address = "s3.eu-central-1.amazonaws.com"\n',
    );
    const s3 = (
      parse(renderRunnerEntry(withEndpoint, PATHS)) as { runners: Array<{ cache: { s3: object } }> }
    ).runners[0]?.cache.s3;
    expect(s3).toMatchObject({ ServerAddress: 's3.eu-central-1.amazonaws.com' });
    // Exact text, so a reader of config.toml sees the documented layout.
    expect(renderRunnerEntry(c, PATHS)).toContain(`  [runners.cache]
    Type = "s3"
    Shared = true
    [runners.cache.s3]
      BucketName = "rf-cache-123"
      BucketLocation = "eu-central-1"
      AuthenticationType = "iam"
`);
  });
});

describe('mergeRunnerEntry', () => {
  const c = config('[cache]\nbucket = "rf-cache-123"\nregion = "eu-central-1"\n');
  const entry = renderRunnerEntry(c, PATHS, { token: 'glrt-first' });
  const name = runnerName(c);

  it('creates a file with a global section that allows the whole pool', () => {
    const r = mergeRunnerEntry(undefined, entry, name, { concurrent: 8 });
    expect(r.action).toBe('created');
    const doc = parse(r.text) as { concurrent: number; runners: unknown[] };
    expect(doc.concurrent).toBe(8);
    expect(doc.runners).toHaveLength(1);
  });

  it('appends to an operator file, keeping every byte of it, then is idempotent', () => {
    const first = mergeRunnerEntry(OPERATOR_FILE, entry, name, { concurrent: 8 });
    expect(first.action).toBe('appended');
    expect(first.text.startsWith(OPERATOR_FILE)).toBe(true);
    expect(first.warnings).toEqual([]);
    const doc = parse(first.text) as { runners: Array<{ name: string }> };
    expect(doc.runners.map((r) => r.name)).toEqual(['docker-old', 'shell', 'runner-fleet blue']);
    const second = mergeRunnerEntry(first.text, entry, name, { concurrent: 8 });
    expect(second).toEqual({ text: first.text, action: 'unchanged', warnings: [] });
  });

  it('replaces only our entry in place, wherever it is, keeping the rest byte for byte', () => {
    const before = OPERATOR_FILE.split('\n# the docker runner')[0] as string;
    const after = OPERATOR_FILE.slice(before.length);
    const old = renderRunnerEntry(config(), PATHS, { token: 'glrt-old' }).replace(
      'limit = 8',
      'limit = 8\n  # an operator comment inside our entry goes with it',
    );
    const file = `${before}${old}${after}`;
    const r = mergeRunnerEntry(file, entry, name, { concurrent: 8 });
    expect(r.action).toBe('replaced');
    expect(r.text).toBe(`${before}${entry}${after}`);
    expect(mergeRunnerEntry(r.text, entry, name, { concurrent: 8 }).action).toBe('unchanged');
  });

  it('finds its entry without the marker line (hand-pasted) and keeps a CRLF tail', () => {
    const pasted = renderRunnerEntry(config(), PATHS).replace(`${ENTRY_MARKER}\n`, '');
    const file = `concurrent = 10\r\n\r\n${pasted}`;
    const r = mergeRunnerEntry(file, entry, name, { concurrent: 8 });
    expect(r.action).toBe('replaced');
    expect(r.text).toBe(`concurrent = 10\r\n\r\n${entry}`);
  });

  it('warns when the global concurrent is lower than the pool', () => {
    const r = mergeRunnerEntry('check_interval = 3\n', entry, name, { concurrent: 8 });
    expect(r.warnings.join()).toMatch(/concurrent = 1" \(the default\).*max_instances = 8/);
  });

  it('refuses invalid TOML and duplicate entries rather than guessing', () => {
    expect(() => mergeRunnerEntry('concurrent = = 1\n', entry, name, { concurrent: 8 })).toThrow(MergeError);
    expect(() => mergeRunnerEntry(`${entry}\n${entry}`, entry, name, { concurrent: 8 })).toThrow(
      /2 \[\[runners\]\]/,
    );
  });
});

describe('writeRunnerConfig (runner-config --write)', () => {
  it('reads the token from a file, writes atomically with mode 0600, and a second run writes nothing', async () => {
    const tokenFile = join(dir, 'runner-token');
    writeFileSync(tokenFile, 'glrt-from-file\n', { mode: 0o600 });
    const c = config(`[gitlab]\nurl = "https://gitlab.example.com"\nrunner_token_file = "${tokenFile}"\n`);
    const target = join(dir, 'config.toml');
    writeFileSync(target, OPERATOR_FILE, { mode: 0o640 });
    const first = await writeRunnerConfig(c, PATHS, target, {});
    expect(first).toMatchObject({ code: 0, action: 'appended' });
    expect(first.messages.join('\n')).not.toContain('glrt-from-file');
    const text = readFileSync(target, 'utf8');
    expect(text.startsWith(OPERATOR_FILE)).toBe(true);
    expect(text).toContain('token = "glrt-from-file"');
    expect(statSync(target).mode & 0o777).toBe(0o640); // the operator's mode is kept
    const mtime = statSync(target).mtimeMs;
    const second = await writeRunnerConfig(c, PATHS, target, {});
    expect(second).toMatchObject({ code: 0, action: 'unchanged' });
    expect(statSync(target).mtimeMs).toBe(mtime);
    expect(readdirSync(dir).sort()).toEqual(['config.toml', 'runner-token']); // no temp files left
  });

  it('creates a missing config.toml with mode 0600 and explains a missing token', async () => {
    const c = config(
      `[gitlab]\nurl = "https://gitlab.example.com"\nrunner_token_file = "${join(dir, 'nope')}"\n`,
    );
    const target = join(dir, 'config.toml');
    const r = await writeRunnerConfig(c, PATHS, target, {});
    expect(r.code).toBe(1);
    expect(r.messages.join('\n')).toMatch(/does not exist: run `runner-fleet register`/);
    writeFileSync(join(dir, 'nope'), 'glrt-x\n');
    expect((await writeRunnerConfig(c, PATHS, target, {})).action).toBe('created');
    expect(statSync(target).mode & 0o777).toBe(0o600);
    expect((await writeRunnerConfig(config(), PATHS, target, {})).messages.join()).toMatch(/\[gitlab\] url/);
  });
});
