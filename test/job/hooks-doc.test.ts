/**
 * docs/hooks.md shows a job driven by hand: its shell block, run as written against a real
 * daemon (found through RUNNER_FLEET_SOCKET, as the page says), must do what the page says.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { REPO_ROOT, startTestDaemon, type TestDaemon } from '../support/daemon.js';

let daemon: TestDaemon;
beforeAll(async () => {
  daemon = await startTestDaemon();
});
afterAll(async () => {
  await daemon?.cleanup();
});

it('the job driven by hand in docs/hooks.md runs as the page says', async () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs', 'hooks.md'), 'utf8');
  const block = /## A job by hand[\s\S]*?```sh\n([\s\S]*?)```/.exec(doc)?.[1];
  expect(block).toBeDefined();
  const env: NodeJS.ProcessEnv = { ...process.env, RUNNER_FLEET_SOCKET: daemon.socket };
  for (const key of Object.keys(env))
    if (key.startsWith('CUSTOM_ENV_') || key.startsWith('RUNNER_FLEET_J')) delete env[key];
  const r = spawnSync('bash', ['-c', block as string], { cwd: REPO_ROOT, env, encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`;
  expect(r.status, out).toBe(0);
  const instance = /running on instance (local-[0-9a-f]+) \(local\)/.exec(out)?.[1];
  expect(instance, out).toBeDefined();
  expect(out).toContain(`hello from ${instance}`);
  expect(out).toContain('build_script: exit 0');
  expect(out).toContain('after_script: exit 1, script exit code 3');
  expect(out).toContain(`released instance ${instance} of job 4242`);
  expect((await daemon.status()).leases).toEqual([]);
});
