/**
 * Container jobs end to end on the local provider: the hooks driven like gitlab-runner, the real
 * daemon, a real dockerd and an authenticated registry (test/support/docker.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type DockerWorld, dockerInstalled, startDockerWorld } from '../support/docker.js';
import {
  type JobResult,
  type JobSpec,
  type RunnerEntry,
  runJob,
  SECRET_SENTINEL,
} from '../support/gitlab-runner.js';

let world: DockerWorld;
let daemon: TestDaemon;
let entry: RunnerEntry;
let nextId = 7100;

describe.runIf(dockerInstalled())('container jobs on the local provider', () => {
  beforeAll(async () => {
    // The registry password is a secret too: it must show up nowhere either.
    world = await startDockerWorld({ password: `${SECRET_SENTINEL}-registry-password` });
    daemon = await startTestDaemon(`
[executor]
kill_grace = "4s"

[container]
docker_host = "${world.dockerHost}"
service_wait_timeout = "5s"
`);
    entry = daemon.entry();
  }, 240_000);
  afterAll(async () => {
    await daemon?.cleanup();
    await world?.stop();
  }, 120_000);

  const credentials = () => [
    { type: 'registry', url: world.registry, username: world.user, password: world.password },
  ];
  const job = (spec: Partial<JobSpec> & { script: string }): Promise<JobResult> =>
    runJob(entry, { id: String(nextId++), credentials: credentials(), ...spec });

  async function leftovers(): Promise<string> {
    const containers = await world.docker(['ps', '--all', '--quiet', '--filter', 'label=runner-fleet.job']);
    const networks = await world.docker(['network', 'ls', '--quiet', '--filter', 'label=runner-fleet.job']);
    return `${containers}${networks}`.trim();
  }

  it('runs the user stages in the image, in CI_PROJECT_DIR, with bash; files cross stages', async () => {
    const result = await job({
      image: { name: world.image('bash') },
      script: [
        'echo "shell=${BASH_VERSION:+bash} pwd=$(pwd)"',
        'test -f /.dockerenv && echo in-container',
        'cat fetched.txt',
        'echo from-build > built.txt',
      ].join('\n'),
      afterScript: 'cat built.txt; echo "after in $(test -f /.dockerenv && echo container)"',
      // get_sources runs on the instance: what it writes, the container sees.
      getSources: 'echo from-get-sources > fetched.txt',
    });
    expect(result.log).toContain('runner-fleet: starting the job container from');
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain(`shell=bash pwd=${result.projectDir}`);
    expect(result.log).toContain('in-container');
    expect(result.log).toContain('from-get-sources');
    expect(result.log).toContain('from-build');
    expect(result.log).toContain('after in container');
    expect(result.cleanup.exitCode).toBe(0);
    expect(await leftovers()).toBe('');
    expect(result.log).not.toContain(SECRET_SENTINEL);
  });

  it('keeps a failing script a build failure with its exit code', async () => {
    const result = await job({ image: { name: world.image('bash') }, script: 'echo failing; exit 42' });
    expect(result.outcome, result.log).toBe('build-failure');
    expect(result.buildExitCode).toBe(42);
    expect(await leftovers()).toBe('');
  });

  it('runs an image without bash with sh', async () => {
    const result = await job({
      image: { name: world.image('busybox') },
      script: 'echo "bash=$(command -v bash || echo none)"; ls /bin/busybox',
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('bash=none');
  });
});
