import { statSync, writeFileSync } from 'node:fs';
import { request } from '../../manager/control/client.js';
import type { Lease } from '../../manager/control/protocol.js';
import { readContainerState } from '../container/state.js';
import { readHookEnv } from '../job-env.js';
import { readLeaseFile, readLostFile, writeLostFile } from '../lease-file.js';
import { hookSocketPath } from '../socket.js';
import { loadTransport } from '../transports/load.js';
import { runHook, SystemFailure } from './common.js';

/**
 * run_exec <script> <stage>: run one stage script on the leased instance and map the outcome to
 * gitlab-runner's exit codes. Talks to the instance directly (lease file), not to the daemon.
 */
export function runStageHook(options: { socket?: string; positionals: string[] }): Promise<number> {
  return runHook('run', async () => {
    const env = readHookEnv();
    const [scriptPath, stage] = options.positionals;
    if (!scriptPath || !stage) {
      throw new SystemFailure('usage: runner-fleet run <script-path> <stage> (gitlab-runner appends both)');
    }
    try {
      if (!statSync(scriptPath).isFile()) throw new Error('not a file');
    } catch {
      throw new SystemFailure(`stage ${stage}: script ${scriptPath} does not exist or is not a file`);
    }
    const lease = await findLease(env.tmpDir, env.jobId, env.jobSecret, options.socket, env.daemonWaitMs);
    const lost = readLostFile(env.tmpDir, lease.instanceId);
    if (lost) {
      // gitlab-runner still runs after_script, the on_failure uploads and cleanup_file_variables
      // after a system failure; on a lost instance each would wait for a dead address.
      throw new SystemFailure(
        `stage ${stage} not run: instance ${lease.instanceId} was lost earlier in this job (${lost.cause})`,
      );
    }
    const transport = await loadTransport(lease.connect);
    // A container job's user stages run in its job container (executor/container/).
    const containerJob = readContainerState(env.tmpDir);
    const container = containerJob
      ? (await import('../container/hooks.js')).containerStageFor(
          containerJob.jobId,
          stage,
          scriptPath,
          lease.killGraceMs,
          env.tmpDir,
          transport,
        )
      : undefined;

    const controller = new AbortController();
    // An instance reached over SSH can vanish silently: hear it from the daemon mid-stage.
    const stageOver = new AbortController();
    const lostMidStage =
      lease.connect.kind === 'ssh'
        ? watchLoss(env.jobId, env.jobSecret, options.socket, stageOver.signal)
        : undefined;
    // A container stage is ended from inside its container; only if it outlives that (or the
    // cancel cannot be started) is it canceled as a bare stage is, by the transport's signals.
    let cancelRequested = false;
    // A signal that comes as the stage ends must not start a cancel, nor a fallback timer that
    // would hold the hook's exit (and gitlab-runner) for kill_grace and more.
    let stageEnded = false;
    let fallback: NodeJS.Timeout | undefined;
    const cancel = () => {
      if (cancelRequested || stageEnded) return;
      cancelRequested = true;
      if (!container) return controller.abort();
      void container.cancel().then((waitMs) => {
        if (stageEnded) return;
        if (waitMs === undefined) controller.abort();
        else fallback = setTimeout(() => controller.abort(), waitMs);
      });
    };
    process.once('SIGTERM', cancel);
    process.once('SIGINT', cancel);
    process.once('SIGHUP', cancel);
    let outcome = await transport
      .runStage(
        {
          scriptPath,
          stage,
          env: { RUNNER_FLEET_INSTANCE_ID: lease.instanceId },
          jobTmpDir: env.tmpDir,
          killGraceMs: lease.killGraceMs,
          ...(container ? { script: container.script, input: container.input } : {}),
          probeGone: () => askFate(env.jobId, env.jobSecret, options.socket, FATE_TIMEOUT_MS),
          ...(lostMidStage ? { lost: lostMidStage } : {}),
        },
        controller.signal,
      )
      .finally(() => {
        stageEnded = true;
        stageOver.abort();
        clearTimeout(fallback);
      });
    // A container stage ended by its cancel exits by itself (143, 137): it was canceled all the same.
    if (cancelRequested && outcome.kind === 'exited') outcome = { kind: 'canceled' };
    switch (outcome.kind) {
      case 'exited':
        if (outcome.code === 0) return 0;
        if (container && !(await container.alive())) {
          throw new SystemFailure(
            `stage ${stage}: the job container on instance ${lease.instanceId} is gone (removed or stopped)`,
          );
        }
        if (env.buildExitCodeFile) writeFileSync(env.buildExitCodeFile, `${outcome.code}\n`);
        return env.buildFailureExitCode;
      case 'canceled':
        process.stderr.write(
          `runner-fleet: stage ${stage} canceled; its processes on ${lease.instanceId} ended\n`,
        );
        return env.buildFailureExitCode;
      case 'system-failure': {
        const cause =
          outcome.cause ?? (await askFate(env.jobId, env.jobSecret, options.socket, FATE_TIMEOUT_MS));
        const message = `${outcome.message}${cause ? `; ${cause}` : ''}`;
        if (cause || outcome.instanceLost) {
          writeLostFile(env.tmpDir, {
            instanceId: lease.instanceId,
            cause: message,
            at: new Date().toISOString(),
          });
        }
        throw new SystemFailure(`stage ${stage} on instance ${lease.instanceId}: ${message}`);
      }
    }
  });
}

