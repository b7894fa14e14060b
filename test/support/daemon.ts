/**
 * Starts the real daemon (`node dist/cli.js daemon`) as a child process with its own state
 * directory, for tests that drive the hooks end to end. Keeps every line the daemon printed so
 * tests can scan the logs (e.g. for secrets).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { request } from '../../manager/control/client.js';
import { readOperatorToken } from '../../manager/control/operator-token.js';
import type { StatusReport } from '../../manager/control/protocol.js';
import { parseRunnerEntry, type RunnerEntry, SECRET_SENTINEL } from './gitlab-runner.js';

/** The repository root, whether this file runs from test/ (vitest) or dist/test/ (bench, soak). */
export const REPO_ROOT = ((): string => {
  let dir = resolve(import.meta.dirname, '..', '..');
  if (!existsSync(join(dir, 'package.json'))) dir = resolve(dir, '..');
  return dir;
})();
export const CLI = join(REPO_ROOT, 'dist', 'cli.js');

export interface TestDaemon {
  readonly dir: string;
  readonly stateDir: string;
  readonly socket: string;
  readonly configPath: string;
  /** Everything the daemon processes printed so far (all restarts). */
  output(): string;
  /** The running daemon process's pid, if one runs (e.g. to sample its memory). */
  pid(): number | undefined;
  entry(): RunnerEntry;
  status(): Promise<StatusReport>;
  /**
   * Resolves with the daemon's output from now on once it matches `pattern` (every restart
   * counts). No deadline of its own: the test's timeout bounds it.
   */
  waitForOutput(pattern: RegExp): Promise<string>;
  /** SIGSTOP the daemon: it accepts nothing more and answers nothing until killed. */
  freeze(): void;
  /** SIGKILL the daemon (no clean stop) and wait for it to die. */
  kill(): Promise<void>;
  /** SIGTERM and wait for a clean exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  start(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function startTestDaemon(
  configBody = '',
  options: {
    env?: NodeJS.ProcessEnv;
    /** Only state_dir and configBody: no debug log, no fast reconcile (what the bench measures). */
    asShipped?: boolean;
  } = {},
): Promise<TestDaemon> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test does)`);
  const dir = mkdtempSync(join(tmpdir(), 'rf-daemon-'));
  // As root, local jobs run as uids of their own and must traverse (not list) the way to their tree.
  chmodSync(dir, 0o711);
  const stateDir = join(dir, 'state');
  const socket = join(stateDir, 'control.sock');
  const configPath = join(dir, 'config.toml');
  const testing = options.asShipped
    ? ''
    : `log_level = "debug"\n${configBody.includes('[pool]') ? '' : '[pool]\nreconcile_interval = "1s"\n'}`;
  writeFileSync(configPath, `state_dir = ${JSON.stringify(stateDir)}\n${testing}${configBody}\n`);
  let out = '';
  let watchers: Array<{ from: number; pattern: RegExp; resolve: (text: string) => void }> = [];
  const append = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    watchers = watchers.filter((w) => {
      const text = out.slice(w.from);
      if (!w.pattern.test(text)) return true;
      w.resolve(text);
      return false;
    });
  };
  let child: ChildProcess | undefined;
  let exited: Promise<number | null> = Promise.resolve(null);

  const daemon: TestDaemon = {
    dir,
    stateDir,
    socket,
    configPath,
    output: () => out,
    pid: () => (child && child.exitCode === null && child.signalCode === null ? child.pid : undefined),
    entry: () =>
      parseRunnerEntry(
        execFileSync(process.execPath, [CLI, 'runner-config', '--config', configPath], { encoding: 'utf8' }),
      ),
    status: () => request<StatusReport>(socket, { op: 'status', operatorToken: readOperatorToken(socket) }),
    waitForOutput: (pattern) =>
      new Promise((resolve) => {
        watchers.push({ from: out.length, pattern, resolve });
      }),
    freeze() {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGSTOP');
    },
    async kill() {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
      child.kill('SIGTERM');
      return exited;
    },
    async start() {
      const proc = spawn(process.execPath, [CLI, 'daemon', '--config', configPath], {
        env: { ...process.env, ...options.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = proc;
      proc.stdout?.on('data', append);
      proc.stderr?.on('data', append);
      exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
      const deadline = Date.now() + 120_000;
      for (;;) {
        try {
          await request(socket, { op: 'ping' });
          return;
        } catch {
          if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}:\n${out}`);
          if (Date.now() > deadline) throw new Error(`daemon did not answer within 120 s:\n${out}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    },
    async cleanup() {
      await daemon.stop();
      rmSync(dir, { recursive: true, force: true });
      const at = out.indexOf(SECRET_SENTINEL);
      if (at >= 0) {
        throw new Error(
          `secret sentinel found in the daemon's output: …${out.slice(Math.max(0, at - 200), at + 60)}…`,
        );
      }
    },
  };
  await daemon.start();
  return daemon;
}

/**
 * Wait until `check` passes on what `probe` returns, probing again every 100 ms; throws (naming
 * `what` and the last value) if it still fails after `ms`. The bound is generous on purpose: it
 * only turns a hang into a clear failure, it never states how fast something must be.
 */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T>,
  check: (value: T) => boolean,
  ms = 180_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const last = await probe();
    if (check(last)) return last;
    if (Date.now() >= deadline) {
      throw new Error(
        `timed out after ${ms / 1000} s waiting for ${what}; last value: ${JSON.stringify(last)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
