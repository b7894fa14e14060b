/**
 * What the operator commands (runner-config, register, doctor) need from the config's `[aws]`
 * section, and the settings their SDK clients share. The provider has its own clients; these are
 * short-lived, for one command run.
 */
import type { Config } from '../config/schema.js';

/** Credentials and endpoint overrides for tests and unusual setups; normally empty. */
export interface AwsClientOverrides {
  endpoint?: string;
  region?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/**
 * The keys of `[aws]` (manager/providers/aws/config.ts) these commands read. A structural subset,
 * so the operator commands do not depend on the provider's module, only on its key names.
 */
export interface AwsConfig {
  region: string;
  mode: 'asg' | 'fleet';
  asg_name?: string;
  launch_template?: string;
  launch_template_version: string;
  endpoint?: string;
  ssh_user: string;
}

/** The `[aws]` section if the config has one (read loosely: the section belongs to the provider). */
export function awsSection(config: Config): AwsConfig | undefined {
  return (config as Config & { aws?: AwsConfig }).aws;
}

/** The region for SSM/S3 calls: [aws] region, then [cache] region; the SDK chain otherwise. */
export function operatorRegion(config: Config): string | undefined {
  return awsSection(config)?.region ?? config.cache.region;
}

export function clientConfig(
  config: Config,
  overrides: AwsClientOverrides = {},
  region = overrides.region ?? operatorRegion(config),
): {
  region?: string;
  endpoint?: string;
  credentials?: AwsClientOverrides['credentials'];
  maxAttempts: number;
} {
  const endpoint = overrides.endpoint ?? awsSection(config)?.endpoint;
  return {
    ...(region ? { region } : {}),
    ...(endpoint ? { endpoint } : {}),
    ...(overrides.credentials ? { credentials: overrides.credentials } : {}),
    // An operator command should answer in seconds, not ride out minutes of retries.
    maxAttempts: 2,
  };
}

/** An AWS SDK error as one line: its code and message, never the request. */
export function awsErrorText(error: unknown): string {
  const e = error as {
    name?: string;
    Code?: string;
    message?: string;
    $metadata?: { httpStatusCode?: number };
  };
  const code = e.Code ?? e.name ?? 'Error';
  const message = e.message && e.message !== code && e.message !== 'UnknownError' ? `: ${e.message}` : '';
  const status = e.$metadata?.httpStatusCode;
  return `${code}${message}${status && !message ? ` (HTTP ${status})` : ''}`;
}

/** The error code of an AWS SDK error (e.g. `UnauthorizedOperation`, `ParameterNotFound`). */
export function awsErrorCode(error: unknown): string {
  const e = error as { name?: string; Code?: string };
  return e.Code ?? e.name ?? 'Error';
}
