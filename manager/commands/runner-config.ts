import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/schema.js';
import { operatorRegion } from '../ops/aws.js';
import { describeSource, readRunnerToken, TokenError, tokenSource } from '../ops/runner-token.js';
import {
  DEFAULT_RUNNER_CONFIG_PATH,
  ENTRY_MARKER,
  MergeError,
  mergeRunnerEntry,
  writeFileAtomic,
} from '../ops/runner-toml.js';
import { loadConfigOrReport } from './load-config.js';

export async function runnerConfigCommand(options: {
  config: string | undefined;
  write: boolean;
  /** Positional after --write: the gitlab-runner config.toml to merge into. */
  path: string | undefined;
}): Promise<number> {
  const config = loadConfigOrReport(options.config);
  if (typeof config === 'number') return config;
  const paths = { node: process.execPath, cli: cliPath() };
  if (!existsSync(hookEntryPath(paths.cli))) {
    process.stderr.write(
      `runner-fleet runner-config: ${hookEntryPath(paths.cli)} is missing: build with \`npm run build\` (tsc alone does not bundle the hooks)\n`,
    );
    return 1;
  }
  if (!options.write && options.path !== undefined) {
    process.stderr.write(
      `runner-fleet runner-config: unexpected argument "${options.path}" (did you mean --write ${options.path}?)\n`,
    );
    return 64;
  }
  if (!options.write) {
    // Printing never puts the token on a terminal: --write fetches it and writes it to the file.
    process.stdout.write(renderRunnerEntry(config, paths));
    return 0;
  }
  const target = options.path ?? DEFAULT_RUNNER_CONFIG_PATH;
  const result = await writeRunnerConfig(config, paths, target, {});
  for (const line of result.messages) process.stderr.write(`runner-fleet runner-config: ${line}\n`);
  return result.code;
}

export interface WriteResult {
  code: number;
  action?: string;
  messages: string[];
}

