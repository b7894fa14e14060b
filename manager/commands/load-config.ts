import { ConfigError, loadConfig, locateConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';

/** Load the config for an operator command, or print the problem and return an exit code. */
export function loadConfigOrReport(flag: string | undefined): Config | number {
  try {
    return loadConfig(locateConfig(flag));
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`runner-fleet: ${error.message}\n`);
      return 78; // EX_CONFIG: systemd and scripts can tell a config problem from a crash.
    }
    throw error;
  }
}

/** The control socket for an operator command: --socket, else the config's. */
export function socketOrReport(options: {
  socket: string | undefined;
  config: string | undefined;
}): string | number {
  if (options.socket) return options.socket;
  const config = loadConfigOrReport(options.config);
  return typeof config === 'number' ? config : config.socket;
}
