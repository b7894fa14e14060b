import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { DescribeInstancesCommand, EC2Client, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AwsFake } from './fake.js';

let fake: AwsFake;

describe('SSM, STS and S3 on the wire', () => {
  beforeEach(async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
  });
  afterEach(async () => {
    await fake.close();
  });

  it('SSM SecureString round trip: encrypted unless WithDecryption, Overwrite required to replace', async () => {
    const ssm = new SSMClient({ ...fake.clientConfig(), maxAttempts: 1 });
    try {
      const put = await ssm.send(
        new PutParameterCommand({ Name: '/runner/token', Value: 'glrt-secret', Type: 'SecureString' }),
      );
      expect(put.Version).toBe(1);
      const plain = await ssm.send(new GetParameterCommand({ Name: '/runner/token', WithDecryption: true }));
      expect(plain.Parameter).toMatchObject({
        Name: '/runner/token',
        Type: 'SecureString',
        Value: 'glrt-secret',
        Version: 1,
      });
      expect(plain.Parameter?.LastModifiedDate).toBeInstanceOf(Date);
      expect(plain.Parameter?.ARN).toBe('arn:aws:ssm:eu-west-1:123456789012:parameter/runner/token');
      const sealed = await ssm.send(new GetParameterCommand({ Name: '/runner/token' }));
      expect(sealed.Parameter?.Value).not.toContain('glrt-secret');

      await expect(
        ssm.send(new PutParameterCommand({ Name: '/runner/token', Value: 'other', Type: 'SecureString' })),
      ).rejects.toMatchObject({
        name: 'ParameterAlreadyExists',
      });
      const v2 = await ssm.send(
        new PutParameterCommand({ Name: '/runner/token', Value: 'glrt-new', Overwrite: true }),
      );
      expect(v2.Version).toBe(2);
      expect(fake.parameter('/runner/token')).toMatchObject({ Value: 'glrt-new', Type: 'SecureString' });
      await expect(ssm.send(new GetParameterCommand({ Name: '/missing' }))).rejects.toMatchObject({
        name: 'ParameterNotFound',
        $metadata: { httpStatusCode: 400 },
      });
      // Secrets never reach the call log.
      expect(fake.calls('PutParameter').every((c) => c.params.Value === '<redacted>')).toBe(true);
    } finally {
      ssm.destroy();
    }
  });

  it('STS GetCallerIdentity', async () => {
    const sts = new STSClient({ ...fake.clientConfig(), maxAttempts: 1 });
    try {
      const id = await sts.send(new GetCallerIdentityCommand({}));
      expect(id.Account).toBe('123456789012');
      expect(id.Arn).toContain('assumed-role/runner-fleet-manager');
      fake.setCallerIdentity({ Arn: 'arn:aws:iam::123456789012:user/ops' });
      expect((await sts.send(new GetCallerIdentityCommand({}))).Arn).toBe(
        'arn:aws:iam::123456789012:user/ops',
      );
    } finally {
      sts.destroy();
    }
  });

  it('S3 HeadBucket: 200 with region for a known bucket, NotFound otherwise', async () => {
    const s3 = new S3Client({ ...fake.clientConfig(), forcePathStyle: true, maxAttempts: 1 });
    try {
      fake.addBucket('runner-cache');
      const ok = await s3.send(new HeadBucketCommand({ Bucket: 'runner-cache' }));
      expect(ok.BucketRegion).toBe('eu-west-1');
      await expect(s3.send(new HeadBucketCommand({ Bucket: 'other' }))).rejects.toMatchObject({
        name: 'NotFound',
        $metadata: { httpStatusCode: 404 },
      });
    } finally {
      s3.destroy();
    }
  });

  it('the JSON control endpoint drives the same knobs', async () => {
    const post = async (route: string, body: unknown = {}) => {
      const res = await fetch(`${fake.url}/__fake/${route}`, { method: 'POST', body: JSON.stringify(body) });
      return { status: res.status, json: (await res.json()) as unknown };
    };
    expect((await post('health')).json).toEqual({ ok: true });
    expect((await post('bogus')).status).toBe(404);
    expect((await post('throttle', {})).status).toBe(400);
    await post('throttle', { action: 'DescribeInstances', count: 1 });
    const ec2 = new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 });
    try {
      await expect(ec2.send(new DescribeInstancesCommand({}))).rejects.toMatchObject({
        name: 'RequestLimitExceeded',
      });
      await post('launchTemplate', {
        name: 'lt',
        data: { ImageId: 'ami-0123456789abcdef0', InstanceType: 'm5.large' },
      });
      const res = await ec2.send(
        new RunInstancesCommand({
          MinCount: 1,
          MaxCount: 1,
          LaunchTemplate: { LaunchTemplateName: 'lt' },
          UserData: Buffer.from('hello').toString('base64'),
        }),
      );
      const id = res.Instances![0]!.InstanceId!;
      expect((await post('userData', { instanceId: id })).json).toEqual({ userData: 'hello' });
      expect((await post('callCount', { action: 'RunInstances' })).json).toEqual({ count: 1 });
      await post('advance', { ms: 1_000 });
      const list = (await post('instances')).json as { InstanceId: string; State: string }[];
      expect(list.map((i) => [i.InstanceId, i.State])).toEqual([[id, 'running']]);
      await post('vanish', { instanceId: id, cause: 'spot' });
      expect(fake.instance(id)?.State).toBe('terminated');
    } finally {
      ec2.destroy();
    }
  });
});

describe('main.ts as its own process', () => {
  it('prints {"url"} and serves the SDK until SIGTERM', { timeout: 120_000 }, async () => {
    // Node 20 cannot run TypeScript: compile just the fake into a scratch directory.
    const out = await mkdtemp(join(tmpdir(), 'aws-fake-'));
    try {
      await promisify(execFile)(
        process.execPath,
        [
          'node_modules/typescript/bin/tsc',
          '--outDir',
          out,
          '--module',
          'nodenext',
          '--moduleResolution',
          'nodenext',
          '--target',
          'es2022',
          '--types',
          'node',
          '--skipLibCheck',
          'test/fakes/aws/main.ts',
        ],
        { cwd: process.cwd() },
      );
      await writeFile(join(out, 'package.json'), '{"type":"module"}');
      const child = spawn(process.execPath, [join(out, 'main.js'), '--pending-ms', '10'], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      try {
        const line = await new Promise<string>((resolve, reject) => {
          const rl = createInterface({ input: child.stdout! });
          rl.once('line', resolve);
          child.once('exit', (code) => reject(new Error(`main.ts exited with ${code}`)));
        });
        const { url } = JSON.parse(line) as { url: string };
        expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
        const ec2 = new EC2Client({
          endpoint: url,
          region: 'eu-west-1',
          credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
        });
        try {
          const res = await ec2.send(
            new RunInstancesCommand({ ImageId: 'ami-0123456789abcdef0', MinCount: 1, MaxCount: 1 }),
          );
          expect(res.Instances).toHaveLength(1);
        } finally {
          ec2.destroy();
        }
        const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        expect(await exited).toBe(0);
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
