import { randomBytes } from 'node:crypto';
import { request } from '../../manager/control/client.js';
import type { ExecutorConfig } from '../../manager/control/protocol.js';
import { JOB_ENV, readHookEnv } from '../job-env.js';
import { hookSocketPath } from '../socket.js';
import { runHook, SystemFailure } from './common.js';

/** config_exec: print the JSON gitlab-runner reads (builds_dir, cache_dir, driver, …). */
export function configHook(options: { socket?: string }): Promise<number> {
  return runHook('config', async () => {
    const env = readHookEnv();
    let config: ExecutorConfig;
    try {
      // A daemon restarting right now must not fail the job (daemon_wait is not known yet here).
      // The job secret is proposed here and sent unchanged on every retry: a daemon killed after
      // recording it but before answering recognises the same proposal (manager/control/job-secrets.ts).
      config = await request<ExecutorConfig>(
        hookSocketPath(options.socket),
        { op: 'config', jobId: env.jobId, jobSecret: randomBytes(32).toString('base64url') },
        { connectWaitMs: env.daemonWaitMs },
      );
    } catch (error) {
      throw new SystemFailure((error as Error).message);
    }
    const { idTokenVariable, daemonWaitMs, jobSecret, container, ...executor } = config;
    // job_env reaches only our later hooks (unprefixed), never the job: a trusted channel.
    const jobEnv: Record<string, string> = {
      [JOB_ENV.jobId]: env.jobId,
      [JOB_ENV.idTokenVariable]: idTokenVariable,
      [JOB_ENV.daemonWaitMs]: String(daemonWaitMs),
      [JOB_ENV.jobSecret]: jobSecret,
      ...(container ? { [JOB_ENV.container]: JSON.stringify(container) } : {}),
      ...(env.projectId ? { [JOB_ENV.projectId]: env.projectId } : {}),
    };
    process.stdout.write(`${JSON.stringify({ ...executor, job_env: jobEnv })}\n`);
    return 0;
  });
}
