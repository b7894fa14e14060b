import { ConfigError, loadConfig, locateConfig } from '../config/load.js';
import { renderReport, runDoctor } from '../ops/doctor.js';

export async function doctorCommand(o: {
  config: string | undefined;
  json: boolean;
  runnerConfig: string | undefined;
}): Promise<number> {
  let config: Parameters<typeof runDoctor>[0]['config'];
  const location = locateConfig(o.config);
  try {
    config = loadConfig(location);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    config = { error: error.message, source: location.path ?? 'embedded default' };
  }
  const results = await runDoctor({
    config,
    ...(o.runnerConfig ? { runnerConfigPath: o.runnerConfig } : {}),
    // Progress on stderr, so --json output on stdout stays machine-readable.
    progress: (m) => process.stderr.write(`… ${m}\n`),
  });
  const ok = results.every((r) => r.status !== 'fail');
  process.stdout.write(
    o.json ? `${JSON.stringify({ ok, checks: results }, null, 2)}\n` : renderReport(results),
  );
  return ok ? 0 : 1;
}
