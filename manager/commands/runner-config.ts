import { fileURLToPath } from 'node:url';
import type { Config } from '../config/schema.js';
import { loadConfigOrReport } from './load-config.js';

export async function runnerConfigCommand(options: { config: string | undefined }): Promise<number> {
  const config = loadConfigOrReport(options.config);
  if (typeof config === 'number') return config;
  process.stdout.write(renderRunnerEntry(config, { node: process.execPath, cli: cliPath() }));
  return 0;
}

/** The installed cli.js next to this module (dist/manager/commands → dist/cli.js). */
export function cliPath(): string {
  return fileURLToPath(new URL('../../cli.js', import.meta.url));
}

const toml = (value: string) => JSON.stringify(value);
const tomlArray = (values: readonly string[]) => `[${values.map(toml).join(', ')}]`;

/**
 * The [[runners]] entry for gitlab-runner's config.toml. Hooks are started as `node cli.js <hook>`
 * with absolute paths, so neither PATH nor the runner's user environment matter.
 */
export function renderRunnerEntry(config: Config, paths: { node: string; cli: string }): string {
  const hookArgs = (hook: string) => tomlArray([paths.cli, hook, '--socket', config.socket]);
  const seconds = (ms: number) => Math.ceil(ms / 1000);
  // prepare may wait for a boot; allow the configured acquire timeout plus margin before gitlab-runner gives up.
  const prepareTimeout = seconds(config.pool.instance_acquire_timeout) + 60;
  // After SIGTERM, run needs the kill grace to end the job's tree plus time to say so.
  const gracefulKill = seconds(config.executor.kill_grace) + 20;
  const localNote =
    config.provider === 'local'
      ? '  # provider "local": config_exec reports per-job builds/cache dirs under the state directory.\n'
      : '';
  return `[[runners]]
  name = ${toml(`runner-fleet ${config.fleet_name}`)}
  url = "https://gitlab.example.com"  # your GitLab URL
  token = "glrt-REPLACE-ME"  # the runner authentication token from GitLab (Settings > CI/CD > Runners)
  executor = "custom"
${localNote}  builds_dir = ${toml(config.executor.builds_dir)}
  cache_dir = ${toml(config.executor.cache_dir)}
  shell = "bash"
  [runners.custom]
    config_exec = ${toml(paths.node)}
    config_args = ${hookArgs('config')}
    config_exec_timeout = 60
    prepare_exec = ${toml(paths.node)}
    prepare_args = ${hookArgs('prepare')}
    prepare_exec_timeout = ${prepareTimeout}
    run_exec = ${toml(paths.node)}
    run_args = ${hookArgs('run')}
    cleanup_exec = ${toml(paths.node)}
    cleanup_args = ${hookArgs('cleanup')}
    cleanup_exec_timeout = 120
    graceful_kill_timeout = ${gracefulKill}
    force_kill_timeout = 10
`;
}
