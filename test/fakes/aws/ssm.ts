// SSM Parameter Store over `awsJson1_1` (`X-Amz-Target: AmazonSSM.<Action>`). Errors are JSON
// `{"__type": "<Code>", "message": "…"}`, which the SDK maps to its named exception classes.

import { createHash } from 'node:crypto';
import { AwsError } from './errors.js';
import type { SsmParameter, World } from './world.js';

type Json = Record<string, unknown>;
type Handler = (world: World, input: Json) => Json;

export const ssmActions: Record<string, Handler> = {
  GetParameter: getParameter,
  PutParameter: putParameter,
};

function asString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function arn(world: World, name: string): string {
  return `arn:aws:ssm:${world.region}:${world.accountId}:parameter${name.startsWith('/') ? '' : '/'}${name}`;
}

/** Stand-in for KMS ciphertext: what GetParameter shows for a SecureString without decryption. */
function ciphertext(value: string, keyId: string): string {
  return Buffer.concat([
    Buffer.from('AQICAH'),
    createHash('sha256').update(`${keyId}:${value}`).digest(),
  ]).toString('base64');
}

export function putParameterValue(
  world: World,
  name: string,
  value: string,
  type: SsmParameter['Type'] = 'String',
  overwrite = true,
): SsmParameter {
  const existing = world.parameters.get(name);
  if (existing && !overwrite) {
    throw new AwsError(
      'ParameterAlreadyExists',
      'The parameter already exists. To overwrite this value, set the overwrite option in the request to true.',
    );
  }
  const p: SsmParameter = {
    Name: name,
    Type: type,
    Value: value,
    Version: (existing?.Version ?? 0) + 1,
    LastModifiedDate: world.now(),
    KeyId: type === 'SecureString' ? 'alias/aws/ssm' : undefined,
  };
  world.parameters.set(name, p);
  return p;
}

function getParameter(world: World, input: Json): Json {
  const name = asString(input.Name);
  if (!name)
    throw new AwsError(
      'ValidationException',
      "1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null",
    );
  // `name:3` selects a version; the fake keeps only the latest, so only that one resolves.
  const [base, selector] = name.split(':');
  const p = world.parameters.get(base!);
  if (!p || (selector !== undefined && selector !== String(p.Version)))
    throw new AwsError('ParameterNotFound', '');
  const decrypt = input.WithDecryption === true;
  return {
    Parameter: {
      Name: p.Name,
      Type: p.Type,
      Value: p.Type === 'SecureString' && !decrypt ? ciphertext(p.Value, p.KeyId ?? '') : p.Value,
      Version: p.Version,
      LastModifiedDate: p.LastModifiedDate.getTime() / 1000,
      ARN: arn(world, p.Name),
      DataType: 'text',
      ...(selector !== undefined ? { Selector: `:${selector}` } : {}),
    },
  };
}

function putParameter(world: World, input: Json): Json {
  const name = asString(input.Name);
  const value = asString(input.Value);
  if (!name || value === undefined) throw new AwsError('ValidationException', 'Name and Value are required');
  const type = asString(input.Type) ?? world.parameters.get(name)?.Type ?? 'String';
  if (type !== 'String' && type !== 'StringList' && type !== 'SecureString') {
    throw new AwsError(
      'ValidationException',
      `1 validation error detected: Value '${type}' at 'type' failed to satisfy constraint`,
    );
  }
  if (value.length > 4096)
    throw new AwsError('ValidationException', 'Standard parameters are limited to 4 KB');
  const p = putParameterValue(world, name, value, type, input.Overwrite === true);
  return { Version: p.Version, Tier: 'Standard' };
}
