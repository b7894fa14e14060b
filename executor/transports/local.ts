/**
 * Runs a stage on a local instance: `bash <script>` as a child of the run hook, in its own
 * process group (so cancel can end the whole tree, and the daemon is never its parent), with
 * stdout/stderr handed straight to the hook's own (order and back-pressure come from the kernel).
 */
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
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

export class LocalTransport implements Transport {
  constructor(private readonly connect: LocalConnectInfo) {}

  runStage(request: StageRequest, signal: AbortSignal): Promise<StageOutcome> {
    const { root } = this.connect;
    return new Promise<StageOutcome>((resolve) => {
      // A script given as content reaches bash on fd 3 (a socket, which bash cannot open as a
      // file: cat turns it into a pipe to source) and is never written to disk.
      const args = request.script ? ['-c', '. <(exec cat <&3)'] : [request.scriptPath];
      const child = spawn('bash', args, {
        cwd: join(root, 'home'),
        // A clean environment, as on a fresh machine: the script itself exports the job's variables.
        env: {
          PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
          HOME: join(root, 'home'),
          TMPDIR: join(root, 'tmp'),
          USER: process.env.USER ?? '',
          LOGNAME: process.env.LOGNAME ?? process.env.USER ?? '',
          LANG: process.env.LANG ?? 'C.UTF-8',
          SHELL: '/bin/bash',
          ...request.env,
        },
        stdio: ['ignore', 'inherit', 'inherit', ...(request.script ? (['pipe'] as const) : [])],
        detached: true,
      });
      if (request.script) {
        const pipe = child.stdio[3] as NodeJS.WritableStream & { on(e: 'error', f: () => void): void };
        pipe.on('error', () => {
          // bash ended before reading it all; its exit status says why.
        });
        pipe.end(request.script);
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
      child.once('error', (error) => {
        signal.removeEventListener('abort', onAbort);
        resolve({
          kind: 'system-failure',
          message: `cannot start bash on the local instance: ${error.message}`,
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
