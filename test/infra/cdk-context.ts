/** The context of cdk.json (feature flags and defaults), so tests synthesize what `cdk synth` does. */
import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';

export const cdkJson = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')) as {
  app: string;
  context: Record<string, unknown>;
};

export function appWithContext(overrides: Record<string, unknown> = {}): App {
  return new App({ context: { ...cdkJson.context, ...overrides } });
}
