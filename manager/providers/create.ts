import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { JOB_UID_COUNT } from './local/job-users.js';
import { LocalProvider } from './local/local-provider.js';
import type { Provider } from './provider.js';

/** The provider named in the config. AWS is loaded lazily so local setups never load the SDK. */
export async function createProvider(config: Config, log: Logger): Promise<Provider> {
  if (config.provider === 'local') {
    const isolated = process.getuid?.() === 0;
    if (!isolated)
      log.warn(
        { uid: process.getuid?.() },
        "local provider without root: jobs run as the daemon's own user and can read its state directory, use its control socket and reach other jobs; this is a single-tenant trial mode (run the daemon and gitlab-runner as root to run each local instance's jobs as a user of its own)",
      );
    return new LocalProvider({
      root: config.local.root,
      fleetName: config.fleet_name,
      managerId: config.manager_id,
      bootTimeMs: config.local.boot_time,
      stateDir: config.state_dir,
      ...(isolated ? { jobUids: { base: config.local.job_uid_base, count: JOB_UID_COUNT } } : {}),
    });
  }
  const { createAwsProvider } = await import('./aws/create.js');
  return createAwsProvider(config, log.child({ module: 'aws' }));
}
