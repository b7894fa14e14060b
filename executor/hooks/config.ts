import { request } from '../../manager/control/client.js';
import type { ExecutorConfig } from '../../manager/control/protocol.js';
import { readHookEnv } from '../job-env.js';
import { hookSocketPath } from '../socket.js';
import { runHook, SystemFailure } from './common.js';

/** config_exec: print the JSON gitlab-runner reads (builds_dir, cache_dir, driver, …). */
export function configHook(options: { socket?: string }): Promise<number> {
  return runHook('config', async () => {
    const env = readHookEnv();
    let config: ExecutorConfig;
    try {
      config = await request<ExecutorConfig>(hookSocketPath(options.socket), {
        op: 'config',
        jobId: env.jobId,
      });
    } catch (error) {
      throw new SystemFailure((error as Error).message);
    }
    process.stdout.write(`${JSON.stringify(config)}\n`);
    return 0;
  });
}
