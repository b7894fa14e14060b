import {
  AutoScalingClient,
  DescribeAutoScalingGroupsCommand,
  ResumeProcessesCommand,
  SetDesiredCapacityCommand,
  SetInstanceProtectionCommand,
  SuspendProcessesCommand,
  TerminateInstanceInAutoScalingGroupCommand,
} from '@aws-sdk/client-auto-scaling';
import { DescribeInstancesCommand, EC2Client, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AwsFake, DEFAULT_SUBNETS } from './fake.js';

let fake: AwsFake;
/** The fake's default delay between a capacity change and the group's launch. */
const ASG_LAUNCH_MS = 200;
let asg: AutoScalingClient;
let ec2: EC2Client;

async function group(name = 'runners') {
  const res = await asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [name] }));
  const g = res.AutoScalingGroups?.[0];
  if (!g) throw new Error('group not found');
  return g;
}

describe('Auto Scaling on the wire', () => {
  beforeEach(async () => {
    fake = await AwsFake.start({ clock: 'virtual', timing: { pendingMs: 1_000, shuttingDownMs: 1_000 } });
    asg = new AutoScalingClient({ ...fake.clientConfig(), maxAttempts: 1 });
    ec2 = new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 });
    fake.addLaunchTemplate('runner', {
      ImageId: 'ami-0123456789abcdef0',
      InstanceType: 't3.small',
      MetadataOptions: { HttpTokens: 'required' },
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'from-template', Value: 'yes' }] }],
    });
    fake.addAutoScalingGroup({
      name: 'runners',
      minSize: 0,
      maxSize: 5,
      desiredCapacity: 0,
      mixedInstancesPolicy: {
        LaunchTemplate: {
          LaunchTemplateSpecification: { LaunchTemplateName: 'runner', Version: '$Latest' },
          Overrides: [{ InstanceType: 'm5.large' }, { InstanceType: 'c5.large' }],
        },
        InstancesDistribution: { OnDemandBaseCapacity: 1, OnDemandPercentageAboveBaseCapacity: 0 },
      },
      subnetIds: DEFAULT_SUBNETS.slice(0, 2).map((s) => s.subnetId),
      tags: [
        { Key: 'runner-fleet:fleet', Value: 'blue', PropagateAtLaunch: true },
        { Key: 'group-only', Value: 'x', PropagateAtLaunch: false },
      ],
      newInstancesProtectedFromScaleIn: true,
      suspendedProcesses: ['AZRebalance'],
    });
  });
  afterEach(async () => {
    asg.destroy();
    ec2.destroy();
    await fake.close();
  });

  it('describes the group with its policy, tags, suspended processes and protection default', async () => {
    const g = await group();
    expect(g).toMatchObject({
      AutoScalingGroupName: 'runners',
      MinSize: 0,
      MaxSize: 5,
      DesiredCapacity: 0,
      NewInstancesProtectedFromScaleIn: true,
      VPCZoneIdentifier: DEFAULT_SUBNETS.slice(0, 2)
        .map((s) => s.subnetId)
        .join(','),
      SuspendedProcesses: [{ ProcessName: 'AZRebalance', SuspensionReason: 'User suspended' }],
    });
    expect(g.MixedInstancesPolicy?.LaunchTemplate?.Overrides?.map((o) => o.InstanceType)).toEqual([
      'm5.large',
      'c5.large',
    ]);
    expect(g.MixedInstancesPolicy?.LaunchTemplate?.LaunchTemplateSpecification?.LaunchTemplateId).toMatch(
      /^lt-/,
    );
    expect(g.Tags?.map((t) => [t.Key, t.PropagateAtLaunch])).toEqual([
      ['runner-fleet:fleet', true],
      ['group-only', false],
    ]);
    expect(g.Instances).toEqual([]);
    expect(g.CreatedTime).toBeInstanceOf(Date);
  });

  it('SetDesiredCapacity launches protected instances with propagated tags, balanced over zones, on-demand base then spot', async () => {
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 3 }));
    // Asynchronous, as on AWS: nothing is launched inside the call that raised desired capacity.
    let g = await group();
    expect(g.Instances).toHaveLength(0);
    await fake.advance(ASG_LAUNCH_MS);
    g = await group();
    expect(g.DesiredCapacity).toBe(3);
    expect(g.Instances).toHaveLength(3);
    expect(g.Instances?.every((i) => i.LifecycleState === 'Pending' && i.ProtectedFromScaleIn === true)).toBe(
      true,
    );
    expect(new Set(g.Instances?.map((i) => i.AvailabilityZone))).toEqual(
      new Set(['eu-west-1a', 'eu-west-1b']),
    );
    await fake.advance(1_000);
    g = await group();
    expect(g.Instances?.every((i) => i.LifecycleState === 'InService')).toBe(true);

    const ids = g.Instances!.map((i) => i.InstanceId!);
    const described = (
      await ec2.send(new DescribeInstancesCommand({ InstanceIds: ids }))
    ).Reservations!.flatMap((r) => r.Instances ?? []);
    for (const inst of described) {
      expect(inst.Tags).toEqual(
        expect.arrayContaining([
          { Key: 'runner-fleet:fleet', Value: 'blue' },
          { Key: 'from-template', Value: 'yes' },
          { Key: 'aws:autoscaling:groupName', Value: 'runners' },
        ]),
      );
      expect(inst.Tags?.some((t) => t.Key === 'group-only')).toBe(false);
      expect(inst.MetadataOptions?.HttpTokens).toBe('required');
      // The group launches through EC2 Fleet: the ClientToken is the fleet's, nothing its owner set.
      const fleetId = inst.Tags?.find((t) => t.Key === 'aws:ec2:fleet-id')?.Value;
      expect(fleetId).toMatch(/^fleet-/);
      expect(inst.ClientToken).toBe(`${fleetId}-0`);
    }
    expect(described.filter((i) => i.InstanceLifecycle === 'spot')).toHaveLength(2);
    expect(described.filter((i) => i.InstanceLifecycle === undefined)).toHaveLength(1);

    await expect(
      asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 6 })),
    ).rejects.toMatchObject({
      name: 'ValidationError',
    });
  });

  it('scale-in by SetDesiredCapacity only removes unprotected instances', async () => {
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 3 }));
    await fake.advance(ASG_LAUNCH_MS);
    await fake.advance(1_000);
    const ids = (await group()).Instances!.map((i) => i.InstanceId!);
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 1 }));
    await fake.advance(ASG_LAUNCH_MS);
    // All protected: desired drops, nothing is terminated.
    let g = await group();
    expect(g.DesiredCapacity).toBe(1);
    expect(g.Instances?.filter((i) => i.LifecycleState === 'InService')).toHaveLength(3);

    await asg.send(
      new SetInstanceProtectionCommand({
        AutoScalingGroupName: 'runners',
        InstanceIds: [ids[0]!],
        ProtectedFromScaleIn: false,
      }),
    );
    g = await group();
    expect(g.Instances?.find((i) => i.InstanceId === ids[0])?.LifecycleState).toBe('Terminating');
    expect(g.Instances?.filter((i) => i.LifecycleState === 'InService')).toHaveLength(2);
    await fake.advance(1_000);
    g = await group();
    expect(g.Instances?.map((i) => i.InstanceId).sort()).toEqual([ids[1], ids[2]].sort());
  });

  it('TerminateInstanceInAutoScalingGroup removes exactly the named instance, decrementing desired or replacing it', async () => {
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 2 }));
    await fake.advance(ASG_LAUNCH_MS);
    await fake.advance(1_000);
    const [a, b] = (await group()).Instances!.map((i) => i.InstanceId!);

    const res = await asg.send(
      new TerminateInstanceInAutoScalingGroupCommand({ InstanceId: a, ShouldDecrementDesiredCapacity: true }),
    );
    expect(res.Activity).toMatchObject({ AutoScalingGroupName: 'runners', StatusCode: 'InProgress' });
    expect(res.Activity?.Description).toContain(a);
    expect(res.Activity?.StartTime).toBeInstanceOf(Date);
    let g = await group();
    expect(g.DesiredCapacity).toBe(1);
    await fake.advance(1_000);
    g = await group();
    expect(g.Instances?.map((i) => i.InstanceId)).toEqual([b]);

    // Without decrement the group replaces the instance.
    await asg.send(
      new TerminateInstanceInAutoScalingGroupCommand({
        InstanceId: b,
        ShouldDecrementDesiredCapacity: false,
      }),
    );
    await fake.advance(ASG_LAUNCH_MS);
    g = await group();
    expect(g.DesiredCapacity).toBe(1);
    expect(g.Instances?.map((i) => i.InstanceId)).toContain(b);
    expect(g.Instances).toHaveLength(2);
    await fake.advance(1_000);
    g = await group();
    expect(g.Instances).toHaveLength(1);
    expect(g.Instances?.[0]?.InstanceId).not.toBe(b);

    await expect(
      asg.send(
        new TerminateInstanceInAutoScalingGroupCommand({
          InstanceId: 'i-0123456789abcdef0',
          ShouldDecrementDesiredCapacity: true,
        }),
      ),
    ).rejects.toMatchObject({ name: 'ValidationError' });
  });

  it('refuses to decrement below MinSize', async () => {
    fake.addAutoScalingGroup({
      name: 'floor',
      minSize: 1,
      maxSize: 2,
      desiredCapacity: 1,
      launchTemplate: { LaunchTemplateName: 'runner' },
    });
    await fake.advance(ASG_LAUNCH_MS);
    const id = (await group('floor')).Instances![0]!.InstanceId!;
    await expect(
      asg.send(
        new TerminateInstanceInAutoScalingGroupCommand({
          InstanceId: id,
          ShouldDecrementDesiredCapacity: true,
        }),
      ),
    ).rejects.toMatchObject({ name: 'ValidationError', message: expect.stringContaining('min size') });
  });

  it('replaces an instance that EC2 terminated behind its back (spot reclaim)', async () => {
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 1 }));
    await fake.advance(ASG_LAUNCH_MS);
    await fake.advance(1_000);
    const [first] = (await group()).Instances!.map((i) => i.InstanceId!);
    fake.vanish(first!, 'spot');
    await fake.advance(ASG_LAUNCH_MS);
    const g = await group();
    expect(g.Instances).toHaveLength(1);
    expect(g.Instances?.[0]?.InstanceId).not.toBe(first);
    expect(g.Instances?.[0]?.LifecycleState).toBe('Pending');
  });

  it('Suspend/ResumeProcesses: a suspended Launch stops scale-out until resumed', async () => {
    await asg.send(
      new SuspendProcessesCommand({ AutoScalingGroupName: 'runners', ScalingProcesses: ['Launch'] }),
    );
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 2 }));
    await fake.advance(ASG_LAUNCH_MS);
    let g = await group();
    expect(g.SuspendedProcesses?.map((p) => p.ProcessName).sort()).toEqual(['AZRebalance', 'Launch']);
    expect(g.Instances).toHaveLength(0);
    await asg.send(
      new ResumeProcessesCommand({ AutoScalingGroupName: 'runners', ScalingProcesses: ['Launch'] }),
    );
    await fake.advance(ASG_LAUNCH_MS);
    g = await group();
    expect(g.Instances).toHaveLength(2);
    expect(g.SuspendedProcesses?.map((p) => p.ProcessName)).toEqual(['AZRebalance']);
    await expect(
      asg.send(new SuspendProcessesCommand({ AutoScalingGroupName: 'runners', ScalingProcesses: ['Bogus'] })),
    ).rejects.toMatchObject({ name: 'ValidationError' });
  });

  it('a capacity shortage leaves the group below desired and retries later', async () => {
    fake.insufficientCapacity({ instanceTypes: ['m5.large', 'c5.large'], available: 1 });
    await asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'runners', DesiredCapacity: 2 }));
    await fake.advance(ASG_LAUNCH_MS);
    expect((await group()).Instances).toHaveLength(1);
    expect(fake.activities('runners').some((a) => a.StatusCode === 'Failed')).toBe(true);
    fake.clearFaults();
    await fake.advance(1_000 + ASG_LAUNCH_MS);
    expect((await group()).Instances).toHaveLength(2);
  });

  it('EC2 TerminateInstances on a group member is noticed by the group', async () => {
    fake.addAutoScalingGroup({
      name: 'plain',
      maxSize: 2,
      desiredCapacity: 1,
      launchTemplate: { LaunchTemplateName: 'runner' },
    });
    await fake.advance(ASG_LAUNCH_MS);
    const id = (await group('plain')).Instances![0]!.InstanceId!;
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    await fake.advance(ASG_LAUNCH_MS);
    const g = await group('plain');
    expect(g.Instances?.find((i) => i.InstanceId === id)?.LifecycleState).toBe('Terminating');
    expect(g.Instances).toHaveLength(2);
  });

  it('unknown groups are a ValidationError', async () => {
    await expect(
      asg.send(new SetDesiredCapacityCommand({ AutoScalingGroupName: 'nope', DesiredCapacity: 1 })),
    ).rejects.toMatchObject({
      name: 'ValidationError',
      $metadata: { httpStatusCode: 400 },
    });
    const none = await asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: ['nope'] }));
    expect(none.AutoScalingGroups).toEqual([]);
  });
});
