/** The context of cdk.json (feature flags and defaults), so tests synthesize what `cdk synth` does. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { readInfraConfig } from '../../infra/config.js';
import { RunnerFleetStage } from '../../infra/stage.js';

export const cdkJson = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as {
  app: string;
  context: Record<string, unknown>;
};

/** An App with cdk.json's context (plus overrides) that writes its assembly to a fresh temp dir. */
export function appWithContext(overrides: Record<string, unknown> = {}): App {
  const outdir = mkdtempSync(join(tmpdir(), 'runner-fleet-infra-'));
  return new App({ outdir, context: { ...cdkJson.context, ...overrides } });
}

/** The Dev stage as `cdk synth` builds it, from cdk.json's context plus `overrides`. */
export function devStageWith(overrides: Record<string, unknown> = {}): { app: App; stage: RunnerFleetStage } {
  const context: Record<string, unknown> = { ...cdkJson.context, ...overrides };
  const app = appWithContext(overrides);
  const config = readInfraConfig((key) => context[key]);
  const stage = new RunnerFleetStage(app, 'Dev', {
    config,
    stage: config.stages.dev,
    account: config.accounts.dev,
  });
  return { app, stage };
}
