/**
 * Bad input for every entry point of the job path: the hooks with missing or garbage
 * environment, huge variables, non-UTF-8 output, missing scripts, unknown stages, corrupted
 * lease files and state, malformed control-socket requests. Each gets a clear one-line error and
 * the right exit code; none a stack trace in the job log; none loses track of an instance.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leaseFilePath } from '../../executor/lease-file.js';
import { CLI, eventually, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type RunnerEntry, renderScript, runJob } from '../support/gitlab-runner.js';

let daemon: TestDaemon;
let entry: RunnerEntry;
let nextJob = 7000;
const jobId = () => String(nextJob++);

beforeAll(async () => {
  daemon = await startTestDaemon();
  entry = daemon.entry();
});
afterAll(async () => {
  await daemon?.cleanup();
});

function hook(args: string[], env: NodeJS.ProcessEnv, input?: string) {
  const result = spawnSync(process.execPath, [CLI, ...args, '--socket', daemon.socket], {
    env,
    encoding: 'utf8',
    timeout: 30_000,
    ...(input ? { input } : {}),
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** The env after the config stage, as gitlab-runner builds it: plus the config hook's job_env. */
function configured(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const r = spawnSync(process.execPath, entry.custom.config_args, { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`config hook failed: ${r.stderr}`);
  return { ...env, ...(JSON.parse(r.stdout) as { job_env: Record<string, string> }).job_env };
}

/** One clear line on stderr, no stack trace. */
function expectCleanError(stderr: string, pattern: RegExp) {
  expect(stderr).toMatch(pattern);
  expect(stderr).not.toMatch(/\n\s+at /);
  expect(stderr.trim().split('\n').length).toBeLessThanOrEqual(2);
}

describe('hooks with missing or garbage environment', () => {
  const base = { PATH: process.env.PATH, HOME: process.env.HOME };

  it.each(['config', 'prepare', 'run', 'cleanup'])(
    '%s without any job environment: system failure, one line',
    (name) => {
      const r = hook(name === 'run' ? [name, '/nonexistent', 'build_script'] : [name], base);
      expect(r.code).toBe(2);
      expectCleanError(
        r.stderr,
        new RegExp(`runner-fleet ${name}: .*(JOB_RESPONSE_FILE|CUSTOM_ENV_CI_JOB_ID)`),
      );
    },
  );

  it('refuses a job id that could escape a directory', () => {
    const r = hook(['config'], { ...base, CUSTOM_ENV_CI_JOB_ID: '../../etc', TMPDIR: tmpdir() });
    expect(r.code).toBe(2);
    expectCleanError(r.stderr, /not a valid job id/);
  });

  it('reports an unreadable or garbage JOB_RESPONSE_FILE', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-bad-'));
    const garbage = join(dir, 'response.json');
    writeFileSync(garbage, '{"id": 12, "tok');
    let r = hook(['prepare'], { ...base, JOB_RESPONSE_FILE: garbage, TMPDIR: dir });
    expect(r.code).toBe(2);
    expectCleanError(r.stderr, /JOB_RESPONSE_FILE .* is unreadable: not JSON/);
    r = hook(['prepare'], { ...base, JOB_RESPONSE_FILE: join(dir, 'missing.json'), TMPDIR: dir });
    expect(r.code).toBe(2);
    expectCleanError(r.stderr, /is unreadable: ENOENT/);
  });

  it('uses the default exit codes when BUILD/SYSTEM_FAILURE_EXIT_CODE are garbage', () => {
    const r = hook(['cleanup'], {
      ...base,
      SYSTEM_FAILURE_EXIT_CODE: 'banana',
      BUILD_FAILURE_EXIT_CODE: '-4',
    });
    expect(r.code).toBe(2);
  });

  it('rejects a relative TMPDIR', () => {
    const r = hook(['prepare'], { ...base, CUSTOM_ENV_CI_JOB_ID: '5', TMPDIR: 'relative/dir' });
    expect(r.code).toBe(2);
    expectCleanError(r.stderr, /TMPDIR is not set to an absolute path/);
  });

  it('says the daemon is not running, as a system failure, at once when no daemon ever ran there', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-bad-'));
    // A socket in a directory that does not exist: nothing to wait for (a restarting daemon keeps its directory).
    const r = spawnSync(process.execPath, [CLI, 'config', '--socket', join(dir, 'never', 'nothing.sock')], {
      env: { ...base, CUSTOM_ENV_CI_JOB_ID: '5', TMPDIR: dir },
      encoding: 'utf8',
    });
    expect(r.status).toBe(2);
    expectCleanError(r.stderr, /daemon is not reachable at .*nothing.sock .*is it running\?/);
  });

  it('rejects unknown options with the usage line', () => {
    const r = hook(['prepare', '--frobnicate'], base);
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/unknown option --frobnicate\nUsage: runner-fleet prepare/);
  });
});

