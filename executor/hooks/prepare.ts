import { request } from '../../manager/control/client.js';
import type { JobInfo, Lease } from '../../manager/control/protocol.js';
import { JOB_ENV, readHookEnv } from '../job-env.js';
import { writeLeaseFile } from '../lease-file.js';
import { hookSocketPath } from '../socket.js';
import { runHook, SystemFailure } from './common.js';

/** prepare_exec: acquire a lease on an instance and remember it for the later stages. */
export function prepareHook(options: { socket?: string }): Promise<number> {
  return runHook('prepare', async () => {
    const env = readHookEnv();
    const started = Date.now();
    const say = (line: string) => process.stdout.write(`${line}\n`);
    say(`runner-fleet: acquiring an instance for job ${env.jobId}`);
    // The ID token the job declared under `id_tokens:`; only the daemon verifies and trusts it.
    const idToken = process.env[`CUSTOM_ENV_${env.idTokenVariable}`];
    // A container job: checked against [container] before any instance is taken for it.
    const containers = process.env[JOB_ENV.container] ? await import('../container/hooks.js') : undefined;
    let containerJob: ReturnType<NonNullable<typeof containers>['planContainers']>;
    try {
      containerJob = containers?.planContainers(process.env.JOB_RESPONSE_FILE);
    } catch (error) {
      throw new SystemFailure((error as Error).message);
    }
    const job: JobInfo = {
      id: env.jobId,
      ...(env.projectPath ? { projectPath: env.projectPath } : {}),
      ...(env.projectId ? { projectId: env.projectId } : {}),
      ...(env.pipelineId ? { pipelineId: env.pipelineId } : {}),
      ...(idToken ? { idToken } : {}),
      ...(env.jobToken ? { jobToken: env.jobToken } : {}),
      ...(containerJob ? { container: true } : {}),
    };
    let lease: Lease;
    try {
      // connectWaitMs: a daemon restarting right now is not a reason to fail the job.
      lease = await request<Lease>(
        hookSocketPath(options.socket),
        { op: 'acquire', job, ...(env.jobSecret ? { jobSecret: env.jobSecret } : {}) },
        { onProgress: (message) => say(`runner-fleet: ${message}`), connectWaitMs: env.daemonWaitMs },
      );
    } catch (error) {
      throw new SystemFailure(`could not acquire an instance: ${(error as Error).message}`);
    }
    writeLeaseFile(env.tmpDir, lease);
    for (const note of lease.notes) say(`runner-fleet: ${note}`);
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    say(`runner-fleet: running on instance ${lease.instanceId} (${lease.provider}), ready in ${seconds} s`);
    if (containers && containerJob) {
      const result = await containers.startContainers(env.jobId, containerJob, env.tmpDir, lease);
      if (result?.failed === 'printed') return env.systemFailureExitCode;
      if (result) throw new SystemFailure(result.failed);
    }
    return 0;
  });
}
