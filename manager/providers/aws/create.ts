import type { Logger } from 'pino';
import type { Config } from '../../config/schema.js';
import type { Provider } from '../provider.js';

export async function createAwsProvider(_config: Config, _log: Logger): Promise<Provider> {
  throw new Error('provider "aws" is not available yet in this build');
}