describe('run hook with bad arguments', () => {
  it('fails a missing script or missing arguments as a system failure naming them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-run-'));
    chmodSync(dir, 0o711); // the stage cds into it, as the instance's own uid when run as root
    const env = { ...process.env, CUSTOM_ENV_CI_JOB_ID: jobId(), TMPDIR: dir };
    const r = spawnSync(
      process.execPath,
      [...entry.custom.run_args, join(dir, 'no-such-script'), 'build_script'],
      {
        env,
        encoding: 'utf8',
      },
    );
    expect(r.status).toBe(2);
    expectCleanError(r.stderr, /stage build_script: script .*no-such-script does not exist/);
    const usage = spawnSync(process.execPath, [...entry.custom.run_args], { env, encoding: 'utf8' });
    expect(usage.status).toBe(2);
    expectCleanError(usage.stderr, /usage: runner-fleet run <script-path> <stage>/);
  });

  it('runs a stage with an unknown name like any other', async () => {
    const id = jobId();
    const dir = mkdtempSync(join(tmpdir(), 'rf-run-'));
    chmodSync(dir, 0o711); // the stage cds into it, as the instance's own uid when run as root
    const env = configured({ ...process.env, CUSTOM_ENV_CI_JOB_ID: id, TMPDIR: dir });
    expect(spawnSync(process.execPath, entry.custom.prepare_args, { env }).status).toBe(0);
    const script = join(dir, 'script');
    writeFileSync(
      script,
      renderScript({ CI_PROJECT_DIR: dir }, 'echo odd-stage-ran', 'step_release_notes_v2'),
    );
    const r = spawnSync(process.execPath, [...entry.custom.run_args, script, 'step_release_notes_v2'], {
      env,
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('odd-stage-ran');
    expect(spawnSync(process.execPath, entry.custom.cleanup_args, { env }).status).toBe(0);
  });
});

describe('huge and odd job data', () => {
  it('handles thousands of variables (megabytes of environment and script)', async () => {
    const variables: Record<string, string> = {};
    // Each value stays under Linux's 128 KiB per-string limit; together ~1.5 MB of environment.
    for (let i = 0; i < 5000; i++) variables[`BULK_VAR_${i}`] = `v${i}-${'x'.repeat(290)}`;
    variables.BIG_ONE = 'y'.repeat(100_000);
    const result = await runJob(entry, {
      id: jobId(),
      variables,
      script: 'echo "count=$(env | grep -c ^BULK_VAR_) big=${#BIG_ONE}"',
    });
    expect(result.outcome).toBe('success');
    expect(result.log).toContain('count=5000 big=100000');
  });

  it('passes non-UTF-8 bytes through unchanged', async () => {
    const id = jobId();
    const dir = mkdtempSync(join(tmpdir(), 'rf-bytes-'));
    chmodSync(dir, 0o711); // the stage cds into it, as the instance's own uid when run as root
    const env = configured({ ...process.env, CUSTOM_ENV_CI_JOB_ID: id, TMPDIR: dir });
    expect(spawnSync(process.execPath, entry.custom.prepare_args, { env }).status).toBe(0);
    const script = join(dir, 'script');
    writeFileSync(
      script,
      renderScript({ CI_PROJECT_DIR: dir }, "printf '\\xff\\xfe\\x00\\xc3\\x28ok\\n'", 'build_script'),
    );
    const bytes = await new Promise<Buffer>((resolve) => {
      const child = spawn(process.execPath, [...entry.custom.run_args, script, 'build_script'], { env });
      const chunks: Buffer[] = [];
      child.stdout.on('data', (c: Buffer) => chunks.push(c));
      child.on('close', () => resolve(Buffer.concat(chunks)));
    });
    expect([...bytes]).toEqual([0xff, 0xfe, 0x00, 0xc3, 0x28, 0x6f, 0x6b, 0x0a]);
    expect(spawnSync(process.execPath, entry.custom.cleanup_args, { env }).status).toBe(0);
  });
});

