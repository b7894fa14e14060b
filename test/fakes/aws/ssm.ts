// SSM Parameter Store over `awsJson1_1` (`X-Amz-Target: AmazonSSM.<Action>`). Errors are JSON
// `{"__type": "<Code>", "message": "…"}`, which the SDK maps to its named exception classes.

import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { AwsError } from './errors.js';
import type { CommandInvocation, SsmParameter, World } from './world.js';

type Json = Record<string, unknown>;
type Handler = (world: World, input: Json) => Json;

export const ssmActions: Record<string, Handler> = {
  GetParameter: getParameter,
  PutParameter: putParameter,
  SendCommand: sendCommand,
  GetCommandInvocation: getCommandInvocation,
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

// ------------------------------------------------------------------ Run Command

/** SSM keeps at most this much of each stream in GetCommandInvocation. */
const OUTPUT_LIMIT = 24_000;

/**
 * SendCommand runs the document's shell lines with bash on this machine, one process per target
 * instance, as the SSM agent would on the instance: the test seeds the document (`addDocument`)
 * and points its URLs at servers on 127.0.0.1. Only running, known instances are accepted.
 */
function sendCommand(world: World, input: Json): Json {
  const documentName = asString(input.DocumentName);
  const instanceIds = Array.isArray(input.InstanceIds) ? (input.InstanceIds as string[]) : [];
  if (!documentName) throw new AwsError('ValidationException', 'DocumentName is required');
  if (input.Targets !== undefined)
    throw new AwsError('ValidationException', 'the fake takes InstanceIds only');
  const lines = world.documents.get(documentName);
  if (!lines) throw new AwsError('InvalidDocument', `Document ${documentName} does not exist`);
  if (instanceIds.length === 0) throw new AwsError('ValidationException', 'InstanceIds is required');
  for (const id of instanceIds) {
    if (world.instances.get(id)?.State !== 'running')
      throw new AwsError('InvalidInstanceId', `Instance ${id} is not in a valid state for this command`);
  }
  const timeoutSeconds = Number(input.TimeoutSeconds ?? 3600);
  const commandId = randomUUID();
  for (const instanceId of instanceIds) {
    const invocation: CommandInvocation = {
      CommandId: commandId,
      InstanceId: instanceId,
      DocumentName: documentName,
      Status: 'InProgress',
      ResponseCode: -1,
      StandardOutputContent: '',
      StandardErrorContent: '',
    };
    const child = spawn('bash', ['-c', lines.join('\n')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutSeconds * 1000,
    });
    invocation.child = child;
    child.stdout.on('data', (d: Buffer) => {
      invocation.StandardOutputContent = (invocation.StandardOutputContent + d).slice(0, OUTPUT_LIMIT);
    });
    child.stderr.on('data', (d: Buffer) => {
      invocation.StandardErrorContent = (invocation.StandardErrorContent + d).slice(0, OUTPUT_LIMIT);
    });
    child.on('close', (code, signal) => {
      invocation.child = undefined;
      invocation.ResponseCode = code ?? -1;
      invocation.Status = signal ? 'TimedOut' : code === 0 ? 'Success' : 'Failed';
    });
    world.invocations.set(`${commandId}/${instanceId}`, invocation);
  }
  return {
    Command: {
      CommandId: commandId,
      DocumentName: documentName,
      InstanceIds: instanceIds,
      Status: 'Pending',
      TimeoutSeconds: timeoutSeconds,
    },
  };
}

function getCommandInvocation(world: World, input: Json): Json {
  const key = `${asString(input.CommandId)}/${asString(input.InstanceId)}`;
  const invocation = world.invocations.get(key);
  if (!invocation) throw new AwsError('InvocationDoesNotExist', '');
  const { child: _child, ...answer } = invocation;
  return { ...answer, StatusDetails: invocation.Status };
}

/** Seed a Command document from its content (schemaVersion 2.2, aws:runShellScript steps). */
export function addDocumentContent(world: World, name: string, content: unknown): void {
  const steps = (content as { mainSteps?: { action?: string; inputs?: { runCommand?: unknown } }[] })
    ?.mainSteps;
  if (!Array.isArray(steps) || steps.length === 0)
    throw new Error(`aws fake: document ${name} has no mainSteps`);
  const lines: string[] = [];
  for (const step of steps) {
    if (step.action !== 'aws:runShellScript' || !Array.isArray(step.inputs?.runCommand))
      throw new Error(`aws fake: document ${name}: only aws:runShellScript steps with runCommand lines`);
    lines.push(...(step.inputs.runCommand as string[]));
  }
  world.documents.set(name, lines);
}

/** Kill every Run Command script still running (the fake is closing). */
export function stopCommands(world: World): void {
  for (const invocation of world.invocations.values()) invocation.child?.kill('SIGKILL');
}
