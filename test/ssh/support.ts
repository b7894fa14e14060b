/** Shared set-up for the SSH transport tests: keys, a job directory, and a stage runner. */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createSshTransport,
  type SshTransport,
  type SshTransportOptions,
} from '../../executor/transports/ssh.js';
import type { StageOutcome } from '../../executor/transports/transport.js';
import type { SshConnectInfo } from '../../manager/providers/provider.js';
import type { StoredInstanceKeys } from '../../manager/ssh/keys.js';
import type { Sshd } from '../support/sshd.js';
import type { DriverConfig } from './driver.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const DRIVER = join(REPO, 'dist/test/ssh/driver.js');

export function connectInfo(sshd: Sshd, keys: StoredInstanceKeys, overrides: Partial<SshConnectInfo> = {}) {
  return {
    kind: 'ssh',
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    identityFile: keys.identityFile,
    hostKey: sshd.hostKeyPublic,
    ...overrides,
  } satisfies SshConnectInfo;
}

export interface Job {
  readonly dir: string;
  readonly transport: SshTransport;
  readonly info: SshConnectInfo;
  /** Runs one stage with stdout/stderr captured in files. */
  run(
    script: string,
    options?: { env?: Record<string, string>; signal?: AbortSignal; killGraceMs?: number; stage?: string },
  ): Promise<{ outcome: StageOutcome; stdout: Buffer; stderr: Buffer }>;
  /** Starts a stage and returns at once; output goes to files readable while it runs. */
  start(
    script: string,
    options?: { env?: Record<string, string>; killGraceMs?: number },
  ): {
    controller: AbortController;
    result: Promise<StageOutcome>;
    stdout: () => string;
    stderr: () => string;
  };
  close(): Promise<void>;
}

export async function newJob(
  parent: string,
  info: SshConnectInfo,
  options: SshTransportOptions = {},
): Promise<Job> {
  const dir = await mkdtemp(join(parent, 'job-'));
  let n = 0;
  const files = () => {
    n++;
    return { script: join(dir, `script-${n}`), out: join(dir, `out-${n}`), err: join(dir, `err-${n}`) };
  };
  const begin = async (script: string, killGraceMs: number, env: Record<string, string>, stage: string) => {
    const f = files();
    await writeFile(f.script, script, { mode: 0o700 });
    const out = openSync(f.out, 'w');
    const err = openSync(f.err, 'w');
    const transport = createSshTransport(info, { ...options, stdout: out, stderr: err });
    return { f, out, err, transport, killGraceMs, env, stage };
  };
  const job: Job = {
    dir,
    info,
    transport: createSshTransport(info, options),
    async run(script, o = {}) {
      const b = await begin(script, o.killGraceMs ?? 2_000, o.env ?? {}, o.stage ?? 'build_script');
      const outcome = await b.transport.runStage(
        { scriptPath: b.f.script, stage: b.stage, env: b.env, jobTmpDir: dir, killGraceMs: b.killGraceMs },
        o.signal ?? new AbortController().signal,
      );
      closeSync(b.out);
      closeSync(b.err);
      return { outcome, stdout: readFileSync(b.f.out), stderr: readFileSync(b.f.err) };
    },
    start(script, o = {}) {
      const controller = new AbortController();
      let outFile = '';
      let errFile = '';
      const result = (async () => {
        const b = await begin(script, o.killGraceMs ?? 2_000, o.env ?? {}, 'build_script');
        outFile = b.f.out;
        errFile = b.f.err;
        try {
          return await b.transport.runStage(
            {
              scriptPath: b.f.script,
              stage: b.stage,
              env: b.env,
              jobTmpDir: dir,
              killGraceMs: b.killGraceMs,
            },
            controller.signal,
          );
        } finally {
          closeSync(b.out);
          closeSync(b.err);
        }
      })();
      const read = (file: () => string) => () =>
        file() && existsSync(file()) ? readFileSync(file(), 'utf8') : '';
      return { controller, result, stdout: read(() => outFile), stderr: read(() => errFile) };
    },
    close: () => job.transport.close(dir),
  };
  return job;
}

/** Processes on this machine whose command line matches (pgrep -f), excluding pgrep itself. */
export function pgrep(pattern: string): number[] {
  const result = spawnSync('pgrep', ['-f', pattern], { encoding: 'utf8' });
  return result.stdout.split('\n').filter(Boolean).map(Number);
}

export async function waitFor<T>(check: () => T | undefined | false, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts the driver (a stand-in run hook) in its own process group, as gitlab-runner does. */
export function startDriver(config: DriverConfig, stdio: 'pipe' | 'ignore' = 'pipe') {
  if (!existsSync(DRIVER)) throw new Error(`${DRIVER} missing: run \`npx tsc -p tsconfig.json\` first`);
  return spawn(process.execPath, [DRIVER, JSON.stringify(config)], {
    detached: true,
    stdio: ['ignore', stdio, stdio],
  });
}