describe('corrupted state', () => {
  it('a truncated lease file in TMPDIR falls back to the daemon and the stage still runs', async () => {
    const id = jobId();
    const dir = mkdtempSync(join(tmpdir(), 'rf-lease-'));
    chmodSync(dir, 0o711); // the stage cds into it, as the instance's own uid when run as root
    const env = configured({ ...process.env, CUSTOM_ENV_CI_JOB_ID: id, TMPDIR: dir });
    expect(spawnSync(process.execPath, entry.custom.prepare_args, { env }).status).toBe(0);
    const leaseFile = leaseFilePath(dir);
    writeFileSync(leaseFile, readFileSync(leaseFile, 'utf8').slice(0, 20));
    const script = join(dir, 'script');
    writeFileSync(script, renderScript({ CI_PROJECT_DIR: dir }, 'echo ran-after-corruption', 'build_script'));
    const r = spawnSync(process.execPath, [...entry.custom.run_args, script, 'build_script'], {
      env,
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('ran-after-corruption');
    expect(r.stderr).toMatch(/lease file .* is corrupt; asking the daemon/);
    expect(spawnSync(process.execPath, entry.custom.cleanup_args, { env }).status).toBe(0);
  });

  it("a corrupt lease journal does not stop the daemon: instances stay leased, and the job's cleanup still releases its own", async () => {
    const id = jobId();
    const dir = mkdtempSync(join(tmpdir(), 'rf-journal-'));
    chmodSync(dir, 0o711); // the stage cds into it, as the instance's own uid when run as root
    const env = configured({ ...process.env, CUSTOM_ENV_CI_JOB_ID: id, TMPDIR: dir });
    expect(spawnSync(process.execPath, entry.custom.prepare_args, { env }).status).toBe(0);
    const before = await daemon.status();
    const leased = before.instances.find((i) => i.jobId === id);
    expect(leased?.state).toBe('leased');
    await daemon.kill();
    writeFileSync(join(daemon.stateDir, 'leases.json'), '{"version":1,"leases":[{"jobId"');
    await daemon.start();
    const after = await daemon.status();
    const same = after.instances.find((i) => i.id === leased?.id);
    // Leased by an unknown job: never handed to another job, never scaled in.
    expect(same?.state).toBe('leased');
    // Logged asynchronously: the status answer can overtake the line.
    await eventually(
      'the corrupt journal in the log',
      async () => daemon.output(),
      (o) => /lease journal .* is corrupt/.test(o),
    );
    expect(spawnSync(process.execPath, entry.custom.cleanup_args, { env }).status).toBe(0);
    const cleaned = await eventually(
      'the leased instance cleaned up',
      () => daemon.status(),
      (s) => !s.instances.some((i) => i.id === leased?.id),
    );
    expect(cleaned.instances.find((i) => i.id === leased?.id)).toBeUndefined();
  });
});

describe('malformed control-socket requests', () => {
  const raw = (payload: string) =>
    new Promise<string>((resolve) => {
      const socket = connect(daemon.socket);
      let reply = '';
      socket.setEncoding('utf8');
      socket.on('data', (c: string) => {
        reply += c;
      });
      socket.on('close', () => resolve(reply));
      socket.on('error', () => resolve(reply));
      socket.write(payload);
      setTimeout(() => socket.end(), 2000).unref();
    });

  it.each([
    ['not JSON', 'hello\n', /request is not JSON/],
    ['unknown op', '{"op":"explode"}\n', /unknown op "explode"/],
    ['acquire without a job', '{"op":"acquire"}\n', /"job" must be an object/],
    ['release with a numeric job id', '{"op":"release","jobId":5}\n', /"jobId" must be a non-empty string/],
    ['oversized', `${'x'.repeat(70 * 1024)}\n`, /request too large/],
  ])('answers %s with an error and keeps serving', async (_label, payload, pattern) => {
    const reply = await raw(payload);
    const parsed = JSON.parse(reply.trim()) as { type: string; code: string; message: string };
    expect(parsed).toMatchObject({ type: 'error', code: 'bad-request' });
    expect(parsed.message).toMatch(pattern);
    const status = await daemon.status();
    expect(status.manager.pid).toBeGreaterThan(0);
  });
});
