import { AutoScalingClient, DescribeAutoScalingGroupsCommand } from '@aws-sdk/client-auto-scaling';
import {
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { afterEach, describe, expect, it } from 'vitest';
import { AwsFake, type FakeInstance } from './fake.js';

let fake: AwsFake | undefined;
const clients: { destroy(): void }[] = [];

function client<T extends { destroy(): void }>(c: T): T {
  clients.push(c);
  return c;
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await fake?.close();
  fake = undefined;
});

const launch = (ec2: EC2Client, extra: Partial<ConstructorParameters<typeof RunInstancesCommand>[0]> = {}) =>
  ec2.send(
    new RunInstancesCommand({
      ImageId: 'ami-0123456789abcdef0',
      InstanceType: 't3.micro',
      MinCount: 1,
      MaxCount: 1,
      ...extra,
    }),
  );

async function stateOf(ec2: EC2Client, id: string) {
  const res = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
  return res.Reservations?.[0]?.Instances?.[0];
}

describe('throttling', () => {
  it('EC2 RequestLimitExceeded (HTTP 503) is retried by the SDK and then surfaced', async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 3 }));
    fake.throttle('DescribeInstances', { count: 2 });
    const ok = await ec2.send(new DescribeInstancesCommand({}));
    expect(ok.$metadata.attempts).toBe(3);
    expect(fake.calls('DescribeInstances').map((c) => c.error)).toEqual([
      'RequestLimitExceeded',
      'RequestLimitExceeded',
      undefined,
    ]);
    expect(fake.callCount('DescribeInstances', { includeErrors: false })).toBe(1);

    fake.throttle('DescribeInstances', { count: 5 });
    const err = await ec2.send(new DescribeInstancesCommand({})).catch((e: unknown) => e);
    expect(err).toMatchObject({
      name: 'RequestLimitExceeded',
      $metadata: { httpStatusCode: 503, attempts: 3 },
    });
  });

  it('adaptive retry mode rides out a throttling burst', async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), retryMode: 'adaptive', maxAttempts: 5 }));
    // A burst of two throttled answers (by count, not by time: a slow machine sees the same burst).
    fake.throttle('*', { count: 2 });
    const ok = await ec2.send(new DescribeInstancesCommand({}));
    expect(ok.$metadata.attempts).toBe(3);
  });

  it('Auto Scaling answers Throttling (HTTP 400) and SSM ThrottlingException', async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
    const asg = client(new AutoScalingClient({ ...fake.clientConfig(), maxAttempts: 1 }));
    const ssm = client(new SSMClient({ ...fake.clientConfig(), maxAttempts: 1 }));
    fake.throttle('DescribeAutoScalingGroups', { count: 1 });
    await expect(asg.send(new DescribeAutoScalingGroupsCommand({}))).rejects.toMatchObject({
      name: 'Throttling',
      $metadata: { httpStatusCode: 400 },
    });
    await expect(asg.send(new DescribeAutoScalingGroupsCommand({}))).resolves.toBeDefined();
    fake.putParameter('/p', 'v');
    fake.throttle('GetParameter', { count: 1 });
    await expect(ssm.send(new GetParameterCommand({ Name: '/p' }))).rejects.toMatchObject({
      name: 'ThrottlingException',
    });
  });
});

describe('permissions and dry runs', () => {
  it('DryRun answers DryRunOperation, or UnauthorizedOperation for denied actions, and launches nothing', async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    await expect(launch(ec2, { DryRun: true })).rejects.toMatchObject({
      name: 'DryRunOperation',
      $metadata: { httpStatusCode: 412 },
    });
    fake.deny('TerminateInstances', 'RunInstances');
    await expect(launch(ec2, { DryRun: true })).rejects.toMatchObject({
      name: 'UnauthorizedOperation',
      $metadata: { httpStatusCode: 403 },
    });
    await expect(
      ec2.send(new TerminateInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'], DryRun: true })),
    ).rejects.toMatchObject({
      name: 'UnauthorizedOperation',
    });
    // A denied action is denied for real calls too.
    await expect(launch(ec2)).rejects.toMatchObject({ name: 'UnauthorizedOperation' });
    fake.allow('RunInstances');
    await expect(launch(ec2, { DryRun: true })).rejects.toMatchObject({ name: 'DryRunOperation' });
    expect(fake.instances()).toHaveLength(0);
  });

  it('failNext injects any error code once', async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    fake.failNext('RunInstances', { code: 'InvalidParameterValue', message: 'nope' });
    await expect(launch(ec2)).rejects.toMatchObject({ name: 'InvalidParameterValue', message: 'nope' });
    await expect(launch(ec2)).resolves.toBeDefined();
  });
});

