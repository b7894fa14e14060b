/**
 * The hooks start as new processes for every stage of every job, so what they load is measured:
 * the whole import graph of each hook (static imports, plus the lazily imported hook module and
 * both transports) must be our own small modules and node: built-ins — no AWS SDK, no pino, no
 * zod, no TOML parser. gitlab-runner starts them from the CommonJS bundle (runner-config's entry),
 * whose real processes are checked for the files they read.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hookEntryPath } from '../../manager/commands/runner-config.js';
import { CLI, REPO_ROOT } from '../support/daemon.js';

const DIST = join(REPO_ROOT, 'dist');
const SPECIFIER = /(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function graph(entries: string[]): { files: Set<string>; bare: Set<string>; bytes: number } {
  const files = new Set<string>();
  const bare = new Set<string>();
  const queue = [...entries];
  let bytes = 0;
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    bytes += statSync(file).size;
    for (const match of text.matchAll(SPECIFIER)) {
      const spec = (match[1] ?? match[2]) as string;
      if (spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
      else bare.add(spec);
    }
  }
  return { files, bare, bytes };
}

describe('hook import graph', () => {
  const cli = join(DIST, 'cli.js');
  const hookEntry = (name: string) => join(DIST, 'executor', 'hooks', `${name}.js`);
  // cli.js lazily imports every command; a hook process loads cli.js itself plus its own hook.
  const cliAlone = (() => {
    const text = readFileSync(cli, 'utf8');
    return [...text.matchAll(/^import .* from ['"]([^'"]+)['"]/gm)].map((m) => m[1]);
  })();

  it('cli.js has no static imports at all (every command is loaded on demand)', () => {
    expect(cliAlone).toEqual([]);
  });

  it.each(['config', 'prepare', 'run', 'cleanup'])(
    'the %s hook loads only small local modules and built-ins',
    (name) => {
      // cli.js itself (no static imports, checked above) plus everything the hook module reaches.
      const { files, bare, bytes: hookBytes } = graph([hookEntry(name)]);
      const bytes = hookBytes + statSync(cli).size;
      files.add(cli);
      expect([...bare]).toEqual([]);
      for (const file of files) expect(file.startsWith(DIST)).toBe(true);
      // A budget, not a target: today about 15 modules and 60 KB with both transports.
      expect(files.size).toBeLessThanOrEqual(25);
      expect(bytes).toBeLessThan(150_000);
      console.log(`${name}: ${files.size} modules, ${(bytes / 1024).toFixed(1)} KiB`);
    },
  );
});

describe('the hook bundle gitlab-runner starts (dist/executor/bundle)', () => {
  const entry = hookEntryPath(CLI);
  const bundleDir = dirname(entry);
  const dir = mkdtempSync(join(tmpdir(), 'rf-bundle-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Run a hook from the bundle; a preload reports every file the process required (none by import). */
  const loadedBy = (args: string[], env: NodeJS.ProcessEnv) => {
    const report = join(dir, `loaded-${args[0]}.json`);
    const preload = join(dir, 'report-loaded.cjs');
    writeFileSync(
      preload,
      `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(report)}, JSON.stringify({ files: Object.keys(require.cache), builtins: process.moduleLoadList })));\n`,
    );
    const r = spawnSync(process.execPath, ['--require', preload, entry, ...args], { env, encoding: 'utf8' });
    const loaded = JSON.parse(readFileSync(report, 'utf8')) as { files: string[]; builtins: string[] };
    const files = loaded.files.filter((f) => f !== preload);
    // Built-ins a hook loads cost start-up too: node:crypto alone is about 5 % of a bare node start.
    const loadsCrypto = loaded.builtins.includes('NativeModule crypto');
    return { ...r, files, loadsCrypto };
  };

  it('runner-config points every hook at it', () => {
    const text = spawnSync(process.execPath, [CLI, 'runner-config'], {
      encoding: 'utf8',
      env: { ...process.env, RUNNER_FLEET_CONFIG: '' },
    }).stdout;
    for (const hook of ['config', 'prepare', 'run', 'cleanup'])
      expect(text).toContain(`${hook}_args = [${JSON.stringify(entry)}, "${hook}"`);
  });

  it('requires only node: built-ins and its own chunks, and is small', () => {
    const files = readdirSync(bundleDir);
    expect(files).toContain('hooks.cjs');
    let bytes = 0;
    for (const file of files) {
      expect(file).toMatch(/\.cjs$/);
      const text = readFileSync(join(bundleDir, file), 'utf8');
      bytes += text.length;
      expect(text).not.toMatch(/\bimport\(/);
      for (const m of text.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g)) {
        const spec = m[1] as string;
        if (spec.startsWith('node:')) continue;
        expect(spec, `${file} requires ${spec}`).toMatch(/^\.\/[\w-]+\.cjs$/);
        expect(files).toContain(spec.slice(2));
      }
    }
    // Everything the hooks can ever load, SSH and container code included (about 90 KB today).
    expect(bytes).toBeLessThan(120_000);
    // What every hook call reads (about 25 KB): the SSH and container code (about 55 KB) stay out.
    expect(statSync(entry).size).toBeLessThan(32_000);
  });

  it('a config call reads one file: the hook code is all in hooks.cjs', () => {
    // No daemon: the socket's directory does not exist, so config fails at once (exit 2).
    const r = loadedBy(['config', '--socket', join(dir, 'none', 'control.sock')], {
      PATH: process.env.PATH,
      TMPDIR: dir,
      CUSTOM_ENV_CI_JOB_ID: '41',
    });
    expect(r.stderr).toMatch(/runner-fleet config: .*not reachable/);
    expect(r.status).toBe(2);
    expect(r.files).toEqual([entry]);
    expect(r.loadsCrypto).toBe(false);
  });

  it('a stage on a local instance reads two: hooks.cjs and the local transport, not SSH or container code, nor node:crypto', () => {
    const job = join(dir, 'job');
    const root = join(dir, 'instance');
    for (const sub of ['home', 'tmp', 'pgids']) mkdirSync(join(root, sub), { recursive: true });
    mkdirSync(job, { recursive: true });
    writeFileSync(
      join(job, 'runner-fleet-lease.json'),
      JSON.stringify({
        jobId: '42',
        instanceId: 'local-bundle',
        provider: 'local',
        connect: { kind: 'local', root },
        leasedAt: new Date().toISOString(),
        killGraceMs: 1000,
        notes: [],
      }),
    );
    const script = join(job, 'script');
    writeFileSync(script, '#!/usr/bin/env bash\nset -eo pipefail\necho "stage ran"\nexit 0\n', {
      mode: 0o700,
    });
    const r = loadedBy(['run', '--socket', join(dir, 'none', 'control.sock'), script, 'build_script'], {
      PATH: process.env.PATH,
      TMPDIR: job,
      RUNNER_FLEET_JOB_ID: '42',
    });
    expect(r.stdout).toBe('stage ran\n');
    expect(r.status).toBe(0);
    expect(r.files.map((f) => f.replace(/-[\w-]{8}\.cjs$/, '.cjs'))).toEqual([
      entry,
      join(bundleDir, 'transports-local.cjs'),
    ]);
    expect(r.loadsCrypto).toBe(false);
  });

  it('answers a bad call with its usage (exit 64), as cli.js does', () => {
    for (const args of [['nonsense'], ['config', '--sockt', 'x'], ['config', '--socket']]) {
      const r = spawnSync(process.execPath, [entry, ...args], { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(64);
      expect(r.stderr).toMatch(/Usage: /);
    }
  });
});
