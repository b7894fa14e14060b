import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { withInstanceProfileFallback } from '../credentials/schema.js';
import { locateKey } from './locate.js';
import { CONFIG_ENV, DEFAULT_CONFIG_PATH, SYSTEM_STATE_DIR, socketPathIn, userStateDir } from './paths.js';
import { type Config, configSchema, defaultManagerId } from './schema.js';

/** A config problem the operator must fix; the message names the file, line and key. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface ConfigLocation {
  /** The file to read, or undefined for the embedded default (no file anywhere). */
  path: string | undefined;
  /** True when the operator named the file (flag or env): then a missing file is an error. */
  explicit: boolean;
}

/** --config beats RUNNER_FLEET_CONFIG beats /etc/runner-fleet/config.toml beats the embedded default. */
export function locateConfig(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): ConfigLocation {
  if (flag) return { path: resolve(flag), explicit: true };
  const fromEnv = env[CONFIG_ENV];
  if (fromEnv) return { path: resolve(fromEnv), explicit: true };
  if (existsSync(DEFAULT_CONFIG_PATH)) return { path: DEFAULT_CONFIG_PATH, explicit: false };
  return { path: undefined, explicit: false };
}

export function loadConfig(location: ConfigLocation, env: NodeJS.ProcessEnv = process.env): Config {
  if (location.path === undefined) return resolveConfig(configSchema.parse({}), 'embedded default', env);
  const path = location.path;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ConfigError(`config file not found: ${path}`);
    if (code === 'EACCES') throw new ConfigError(`config file not readable (permission denied): ${path}`);
    if (code === 'EISDIR') throw new ConfigError(`config path is a directory, not a file: ${path}`);
    throw new ConfigError(`cannot read config file ${path}: ${(error as Error).message}`);
  }
  return parseConfigText(text, path, env);
}

export function parseConfigText(text: string, path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (error) {
    if (error instanceof TomlError) {
      const first = error.message.split('\n')[0]?.replace(/^Invalid TOML document: /, '') ?? 'syntax error';
      throw new ConfigError(`${path}:${error.line}:${error.column}: TOML syntax error: ${first}`);
    }
    throw new ConfigError(`${path}: cannot parse TOML: ${(error as Error).message}`);
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => describeIssue(issue, text, path));
    throw new ConfigError(
      lines.length === 1
        ? (lines[0] as string)
        : `${path}: ${lines.length} problems:\n  ${lines.join('\n  ')}`,
    );
  }
  return resolveConfig(result.data, path, env);
}

function describeIssue(issue: z.core.$ZodIssue, text: string, path: string): string {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys
      .map((key) => {
        const keyPath = [...issue.path, key];
        const where = locateKey(text, keyPath);
        const table = issue.path.length ? ` in [${issue.path.join('.')}]` : ' at the top level';
        return `${path}${where ? `:${where}` : ''}: unknown key "${key}"${table} (check the spelling against config.example.toml)`;
      })
      .join('\n  ');
  }
  const where = locateKey(text, issue.path);
  const keyPath = issue.path.map(String).join('.') || '(top level)';
  let message = issue.message;
  if (issue.code === 'invalid_type') {
    const received = receivedType(valueAt(text, issue.path));
    message = `expected ${issue.expected}${received ? `, got ${received}` : ''}`;
  } else if (issue.code === 'invalid_value') {
    // An enum or literal: say what was given beside what is allowed.
    const allowed = issue.values.map((v) => JSON.stringify(v)).join(', ');
    message = `expected one of ${allowed}, got ${receivedType(valueAt(text, issue.path)) ?? 'nothing'}`;
  }
  return `${path}${where ? `:${where}` : ''}: ${keyPath}: ${message}`;
}

function valueAt(text: string, keyPath: readonly PropertyKey[]): unknown {
  try {
    let node: unknown = parse(text);
    for (const key of keyPath) node = (node as Record<PropertyKey, unknown>)?.[key as string];
    return node;
  } catch {
    return undefined;
  }
}

function receivedType(value: unknown): string | undefined {
  if (value === undefined) return 'nothing (the key is missing)';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `string "${value.length > 40 ? `${value.slice(0, 40)}…` : value}"`;
  if (typeof value === 'object' && value !== null) return 'a table';
  return `${typeof value} ${String(value)}`;
}

function resolveConfig(
  parsed: z.output<typeof configSchema>,
  source: string,
  env: NodeJS.ProcessEnv,
): Config {
  const isEmbedded = source === 'embedded default';
  const stateDir = parsed.state_dir ?? (isEmbedded ? userStateDir(env) : SYSTEM_STATE_DIR);
  return {
    ...parsed,
    state_dir: stateDir,
    socket: parsed.socket ?? socketPathIn(stateDir),
    manager_id: parsed.manager_id ?? defaultManagerId(),
    local: { ...parsed.local, root: parsed.local.root ?? join(stateDir, 'local') },
    credentials: withInstanceProfileFallback(
      parsed.credentials,
      parsed.provider === 'aws' ? parsed.aws?.instance_profile : undefined,
    ),
    source,
  };
}