/** Long enough for the daemon's one DescribeInstances; a daemon that is down answers at once. */
const FATE_TIMEOUT_MS = 5_000;

/**
 * The daemon's view of why the instance failed (e.g. a spot interruption); never blocks long and
 * never waits for a daemon that is down, so a restart cannot fail a healthy stage.
 */
async function askFate(
  jobId: string,
  jobSecret: string | undefined,
  socket: string | undefined,
  timeoutMs: number,
): Promise<string | undefined> {
  try {
    const fate = await request<{ cause?: string }>(
      hookSocketPath(socket),
      { op: 'fate', jobId, ...(jobSecret ? { jobSecret } : {}) },
      { signal: AbortSignal.timeout(timeoutMs) },
    );
    return fate?.cause;
  } catch {
    return undefined;
  }
}

/** Between two `fate` waits when the daemon is away (restarting) or the wait ended. */
const WATCH_RETRY_MS = 5_000;

/**
 * Holds a `fate` wait open with the daemon while the stage runs: resolves with the cause once
 * the daemon's listing reports the instance gone; never resolves otherwise. A daemon restart
 * only pauses it. An older daemon (no `wait`) ends it, rather than being asked in a loop.
 */
export function watchLoss(
  jobId: string,
  jobSecret: string | undefined,
  socket: string | undefined,
  signal: AbortSignal,
): Promise<string> {
  return new Promise((resolve) => {
    void (async () => {
      while (!signal.aborted) {
        try {
          const fate = await request<{ cause?: string; waited?: boolean }>(
            hookSocketPath(socket),
            { op: 'fate', jobId, wait: true, ...(jobSecret ? { jobSecret } : {}) },
            { signal },
          );
          if (fate?.cause) return resolve(fate.cause);
          if (!fate?.waited) return;
        } catch {
          // Daemon away or the stage ended: try again later, or stop.
        }
        // The stage ended: a pause now would hold the hook's exit open (an abort listener added
        // after the abort never fires), WATCH_RETRY_MS on every stage.
        if (signal.aborted) return;
        await new Promise<void>((r) => {
          const timer = setTimeout(r, WATCH_RETRY_MS);
          const stop = () => {
            clearTimeout(timer);
            r();
          };
          signal.addEventListener('abort', stop, { once: true });
        });
      }
    })();
  });
}

async function findLease(
  tmpDir: string,
  jobId: string,
  jobSecret: string | undefined,
  socket: string | undefined,
  daemonWaitMs: number,
): Promise<Lease> {
  let lease: Lease | undefined;
  try {
    lease = readLeaseFile(tmpDir);
  } catch (error) {
    process.stderr.write(`runner-fleet: ${(error as Error).message}; asking the daemon\n`);
  }
  if (lease) return lease;
  try {
    return await request<Lease>(
      hookSocketPath(socket),
      { op: 'lease', jobId, ...(jobSecret ? { jobSecret } : {}) },
      { connectWaitMs: daemonWaitMs },
    );
  } catch (error) {
    throw new SystemFailure(
      `job ${jobId} has no instance (did prepare succeed?): ${(error as Error).message}`,
    );
  }
}
