import { statSync, writeFileSync } from 'node:fs';
import { request } from '../../manager/control/client.js';
import type { Lease } from '../../manager/control/protocol.js';
import { readContainerState } from '../container/state.js';
import { readHookEnv } from '../job-env.js';
import { readLeaseFile } from '../lease-file.js';
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
    const cancel = () => controller.abort();
    process.once('SIGTERM', cancel);
    process.once('SIGINT', cancel);
    process.once('SIGHUP', cancel);
    const outcome = await transport.runStage(
      {
        scriptPath,
        stage,
        env: { RUNNER_FLEET_INSTANCE_ID: lease.instanceId },
        jobTmpDir: env.tmpDir,
        killGraceMs: lease.killGraceMs,
        ...(container ? { script: container.script } : {}),
      },
      controller.signal,
    );
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
        const cause = await askFate(env.jobId, env.jobSecret, options.socket);
        throw new SystemFailure(
          `stage ${stage} on instance ${lease.instanceId}: ${outcome.message}${cause ? `; ${cause}` : ''}`,
        );
      }
    }
  });
}

/** The daemon's view of why the instance failed (e.g. a spot interruption); never blocks long. */
async function askFate(
  jobId: string,
  jobSecret: string | undefined,
  socket: string | undefined,
): Promise<string | undefined> {
  try {
    const fate = await request<{ cause?: string }>(
      hookSocketPath(socket),
      { op: 'fate', jobId, ...(jobSecret ? { jobSecret } : {}) },
      { signal: AbortSignal.timeout(5000) },
    );
    return fate?.cause;
  } catch {
    return undefined;
  }
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
