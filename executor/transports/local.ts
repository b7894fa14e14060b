/**
 * Runs a stage on a local instance: bash as a child of the run hook, in its own process group (so
 * cancel can end the whole tree, and the daemon is never its parent), with stdout/stderr handed
 * straight to the hook's own (order and back-pressure come from the kernel).
 *
 * When the instance has a uid of its own (daemon and gitlab-runner run as root), bash runs as it.
 * That uid cannot open gitlab-runner's script file (0700, in root's per-job TMPDIR), so the hook
 * reads it and streams it over a pipe, as the SSH transport does: nothing lands on disk, and the
 * script's own commands read /dev/null, not the script.
 */
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LocalConnectInfo } from '../../manager/providers/provider.js';
import type { StageOutcome, StageRequest, Transport } from './transport.js';

const SIGNAL_NUMBERS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGKILL: 9,
  SIGTERM: 15,
  SIGPIPE: 13,
};

/**
 * Moves the piped script to fd 3, gives the script /dev/null as stdin, and sources it from a pipe
 * bash opens itself (a pipe the hook made could not be reopened by another uid through /dev/fd).
 */
const STAGE_COMMAND = 'exec 3<&0 </dev/null; . <(cat <&3) 3<&-';

/**
 * runner-fleet's own scripts (the container stages among them), which run as the hook's uid: read
 * by bash itself, no `cat` per stage (`read -N` reads in blocks, not byte by byte, from a
 * socket), then run in the same shell as `.` would. A process less on every container stage.
 */
const CONTENT_COMMAND =
  'exec 3<&0 </dev/null; IFS= read -r -d "" -N 1073741824 -u 3 rf_t; exec 3<&-; eval "unset rf_t; $rf_t"';

/**
 * The same, reading exactly the script's bytes (LC_ALL=C: -N counts bytes) and leaving fd 3 open
 * on the input after it. ssh/args.ts's stageCommand has its twin for the login shell: not shared,
 * so a local stage's hook reads no module of the SSH transport.
 */
const contentWithInputCommand = (scriptBytes: number) =>
  `exec 3<&0 </dev/null; LC_ALL=C IFS= read -r -d "" -N ${scriptBytes} -u 3 rf_t; eval "unset rf_t; $rf_t"`;

export class LocalTransport implements Transport {
  constructor(private readonly connect: LocalConnectInfo) {}

  runStage(request: StageRequest, signal: AbortSignal): Promise<StageOutcome> {
    const { root } = this.connect;
    // Content scripts are runner-fleet's own container control scripts: they drive dockerd (which
    // the instance's uid may not reach) and run the job's code inside its container. Only
    // gitlab-runner's own stage scripts, which run the job's code right here, drop to the uid.
    const uid = request.script === undefined ? this.connect.uid : undefined;
    const gid = uid === undefined ? undefined : (this.connect.gid ?? uid);
    const user = uid === undefined ? undefined : `runner-fleet-job-${uid}`;
    let script: Buffer;
    try {
      // Content given (e.g. a container stage wrapping gitlab-runner's), else gitlab-runner's file.
      script = request.script ?? readFileSync(request.scriptPath);
    } catch (error) {
      return Promise.resolve({
        kind: 'system-failure',
        message: `cannot read the stage script: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      });
    }
    // Input follows only a content script (a file of gitlab-runner's is read to its end).
    const input = request.script !== undefined ? request.input : undefined;
    return new Promise<StageOutcome>((resolve) => {
      const child = spawn(
        'bash',
        [
          '--noprofile',
          '--norc',
          '-c',
          request.script === undefined
            ? STAGE_COMMAND
            : input === undefined
              ? CONTENT_COMMAND
              : contentWithInputCommand(script.length),
        ],
        {
          cwd: join(root, 'home'),
          // A clean environment, as on a fresh machine: the script itself exports the job's variables.
          // Nothing of the hook's own (job_env, the job secret, CUSTOM_ENV_*) is passed on.
          env: {
            PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
            HOME: join(root, 'home'),
            TMPDIR: join(root, 'tmp'),
            USER: user ?? process.env.USER ?? '',
            LOGNAME: user ?? process.env.LOGNAME ?? process.env.USER ?? '',
            LANG: process.env.LANG ?? 'C.UTF-8',
            SHELL: '/bin/bash',
            ...request.env,
          },
          stdio: ['pipe', 'inherit', 'inherit'],
          detached: true,
          ...(uid !== undefined ? { uid, gid } : {}),
        },
      );
      // bash may exit before reading it all (an early `exit`): that is not an error of ours.
      child.stdin?.on('error', () => undefined);
      if (input !== undefined) {
        child.stdin?.write(script);
        child.stdin?.end(input);
      } else {
        child.stdin?.end(script);
      }
      const pgidFile = child.pid ? join(root, 'pgids', String(child.pid)) : undefined;
      let canceled = false;
      let killTimer: NodeJS.Timeout | undefined;
      const killGroup = (sig: NodeJS.Signals) => {
        try {
          if (child.pid) process.kill(-child.pid, sig);
        } catch {
          // The group is already gone.
        }
      };
      const onAbort = () => {
        canceled = true;
        killGroup('SIGTERM');
        killTimer = setTimeout(() => killGroup('SIGKILL'), request.killGraceMs);
      };
      if (pgidFile) {
        try {
          // Recorded so terminating the instance also ends what the job left running in the background.
          writeFileSync(pgidFile, '', { mode: 0o600 });
        } catch {
          // The instance tree is gone (terminated under us): the spawn error or exit says so.
        }
      }
      signal.addEventListener('abort', onAbort, { once: true });
      child.once('error', (error: NodeJS.ErrnoException) => {
        signal.removeEventListener('abort', onAbort);
        resolve({
          kind: 'system-failure',
          message:
            error.code === 'EPERM' && uid !== undefined
              ? `cannot start bash as the local instance's uid ${uid}: the run hook must run as root (run gitlab-runner as root, as the daemon)`
              : `cannot start bash on the local instance: ${error.message}`,
        });
      });
      child.once('exit', async (code, sig) => {
        signal.removeEventListener('abort', onAbort);
        if (canceled) {
          // bash is gone; give the rest of its tree what is left of the grace, then SIGKILL it.
          await waitGroupGone(child.pid, request.killGraceMs);
          killGroup('SIGKILL');
        }
        if (killTimer) clearTimeout(killTimer);
        if (pgidFile && !groupAlive(child.pid)) rmSync(pgidFile, { force: true });
        if (canceled) return resolve({ kind: 'canceled' });
        resolve({ kind: 'exited', code: code ?? 128 + (SIGNAL_NUMBERS[sig ?? ''] ?? 1) });
      });
    });
  }
}

async function waitGroupGone(pgid: number | undefined, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (groupAlive(pgid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

function groupAlive(pgid: number | undefined): boolean {
  if (!pgid) return false;
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}
