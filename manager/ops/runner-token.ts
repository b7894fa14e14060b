/**
 * The runner authentication token (`glrt-…`): read from an SSM SecureString parameter with the
 * instance role, or from a file; stored there by `register`. The value never reaches a log, an
 * error message or argv: errors name the parameter or file, not what it holds.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import type { Config } from '../config/schema.js';
import { type AwsClientOverrides, awsErrorCode, awsErrorText, clientConfig } from './aws.js';
import { writeFileAtomic } from './runner-toml.js';

export class TokenError extends Error {
  override name = 'TokenError';
}

export type TokenSource = { kind: 'ssm'; parameter: string } | { kind: 'file'; path: string };

export function tokenSource(config: Config): TokenSource | undefined {
  if (config.gitlab.runner_token_parameter)
    return { kind: 'ssm', parameter: config.gitlab.runner_token_parameter };
  if (config.gitlab.runner_token_file) return { kind: 'file', path: config.gitlab.runner_token_file };
  return undefined;
}

export function describeSource(source: TokenSource): string {
  return source.kind === 'ssm' ? `SSM parameter ${source.parameter}` : `file ${source.path}`;
}

const NO_SOURCE =
  'no runner token source: set [gitlab] runner_token_parameter (SSM) or runner_token_file in the config, or run `runner-fleet register`';

export async function readRunnerToken(config: Config, aws: AwsClientOverrides = {}): Promise<string> {
  const source = tokenSource(config);
  if (!source) throw new TokenError(NO_SOURCE);
  let token: string;
  if (source.kind === 'file') {
    try {
      token = readFileSync(source.path, 'utf8').trim();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new TokenError(
        code === 'ENOENT'
          ? `runner token file ${source.path} does not exist: run \`runner-fleet register\` or write the glrt- token there (mode 0600)`
          : `cannot read runner token file ${source.path} (${code})`,
      );
    }
  } else {
    const ssm = new SSMClient(clientConfig(config, aws));
    try {
      const out = await ssm.send(new GetParameterCommand({ Name: source.parameter, WithDecryption: true }));
      token = (out.Parameter?.Value ?? '').trim();
    } catch (error) {
      const code = awsErrorCode(error);
      throw new TokenError(
        code === 'ParameterNotFound'
          ? `SSM parameter ${source.parameter} does not exist: run \`runner-fleet register\` or create it (SecureString)`
          : code === 'AccessDeniedException'
            ? `not allowed to read SSM parameter ${source.parameter}: the manager role needs ssm:GetParameter on it (see \`runner-fleet iam-policy\`)`
            : `cannot read SSM parameter ${source.parameter}: ${awsErrorText(error)}`,
      );
    } finally {
      ssm.destroy();
    }
  }
  if (token === '') throw new TokenError(`the ${describeSource(source)} is empty`);
  if (/[\s"\\]/.test(token))
    throw new TokenError(`the ${describeSource(source)} does not hold a single token`);
  return token;
}

export async function storeRunnerToken(
  config: Config,
  token: string,
  aws: AwsClientOverrides = {},
): Promise<TokenSource> {
  const source = tokenSource(config);
  if (!source) throw new TokenError(NO_SOURCE.replace(', or run `runner-fleet register`', ''));
  if (source.kind === 'file') {
    if (!existsSync(dirname(source.path)) || !statSync(dirname(source.path)).isDirectory())
      throw new TokenError(`directory ${dirname(source.path)} for the runner token file does not exist`);
    writeFileAtomic(source.path, `${token}\n`, 0o600);
    return source;
  }
  const ssm = new SSMClient(clientConfig(config, aws));
  try {
    await ssm.send(
      new PutParameterCommand({
        Name: source.parameter,
        Value: token,
        Type: 'SecureString',
        Overwrite: true,
        Description: 'GitLab runner authentication token (runner-fleet)',
      }),
    );
  } catch (error) {
    throw new TokenError(
      awsErrorCode(error) === 'AccessDeniedException'
        ? `not allowed to write SSM parameter ${source.parameter}: run register with credentials that have ssm:PutParameter on it (the manager role only reads it)`
        : `cannot write SSM parameter ${source.parameter}: ${awsErrorText(error)}`,
    );
  } finally {
    ssm.destroy();
  }
  return source;
}
