import { request } from '../../manager/control/client.js';
import { JOB_ENV, readHookEnv } from '../job-env.js';
import { readLeaseFile, removeLeaseFile } from '../lease-file.js';
import { hookSocketPath } from '../socket.js';
import { loadTransport } from '../transports/load.js';
import { runHook, SystemFailure } from './common.js';

/**
 * cleanup_exec: release the job's lease. Always called, even when prepare died halfway, so it
 * works from what is persisted (the daemon knows leases by job id) and is idempotent.
 */
export function cleanupHook(options: { socket?: string }): Promise<number> {
  return runHook('cleanup', async () => {
    const env = readHookEnv();
    let lease: ReturnType<typeof readLeaseFile>;
    try {
      lease = readLeaseFile(env.tmpDir);
    } catch {
      lease = undefined; // A corrupt lease file changes nothing: the daemon releases by job id.
    }
    // Containers first (by label, from the job's TMPDIR state): the instance may serve another job.
    if (lease && process.env[JOB_ENV.container]) {
      await (await import('../container/hooks.js')).cleanupContainers(env.tmpDir, lease.connect);
    }
    if (lease?.connect.kind === 'ssh') {
      const transport = await loadTransport(lease.connect);
      await transport.close?.(env.tmpDir).catch(() => undefined);
    }
    let result: { released: boolean; instanceId?: string };
    try {
      result = await request(
        hookSocketPath(options.socket),
        {
          op: 'release',
          jobId: env.jobId,
          reason: 'cleanup',
          ...(env.jobSecret ? { jobSecret: env.jobSecret } : {}),
          ...(lease ? { instanceId: lease.instanceId } : {}),
        },
        { connectWaitMs: env.daemonWaitMs },
      );
    } catch (error) {
      throw new SystemFailure(
        `could not release job ${env.jobId}'s instance: ${(error as Error).message}; the daemon's reaper will end it`,
      );
    }
    removeLeaseFile(env.tmpDir);
    process.stdout.write(
      result.released
        ? `runner-fleet: released instance ${result.instanceId ?? '(gone)'} of job ${env.jobId}\n`
        : `runner-fleet: job ${env.jobId} held no instance; nothing to release\n`,
    );
    return 0;
  });
}
