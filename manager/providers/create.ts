import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import { LocalProvider } from './local/local-provider.js';
import type { Provider } from './provider.js';

/** The provider named in the config. AWS is loaded lazily so local setups never load the SDK. */
export async function createProvider(config: Config, log: Logger): Promise<Provider> {
  if (config.provider === 'local') {
    return new LocalProvider({
      root: config.local.root,
      fleetName: config.fleet_name,
      managerId: config.manager_id,
      bootTimeMs: config.local.boot_time,
    });
  }
  const { createAwsProvider } = await import('./aws/create.js');
  return createAwsProvider(config, log.child({ module: 'aws' }));
}
