/**
 * Container jobs over the AWS path: the real daemon with provider "aws" on the wire-level fake,
 * every instance a real sshd on this machine, so the docker CLI the hooks drive over SSH reaches
 * this machine's test dockerd ([container] docker_host). Image, service and private-image jobs
 * through the hooks, the IMDS hop limit of container jobs, and cleanup by label.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AWS_ENV, type AwsWorld, awsDaemonConfig, awsToml, startAwsWorld } from '../providers/aws-harness.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type DockerWorld, dockerInstalled, startDockerWorld } from '../support/docker.js';
import { type JobSpec, type RunnerEntry, SECRET_SENTINEL } from '../support/gitlab-runner.js';
import { cancelMidBuild, leftovers, runContainerJob } from './container-harness.js';

let docker: DockerWorld;
let aws: AwsWorld;
let daemon: TestDaemon;
let entry: RunnerEntry;
let scratch: string;
let nextId = 8100;

describe.runIf(dockerInstalled())('container jobs on the AWS provider (wire fake, sshd instances)', () => {
  beforeAll(async () => {
    docker = await startDockerWorld({
      images: ['busybox', 'bash', 'service'],
      password: `${SECRET_SENTINEL}-registry-password`,
    });
    aws = await startAwsWorld();
    scratch = mkdtempSync(join(tmpdir(), 'rf-aws-container-'));
    daemon = await startTestDaemon(
      awsDaemonConfig({
        fleet: 'containers',
        scratch,
        executor: 'kill_grace = "3s"',
        sections: `[container]\ndocker_host = "${docker.dockerHost}"\nservice_wait_timeout = "10s"`,
        aws: awsToml(aws, 'fleet'),
      }),
      { env: AWS_ENV },
    );
    entry = daemon.entry();
  }, 300_000);
  afterAll(async () => {
    await daemon?.cleanup();
    await aws?.close();
    await docker?.stop();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  const job = (spec: Partial<JobSpec> & { script: string }) => runContainerJob(entry, docker, nextId++, spec);
  const hopLimitCalls = () => aws.fake.callCount('ModifyInstanceMetadataOptions');

  it('runs an image job with a service over SSH, with hop limit 2 for the instance', async () => {
    const before = hopLimitCalls();
    const result = await job({
      image: { name: docker.image('bash') },
      services: [{ name: docker.image('service'), alias: 'db' }],
      script:
        'echo "on $RUNNER_FLEET_INSTANCE_ID in $(test -f /etc/runner-fleet-test-image && echo container)"; nc db 5432 </dev/null',
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toMatch(/on i-[0-9a-f]{17} in container/);
    expect(result.log).toMatch(/ready from \S+/);
    const instanceId = /on (i-[0-9a-f]{17})/.exec(result.log)![1]!;
    expect(hopLimitCalls()).toBe(before + 1);
    expect(aws.fake.instance(instanceId)?.MetadataOptions.HttpPutResponseHopLimit).toBe(2);
    expect(await leftovers(docker)).toBe('');
    expect(result.log).not.toContain(SECRET_SENTINEL);
  });

  it('keeps the exit code of a failing script, and runs busybox with sh', async () => {
    const result = await job({
      image: { name: docker.image('busybox') },
      script: 'command -v bash || echo no bash; exit 7',
    });
    expect(result.outcome, result.log).toBe('build-failure');
    expect(result.buildExitCode).toBe(7);
    expect(result.log).toContain('no bash');
  });

  it('fails prepare as a system failure when the private image cannot be pulled', async () => {
    await docker.forgetImages();
    const result = await job({ credentials: [], image: { name: docker.image('busybox') }, script: 'true' });
    expect(result.outcome, result.log).toBe('system-failure');
    expect(result.log).toMatch(/runner-fleet prepare: cannot pull image \S+busybox:1/);
    expect(await leftovers(docker)).toBe('');
  });

  it('pulls a private image with DOCKER_AUTH_CONFIG over SSH; the credentials reach only the per-job directory', async () => {
    await docker.forgetImages();
    const auth = Buffer.from(`${docker.user}:${docker.password}`).toString('base64');
    const id = String(nextId);
    // sshd-backed instances log in as this user: the instance's $HOME is this machine's.
    const configFile = join(homedir(), '.runner-fleet', 'jobs', id, 'config.json');
    let configDuringJob = '';
    const result = await job({
      credentials: [],
      variables: { DOCKER_AUTH_CONFIG: JSON.stringify({ auths: { [docker.registry]: { auth } } }) },
      image: { name: docker.image('busybox') },
      script: 'echo pulled with DOCKER_AUTH_CONFIG',
      onBuildStarted: () => {
        configDuringJob = readFileSync(configFile, 'utf8');
      },
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('pulled with DOCKER_AUTH_CONFIG');
    expect(configDuringJob).toContain(auth);
    expect(existsSync(dirname(configFile))).toBe(false);
    const instanceId = /running on instance (i-[0-9a-f]{17})/.exec(result.log)?.[1];
    expect(instanceId, result.log).toBeDefined();
    const places = {
      log: result.log,
      cleanup: result.cleanup.stdout + result.cleanup.stderr,
      daemon: daemon.output(),
      status: JSON.stringify(await daemon.status()),
      userData: aws.fake.userData(instanceId!) ?? '',
    };
    for (const [where, text] of Object.entries(places)) {
      expect(text, where).not.toContain(auth);
      expect(text, where).not.toContain(SECRET_SENTINEL);
    }
    expect(await leftovers(docker)).toBe('');
  });

  it('leaves a bare job of a hop-limit-1 class at hop limit 1', async () => {
    const before = hopLimitCalls();
    const result = await job({ script: 'test ! -f /etc/runner-fleet-test-image && echo on the instance' });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('on the instance');
    expect(hopLimitCalls()).toBe(before);
  });

  it('a cancel over SSH ends the stage in the container; after_script runs in the same container', async () => {
    const result = await job({
      image: { name: docker.image('bash') },
      ...cancelMidBuild("trap 'echo got TERM' TERM"),
    });
    expect(result.outcome, result.log).toBe('canceled');
    expect(result.log).toContain('got TERM');
    expect(result.log).not.toContain('not reached');
    expect(result.log).toContain('marker');
    expect(result.log).toContain('no build processes left');
    expect(await leftovers(docker)).toBe('');
  });
});