/** Fetch the token, render the entry and merge it into `target`; the steps doctor and tests use. */
export async function writeRunnerConfig(
  config: Config,
  paths: { node: string; cli: string },
  target: string,
  aws: Parameters<typeof readRunnerToken>[1],
): Promise<WriteResult> {
  const messages: string[] = [];
  if (!config.gitlab.url) {
    return {
      code: 78,
      messages: ['set [gitlab] url in the config: gitlab-runner needs to know which GitLab to ask for jobs'],
    };
  }
  const source = tokenSource(config);
  if (!source) {
    return {
      code: 78,
      messages: [
        'set [gitlab] runner_token_parameter (SSM) or runner_token_file, or run `runner-fleet register` first',
      ],
    };
  }
  messages.push(`reading the runner token from the ${describeSource(source)}`);
  let token: string;
  try {
    token = await readRunnerToken(config, aws);
  } catch (error) {
    if (error instanceof TokenError) return { code: 1, messages: [...messages, error.message] };
    throw error;
  }
  let existing: string | undefined;
  try {
    existing = readFileSync(target, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      return { code: 1, messages: [...messages, `cannot read ${target}: ${(error as Error).message}`] };
  }
  let merged: ReturnType<typeof mergeRunnerEntry>;
  try {
    merged = mergeRunnerEntry(existing, renderRunnerEntry(config, paths, { token }), runnerName(config), {
      concurrent: config.pool.max_instances,
    });
  } catch (error) {
    if (error instanceof MergeError)
      return { code: 1, messages: [...messages, `${target}: ${error.message}`] };
    throw error;
  }
  messages.push(...merged.warnings.map((w) => `warning: ${target}: ${w}`));
  if (merged.action === 'unchanged') {
    messages.push(`${target}: entry "${runnerName(config)}" is up to date, nothing written`);
    return { code: 0, action: merged.action, messages };
  }
  try {
    writeFileAtomic(target, merged.text, 0o600);
  } catch (error) {
    return { code: 1, messages: [...messages, `cannot write ${target}: ${(error as Error).message}`] };
  }
  messages.push(
    `${target}: entry "${runnerName(config)}" ${merged.action}; gitlab-runner reloads the file by itself within seconds`,
  );
  return { code: 0, action: merged.action, messages };
}

/** The installed cli.js next to this module (dist/manager/commands → dist/cli.js). */
export function cliPath(): string {
  return fileURLToPath(new URL('../../cli.js', import.meta.url));
}

/**
 * What gitlab-runner starts for each hook: the hooks bundled into one CommonJS file next to cli.js
 * (scripts/bundle-hooks.mjs), which starts faster than `cli.js <hook>` and runs the same code.
 */
export function hookEntryPath(cli: string): string {
  return join(dirname(cli), 'executor', 'bundle', 'hooks.cjs');
}

/** The entry's name: how `--write` finds its own entry among the operator's runners. */
export function runnerName(config: Config): string {
  return `runner-fleet ${config.fleet_name}`;
}

const toml = (value: string) => JSON.stringify(value);
const tomlArray = (values: readonly string[]) => `[${values.map(toml).join(', ')}]`;

/**
 * The [[runners]] entry for gitlab-runner's config.toml. Hooks are started as
 * `node …/executor/bundle/hooks.cjs <hook>` with absolute paths, so neither PATH nor the runner's user environment matter. Without a token
 * (printing) the entry carries a placeholder that says where the token comes from.
 */
export function renderRunnerEntry(
  config: Config,
  paths: { node: string; cli: string },
  secrets: { token?: string } = {},
): string {
  const hookArgs = (hook: string) => tomlArray([hookEntryPath(paths.cli), hook, '--socket', config.socket]);
  const seconds = (ms: number) => Math.ceil(ms / 1000);
  // prepare may wait for a boot; allow the configured acquire timeout plus margin before gitlab-runner gives up.
  const prepareTimeout = seconds(config.pool.instance_acquire_timeout) + 60;
  // After SIGTERM, run needs the kill grace to end the job's tree plus time to say so.
  const gracefulKill = seconds(config.executor.kill_grace) + 20;
  const localNote =
    config.provider === 'local'
      ? '  # provider "local": config_exec reports per-job builds/cache dirs under the state directory.\n'
      : '';
  const source = tokenSource(config);
  const url = config.gitlab.url
    ? toml(config.gitlab.url)
    : '"https://gitlab.example.com"  # set [gitlab] url in the runner-fleet config';
  const token =
    secrets.token !== undefined
      ? toml(secrets.token)
      : `"glrt-REPLACE-ME"  # ${source ? `\`runner-fleet runner-config --write\` fills it from the ${describeSource(source)}` : 'the runner authentication token (runner-fleet register, or Settings > CI/CD > Runners)'}`;
  return `${ENTRY_MARKER}
[[runners]]
  name = ${toml(runnerName(config))}
  url = ${url}
  token = ${token}
  executor = "custom"
  # One job per slot: gitlab-runner never asks for more jobs than the pool can hold.
  limit = ${config.pool.max_instances * config.pool.capacity_per_instance}
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
${renderCacheSection(config)}`;
}

/**
 * `[runners.cache]` for the S3 bucket in `[cache]`: gitlab-runner on the manager presigns cache
 * URLs with the instance role (AuthenticationType "iam"), so job instances need no S3 rights.
 * Shared: every manager of the fleet reads the same cache keys.
 */
export function renderCacheSection(config: Config): string {
  const bucket = config.cache.bucket;
  if (!bucket) return '';
  const region = config.cache.region ?? operatorRegion(config);
  const lines = [
    '  [runners.cache]',
    '    Type = "s3"',
    '    Shared = true',
    '    [runners.cache.s3]',
    ...(config.cache.server_address ? [`      ServerAddress = ${toml(config.cache.server_address)}`] : []),
    `      BucketName = ${toml(bucket)}`,
    ...(region ? [`      BucketLocation = ${toml(region)}`] : []),
    '      AuthenticationType = "iam"',
  ];
  return `${lines.join('\n')}\n`;
}
