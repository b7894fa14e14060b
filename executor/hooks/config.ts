import { closeSync, openSync, readSync } from 'node:fs';
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
        { op: 'config', jobId: env.jobId, jobSecret: proposedSecret() },
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

/**
 * 32 random bytes from the kernel's CSPRNG, as node:crypto's randomBytes would give. Not from
 * node:crypto: every hook starts from one bundle, so importing it here loads it into every stage's
 * hook process (about 5 % of a bare node start; test/job/hook-imports.test.ts).
 */
function proposedSecret(): string {
  const bytes = Buffer.alloc(32);
  const fd = openSync('/dev/urandom', 'r');
  try {
    if (readSync(fd, bytes, 0, bytes.length, null) !== bytes.length)
      throw new SystemFailure('short read from /dev/urandom');
  } finally {
    closeSync(fd);
  }
  return bytes.toString('base64url');
}
