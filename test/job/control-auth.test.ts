/**
 * The control socket as an API boundary: every op on a job needs that job's secret (minted by
 * the config stage, handed to the later hooks through job_env), operator ops need the operator
 * token, and a job's script never sees its secret. Driven against the real daemon, on the local
 * provider and on the AWS wire fake (where the hooks reach the instance over SSH).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DaemonError, request } from '../../manager/control/client.js';
import { operatorTokenPath, readOperatorToken } from '../../manager/control/operator-token.js';
import type { ControlRequest } from '../../manager/control/protocol.js';
import { AWS_ENV, type AwsWorld, awsDaemonConfig, awsToml, startAwsWorld } from '../providers/aws-harness.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';

describe.each(['local', 'aws'] as const)('control socket (%s provider)', (provider) => {
  let daemon: TestDaemon;
  let world: AwsWorld | undefined;
  let scratch: string | undefined;

  beforeAll(async () => {
    if (provider === 'local') {
      daemon = await startTestDaemon('[pool]\nidle_count = 1\nreconcile_interval = "1s"\n');
      return;
    }
    world = await startAwsWorld();
    scratch = mkdtempSync(join(tmpdir(), 'rf-control-auth-'));
    daemon = await startTestDaemon(
      awsDaemonConfig({ scratch, pool: 'idle_count = 1', aws: awsToml(world, 'fleet') }),
      {
        env: AWS_ENV,
      },
    );
  });
  afterAll(async () => {
    await daemon?.cleanup();
    await world?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  const send = <T = unknown>(message: ControlRequest) => request<T>(daemon.socket, message);

  async function refusal(message: ControlRequest): Promise<DaemonError> {
    try {
      await send(message);
    } catch (error) {
      expect(error).toBeInstanceOf(DaemonError);
      return error as DaemonError;
    }
    throw new Error(`${message.op} was accepted`);
  }

  describe('job ops need the job secret', () => {
    it("refuses acquire, lease, fate and release without the secret or with another job's", async () => {
      const mine = (await send<{ jobSecret: string }>({ op: 'config', jobId: '501' })).jobSecret;
      const theirs = (await send<{ jobSecret: string }>({ op: 'config', jobId: '502' })).jobSecret;
      expect(mine).toMatch(/^[A-Za-z0-9_-]{43}$/);

      // An old hook (no secret) gets an error naming what is missing.
      const old = await refusal({ op: 'acquire', job: { id: '501' } });
      expect(old.code).toBe('unauthorized');
      expect(old.message).toContain('RUNNER_FLEET_JOB_SECRET');
      // Job 502's secret does not open job 501.
      expect((await refusal({ op: 'acquire', job: { id: '501' }, jobSecret: theirs })).message).toContain(
        'wrong job secret',
      );
      // A job id whose config stage never ran here.
      expect((await refusal({ op: 'acquire', job: { id: '599' }, jobSecret: mine })).message).toContain(
        'config stage did not run here',
      );

      const lease = await send<{ instanceId: string }>({
        op: 'acquire',
        job: { id: '501' },
        jobSecret: mine,
      });
      expect(lease.instanceId).toBeTruthy();
      for (const op of ['release', 'lease', 'fate'] as const) {
        expect((await refusal({ op, jobId: '501' })).code).toBe('unauthorized');
        expect((await refusal({ op, jobId: '501', jobSecret: theirs })).code).toBe('unauthorized');
      }
      // Nobody can mint a second secret for a job whose secret is live.
      expect((await refusal({ op: 'config', jobId: '501' })).code).toBe('job-exists');
      expect((await daemon.status()).leases.map((l) => l.jobId)).toEqual(['501']);

      await expect(send({ op: 'lease', jobId: '501', jobSecret: mine })).resolves.toMatchObject({
        instanceId: lease.instanceId,
      });
      await expect(send({ op: 'release', jobId: '501', jobSecret: mine })).resolves.toMatchObject({
        released: true,
      });
      // A retried release is answered; once released, the job id may be configured again.
      await expect(send({ op: 'release', jobId: '501', jobSecret: mine })).resolves.toMatchObject({
        released: false,
      });
      await expect(send({ op: 'config', jobId: '501' })).resolves.toHaveProperty('jobSecret');
    });

    it('answers a retried config with the secret it proposed; a different proposal is refused', async () => {
      const proposed = randomBytes(32).toString('base64url');
      const first = await send<{ jobSecret: string }>({ op: 'config', jobId: '504', jobSecret: proposed });
      expect(first.jobSecret).toBe(proposed);
      // The answer was lost (a daemon killed right after recording it): the hook asks again, same proposal.
      const again = await send<{ jobSecret: string }>({ op: 'config', jobId: '504', jobSecret: proposed });
      expect(again.jobSecret).toBe(proposed);
      // Anyone else, with a proposal of their own or none, is refused.
      const other = randomBytes(32).toString('base64url');
      expect((await refusal({ op: 'config', jobId: '504', jobSecret: other })).code).toBe('job-exists');
      expect((await refusal({ op: 'config', jobId: '504' })).code).toBe('job-exists');
      // A weak proposal is refused whatever the job.
      expect((await refusal({ op: 'config', jobId: '505', jobSecret: 'short' })).message).toContain(
        '43 to 128 base64url characters',
      );
      await expect(send({ op: 'release', jobId: '504', jobSecret: proposed })).resolves.toBeDefined();
    });

    it('keeps only hashes of the secrets on disk', async () => {
      const { jobSecret } = await send<{ jobSecret: string }>({ op: 'config', jobId: '503' });
      const onDisk = readFileSync(`${daemon.stateDir}/job-secrets.json`, 'utf8');
      expect(onDisk).toContain('"503"');
      expect(onDisk).not.toContain(jobSecret);
      expect(statSync(`${daemon.stateDir}/job-secrets.json`).mode & 0o777).toBe(0o600);
    });

    it('hands the secret to the hooks through job_env, never to the job script', async () => {
      const result = await runJob(daemon.entry(), {
        id: '504',
        // The script fails if its environment holds the secret or any runner-fleet hook variable.
        script: 'if env | grep -q "^RUNNER_FLEET_JOB_SECRET="; then echo secret visible; exit 3; fi',
      });
      expect(result.outcome, result.log).toBe('success');
      expect(result.log).not.toContain('secret visible');
    });
  });

  describe('operator ops need the operator token', () => {
    it('refuses status and drain without it, naming the token file', async () => {
      const path = operatorTokenPath(daemon.socket);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      for (const message of [{ op: 'status' }, { op: 'drain' }] as const) {
        const error = await refusal(message);
        expect(error.code).toBe('unauthorized');
        expect(error.message).toContain(path);
      }
      // A job's secret is not an operator's credential.
      const { jobSecret } = await send<{ jobSecret: string }>({ op: 'config', jobId: '505' });
      expect((await refusal({ op: 'drain', operatorToken: jobSecret })).code).toBe('unauthorized');
      expect((await daemon.status()).manager.draining).toBe(false);
      await expect(
        send({ op: 'status', operatorToken: readOperatorToken(daemon.socket) }),
      ).resolves.toHaveProperty('manager');
    });
  });
});
