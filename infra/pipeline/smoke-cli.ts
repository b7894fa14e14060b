/**
 * `node dist/infra/pipeline/smoke-cli.js --stage dev --outputs cdk-outputs.json [--wait-minutes 20]`
 *
 * Run by the deploy jobs after `cdk deploy --outputs-file` (.gitlab-ci.yml), with the deploy
 * role's credentials (AWS_PROFILE). Exit 0 when every check passed, 1 when one failed, 2 on bad
 * arguments or an unreadable outputs file.
 */

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { EC2Client } from '@aws-sdk/client-ec2';
import { SSMClient } from '@aws-sdk/client-ssm';
import type { DeployStage } from './names.js';
import { smoke, stageOutputs } from './smoke.js';

export interface SmokeArgs {
  stage: DeployStage;
  outputsFile: string;
  waitMinutes: number;
  intervalSeconds: number;
}

export function parseSmokeArgs(argv: string[]): SmokeArgs {
  const { values } = parseArgs({
    args: argv,
    options: {
      stage: { type: 'string' },
      outputs: { type: 'string' },
      'wait-minutes': { type: 'string', default: '20' },
      'interval-seconds': { type: 'string', default: '15' },
    },
    strict: true,
  });
  if (values.stage !== 'dev' && values.stage !== 'prod') throw new Error('--stage must be dev or prod');
  if (!values.outputs) throw new Error('--outputs <cdk deploy --outputs-file> is required');
  const waitMinutes = Number(values['wait-minutes']);
  const intervalSeconds = Number(values['interval-seconds']);
  if (!(waitMinutes > 0) || !(intervalSeconds > 0))
    throw new Error('--wait-minutes and --interval-seconds must be positive numbers');
  return { stage: values.stage, outputsFile: values.outputs, waitMinutes, intervalSeconds };
}

export async function main(argv: string[]): Promise<number> {
  let args: SmokeArgs;
  let outputs: ReturnType<typeof stageOutputs>;
  try {
    args = parseSmokeArgs(argv);
    outputs = stageOutputs(JSON.parse(readFileSync(args.outputsFile, 'utf8')), args.outputsFile);
  } catch (error) {
    process.stderr.write(`smoke: ${(error as Error).message}\n`);
    return 2;
  }
  const clients = { ec2: new EC2Client({}), ssm: new SSMClient({}) };
  try {
    const ok = await smoke({
      stage: args.stage,
      outputs,
      clients,
      // A replaced GitLab instance needs minutes to boot: the wait covers a first boot.
      wait: {
        attempts: Math.max(1, Math.ceil((args.waitMinutes * 60) / args.intervalSeconds)),
        intervalMs: args.intervalSeconds * 1000,
      },
      log: (line) => process.stdout.write(`${line}\n`),
    });
    return ok ? 0 : 1;
  } finally {
    clients.ec2.destroy();
    clients.ssm.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`smoke: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
