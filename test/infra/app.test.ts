import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/app.js';
import { appWithContext, cdkJson } from './cdk-context.js';
import { SYNTH_TIMEOUT_MS, Synthesized } from './synth.js';

/** The whole app, synthesized once as `npm run synth` does (cdk.json context, no credentials). */
let synth: Synthesized;

beforeAll(() => {
  synth = new Synthesized(buildApp(appWithContext()));
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

describe('the CDK app', () => {
  it('is what cdk.json runs', () => {
    expect(cdkJson.app).toBe('node dist/infra/app.js');
  });

  it('synthesizes the pipeline, deploy-target, GitLab POC and runner fleet stacks', () => {
    const top = synth.assembly.stacks.map((s) => s.stackName).sort();
    expect(top).toEqual([
      'RunnerFleet-Dev-DeployTarget',
      'RunnerFleet-DevOps-Pipeline',
      'RunnerFleet-Prod-DeployTarget',
    ]);
    for (const [stage, account] of [
      ['Dev', '222222222222'],
      ['Prod', '333333333333'],
    ] as const) {
      const nested = synth.assembly.getNestedAssembly(`assembly-${stage}`);
      expect(nested.stacks.map((s) => s.hierarchicalId).sort()).toEqual([
        `${stage}/Fleet`,
        `${stage}/GitLab`,
      ]);
      for (const s of nested.stacks) expect(s.environment.account).toBe(account);
    }
  });

  it('needed no lookup: no missing context anywhere, so synth works offline and without credentials', () => {
    const manifests = [
      join(synth.assembly.directory, 'manifest.json'),
      ...['Dev', 'Prod'].map((stage) =>
        join(synth.assembly.getNestedAssembly(`assembly-${stage}`).directory, 'manifest.json'),
      ),
    ];
    for (const file of manifests) {
      expect(JSON.parse(readFileSync(file, 'utf8')).missing, file).toBeUndefined();
    }
  });

  it('has no unacknowledged cdk-nag finding and no CloudFormation-validate finding', () => {
    // The cdk-nag plugin registered by buildApp would have thrown during synth; the report says the rest.
    expect(synth.validationViolations()).toEqual([]);
  });

  it('fails the synth on an unacknowledged cdk-nag finding', () => {
    const app = new App({ outdir: join(synth.assembly.directory, 'gate') });
    new s3.Bucket(new Stack(app, 'Careless'), 'Bucket');
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).toThrow(/AwsSolutions-S1/);
  });
});