describe('instance faults', () => {
  it('stuck-pending instances never run; failed boots end terminated with Server.InternalError', async () => {
    fake = await AwsFake.start({ clock: 'virtual', timing: { pendingMs: 1_000 } });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    fake.stuckPending({ count: 1 });
    fake.failBoot({ count: 1 });
    const stuck = (await launch(ec2)).Instances![0]!.InstanceId!;
    const failed = (await launch(ec2)).Instances![0]!.InstanceId!;
    const fine = (await launch(ec2)).Instances![0]!.InstanceId!;
    await fake.advance(60_000);
    expect((await stateOf(ec2, stuck))?.State?.Name).toBe('pending');
    const f = await stateOf(ec2, failed);
    expect(f?.State?.Name).toBe('terminated');
    expect(f?.StateReason?.Code).toBe('Server.InternalError');
    expect((await stateOf(ec2, fine))?.State?.Name).toBe('running');
  });

  it('vanish: spot reclaim, instance-initiated shutdown (terminate or stop)', async () => {
    fake = await AwsFake.start({ clock: 'virtual', timing: { pendingMs: 10 } });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    const spot = (await launch(ec2, { InstanceMarketOptions: { MarketType: 'spot' } })).Instances![0]!;
    expect(spot.InstanceLifecycle).toBe('spot');
    const deadman = (await launch(ec2, { InstanceInitiatedShutdownBehavior: 'terminate' })).Instances![0]!
      .InstanceId!;
    const stopper = (await launch(ec2)).Instances![0]!.InstanceId!;
    await fake.advance(10);
    fake.vanish(spot.InstanceId!, 'spot');
    fake.vanish(deadman, 'shutdown');
    fake.vanish(stopper, 'shutdown');
    const s = await stateOf(ec2, spot.InstanceId!);
    expect(s?.State?.Name).toBe('terminated');
    expect(s?.StateReason).toEqual({
      Code: 'Server.SpotInstanceTermination',
      Message: 'Server.SpotInstanceTermination: Spot instance termination',
    });
    expect((await stateOf(ec2, deadman))?.StateReason?.Code).toBe('Client.InstanceInitiatedShutdown');
    expect((await stateOf(ec2, deadman))?.State?.Name).toBe('terminated');
    expect((await stateOf(ec2, stopper))?.State?.Name).toBe('stopped');
  });

  it('latency knob delays answers in wall-clock time', async () => {
    fake = await AwsFake.start({ clock: 'virtual' });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    fake.setLatency(200, 'DescribeInstances');
    const t0 = Date.now();
    await ec2.send(new DescribeInstancesCommand({}));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });
});

describe('real clock and backing hooks', () => {
  it('with the real clock, pending turns running after pendingMs and terminated after shuttingDownMs', async () => {
    fake = await AwsFake.start({ timing: { pendingMs: 50, shuttingDownMs: 50 } });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    const id = (await launch(ec2)).Instances![0]!.InstanceId!;
    await fake.waitFor(() => fake?.instance(id)?.State === 'running');
    expect((await stateOf(ec2, id))?.State?.Name).toBe('running');
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    await fake.waitFor(() => fake?.instance(id)?.State === 'terminated');
  });

  it('onRunning decides when an instance runs and where it is reached; onTerminated runs once', async () => {
    const started: string[] = [];
    const stopped: string[] = [];
    let release: (() => void) | undefined;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    fake = await AwsFake.start({
      clock: 'virtual',
      timing: { pendingMs: 100, shuttingDownMs: 100 },
      backing: {
        onRunning: async (i: Readonly<FakeInstance>) => {
          started.push(i.InstanceId);
          await gate;
          return { host: '127.0.0.1', port: 40_000 + started.length };
        },
        onTerminated: async (i) => {
          stopped.push(i.InstanceId);
        },
      },
    });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    const launched = (await launch(ec2)).Instances![0]!;
    const id = launched.InstanceId!;
    expect(launched.PrivateIpAddress).toMatch(/^127\.0\.1\.\d+$/);
    await fake.advance(100, { settle: false });
    expect(started).toEqual([id]);
    expect((await stateOf(ec2, id))?.State?.Name).toBe('pending');
    expect(fake.endpoint(id)).toBeUndefined();
    release!();
    await fake.settle();
    const running = await stateOf(ec2, id);
    expect(running?.State?.Name).toBe('running');
    expect(running?.PrivateIpAddress).toBe('127.0.0.1');
    expect(fake.endpoint(id)).toEqual({ host: '127.0.0.1', port: 40_001 });

    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    await fake.advance(100);
    await fake.settle();
    expect(stopped).toEqual([id]);
    await fake.advance(100_000);
    expect(stopped).toEqual([id]);
  });

  it('a rejecting onRunning ends the instance as a failed launch; close() tears down live backings', async () => {
    const stopped: string[] = [];
    let n = 0;
    fake = await AwsFake.start({
      clock: 'virtual',
      timing: { pendingMs: 1 },
      backing: {
        onRunning: async () => {
          n++;
          if (n === 1) throw new Error('sshd did not start');
          return { host: '127.0.0.1', port: 2222 };
        },
        onTerminated: async (i) => {
          stopped.push(i.InstanceId);
        },
      },
    });
    const ec2 = client(new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 }));
    const bad = (await launch(ec2)).Instances![0]!.InstanceId!;
    const good = (await launch(ec2)).Instances![0]!.InstanceId!;
    await fake.advance(1);
    expect(fake.instance(bad)?.State).toBe('terminated');
    expect(fake.instance(bad)?.StateReason?.Code).toBe('Server.InternalError');
    expect(fake.instance(good)?.State).toBe('running');
    await fake.close();
    expect(stopped).toEqual([good]);
  });
});
