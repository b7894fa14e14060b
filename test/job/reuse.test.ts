/**
 * max_use_count > 1: an instance is reused only within one credential class and one project, and
 * the project is the one gitlab-runner's job response names, never a job variable.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type RunnerEntry, runJob } from '../support/gitlab-runner.js';

let daemon: TestDaemon;
let entry: RunnerEntry;

beforeAll(async () => {
  daemon = await startTestDaemon('[pool]\nmax_use_count = 3\nidle_time = "10m"\nreconcile_interval = "1s"\n');
  entry = daemon.entry();
});
afterAll(async () => {
  await daemon?.cleanup();
});

const instanceOf = async (id: string, projectId: number, projectPath: string) => {
  const result = await runJob(entry, {
    id,
    projectId,
    projectPath,
    script: 'echo "instance=$RUNNER_FLEET_INSTANCE_ID"',
  });
  expect(result.outcome, result.log).toBe('success');
  return /instance=(local-\w+)/.exec(result.log)?.[1];
};

it('reuses an instance within a project, never across projects, whatever CI_PROJECT_PATH claims', async () => {
  const a = await instanceOf('8001', 1, 'team-a/app');
  const b = await instanceOf('8002', 2, 'team-b/secret');
  expect(b).not.toBe(a);
  // Project 1 again, claiming project 2's path through its variables: it gets project 1's instance.
  const c = await instanceOf('8003', 1, 'team-b/secret');
  expect(c).toBe(a);
  const d = await instanceOf('8004', 2, 'team-b/secret');
  expect(d).toBe(b);
});
