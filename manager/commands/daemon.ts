import { ConfigError, loadConfig, locateConfig } from '../config/load.js';
import { fleetTuning, startDaemon } from '../daemon.js';
import { createLogger } from '../log.js';
import { loadConfigOrReport } from './load-config.js';

export async function daemonCommand(options: { config: string | undefined }): Promise<number> {
  const config = loadConfigOrReport(options.config);
  if (typeof config === 'number') return config;
  const log = createLogger(config.log_level);
  let daemon: Awaited<ReturnType<typeof startDaemon>>;
  try {
    daemon = await startDaemon(config, log);
  } catch (error) {
    log.fatal({ error: (error as Error).message }, 'daemon could not start');
    log.flush();
    process.stderr.write(`runner-fleet daemon: ${(error as Error).message}\n`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      void daemon.stop(signal).then(() => {
        log.flush();
        resolve(0);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      // Reload the pool policy; leases, instances and the provider stay as they are.
      try {
        const fresh = loadConfig(locateConfig(options.config));
        daemon.fleet.updateTuning(fleetTuning(fresh));
        log.info({ config: fresh.source }, 'configuration reloaded');
      } catch (error) {
        const message = error instanceof ConfigError ? error.message : (error as Error).message;
        log.error({ error: message }, 'reload failed; keeping the running configuration');
      }
    });
  });
}
