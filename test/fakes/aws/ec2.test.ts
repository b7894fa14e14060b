import {
  AssociateIamInstanceProfileCommand,
  CreateFleetCommand,
  CreateTagsCommand,
  DeleteTagsCommand,
  DescribeIamInstanceProfileAssociationsCommand,
  DescribeInstanceStatusCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  EC2Client,
  type Instance,
  paginateDescribeInstances,
  ReplaceIamInstanceProfileAssociationCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AwsFake, DEFAULT_SUBNETS } from './fake.js';

const [SUBNET_A, SUBNET_B] = DEFAULT_SUBNETS.map((s) => s.subnetId) as [string, string];

let fake: AwsFake;
let ec2: EC2Client;

async function describeAll(
  client: EC2Client,
  input: ConstructorParameters<typeof DescribeInstancesCommand>[0] = {},
) {
  const out: Instance[] = [];
  for await (const page of paginateDescribeInstances({ client }, input)) {
    for (const r of page.Reservations ?? []) out.push(...(r.Instances ?? []));
  }
  return out;
}

function run(input: Partial<ConstructorParameters<typeof RunInstancesCommand>[0]> = {}) {
  return ec2.send(
    new RunInstancesCommand({
      ImageId: 'ami-0123456789abcdef0',
      InstanceType: 't3.micro',
      MinCount: 1,
      MaxCount: 1,
      ...input,
    }),
  );
}

describe('EC2 on the wire', () => {
  beforeEach(async () => {
    fake = await AwsFake.start({
      clock: 'virtual',
      timing: { pendingMs: 5_000, shuttingDownMs: 2_000, terminatedRetentionMs: 60_000 },
    });
    ec2 = new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 });
  });
  afterEach(async () => {
    ec2.destroy();
    await fake.close();
  });

  it('RunInstances launches with everything the provider sets, and reads back through DescribeInstances', async () => {
    const res = await run({
      SubnetId: SUBNET_B,
      MinCount: 2,
      MaxCount: 2,
      UserData: Buffer.from('#!/bin/bash\necho hi\n').toString('base64'),
      IamInstanceProfile: { Name: 'runner-job-default' },
      MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 2, HttpEndpoint: 'enabled' },
      InstanceInitiatedShutdownBehavior: 'terminate',
      BlockDeviceMappings: [
        { DeviceName: '/dev/xvda', Ebs: { Encrypted: true, VolumeSize: 30, VolumeType: 'gp3' } },
      ],
      TagSpecifications: [
        {
          ResourceType: 'instance',
          Tags: [
            { Key: 'runner-fleet:fleet', Value: 'blue' },
            { Key: 'Name', Value: 'job <&>' },
          ],
        },
        { ResourceType: 'volume', Tags: [{ Key: 'ignored', Value: 'on-instance' }] },
      ],
      ClientToken: 'launch-1',
    });
    expect(res.Instances).toHaveLength(2);
    const first = res.Instances![0]!;
    expect(first.InstanceId).toMatch(/^i-[0-9a-f]{17}$/);
    expect(first.State).toEqual({ Code: 0, Name: 'pending' });
    expect(first.SubnetId).toBe(SUBNET_B);
    expect(first.Placement?.AvailabilityZone).toBe('eu-west-1b');
    expect(first.PrivateIpAddress).toMatch(/^127\.0\.2\.\d+$/);
    expect(first.LaunchTime).toBeInstanceOf(Date);
    expect(first.IamInstanceProfile?.Arn).toBe(
      'arn:aws:iam::123456789012:instance-profile/runner-job-default',
    );
    expect(first.MetadataOptions).toMatchObject({
      HttpTokens: 'required',
      HttpPutResponseHopLimit: 2,
      State: 'pending',
    });
    expect(first.Tags).toEqual(
      expect.arrayContaining([
        { Key: 'runner-fleet:fleet', Value: 'blue' },
        { Key: 'Name', Value: 'job <&>' },
      ]),
    );
    expect(first.Tags?.some((t) => t.Key === 'ignored')).toBe(false);
    expect(first.ClientToken).toBe('launch-1');
    expect(res.ReservationId).toMatch(/^r-[0-9a-f]{17}$/);
    expect(res.OwnerId).toBe('123456789012');

    // User data is kept for tests but never in the call log.
    expect(fake.userData(first.InstanceId!)).toBe('#!/bin/bash\necho hi\n');
    expect(fake.calls('RunInstances')[0]!.params.UserData).toBe('<redacted>');
    expect(fake.instance(first.InstanceId!)?.BlockDeviceMappings[0]?.Ebs).toMatchObject({
      Encrypted: true,
      VolumeSize: 30,
    });
    expect(fake.instance(first.InstanceId!)?.InstanceInitiatedShutdownBehavior).toBe('terminate');

    const [described] = await describeAll(ec2, { InstanceIds: [first.InstanceId!] });
    expect(described?.InstanceId).toBe(first.InstanceId);
    expect(described?.BlockDeviceMappings?.[0]?.DeviceName).toBe('/dev/xvda');
  });

  it('RunInstances with the same ClientToken returns the same instances and launches nothing new', async () => {
    const a = await run({ ClientToken: 'tok-1', MaxCount: 2, MinCount: 2 });
    const b = await run({ ClientToken: 'tok-1', MaxCount: 2, MinCount: 2 });
    expect(b.Instances?.map((i) => i.InstanceId)).toEqual(a.Instances?.map((i) => i.InstanceId));
    expect(b.ReservationId).toBe(a.ReservationId);
    expect(fake.instances()).toHaveLength(2);
    expect(fake.callCount('RunInstances')).toBe(2);
    // Reusing a token with different parameters is a client error, as on EC2.
    await expect(
      run({ ClientToken: 'tok-1', InstanceType: 'm5.large', MaxCount: 2, MinCount: 2 }),
    ).rejects.toMatchObject({
      name: 'IdempotentParameterMismatch',
    });
  });

  it('moves instances pending → running → shutting-down → terminated and keeps terminated ones visible for a while', async () => {
    const { Instances } = await run();
    const id = Instances![0]!.InstanceId!;
    const state = async () => (await describeAll(ec2, { InstanceIds: [id] }))[0]?.State?.Name;
    expect(await state()).toBe('pending');
    await fake.advance(4_999);
    expect(await state()).toBe('pending');
    await fake.advance(1);
    expect(await state()).toBe('running');

    const term = await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    expect(term.TerminatingInstances?.[0]).toMatchObject({
      InstanceId: id,
      PreviousState: { Name: 'running', Code: 16 },
      CurrentState: { Name: 'shutting-down', Code: 32 },
    });
    expect(await state()).toBe('shutting-down');
    await fake.advance(2_000);
    const [gone] = await describeAll(ec2, { InstanceIds: [id] });
    expect(gone?.State).toEqual({ Code: 48, Name: 'terminated' });
    expect(gone?.StateReason?.Code).toBe('Client.UserInitiatedShutdown');
    await fake.advance(60_000);
    await expect(ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).rejects.toMatchObject({
      name: 'InvalidInstanceID.NotFound',
    });
  });

  it('filters by tag:KEY (with wildcards), tag-key, instance-state-name and instance-id', async () => {
    const blue = await run({
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'fleet', Value: 'blue-1' }] }],
    });
    await run({
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'fleet', Value: 'green' }] }],
    });
    await run({ TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'other', Value: 'x' }] }] });
    const blueId = blue.Instances![0]!.InstanceId!;

    const ids = async (Filters: { Name: string; Values: string[] }[]) =>
      (await describeAll(ec2, { Filters })).map((i) => i.InstanceId);
    expect(await ids([{ Name: 'tag:fleet', Values: ['blue-1'] }])).toEqual([blueId]);
    expect(await ids([{ Name: 'tag:fleet', Values: ['blue-*'] }])).toEqual([blueId]);
    expect(await ids([{ Name: 'tag:fleet', Values: ['blue-1', 'green'] }])).toHaveLength(2);
    expect(await ids([{ Name: 'tag-key', Values: ['fleet'] }])).toHaveLength(2);
    expect(await ids([{ Name: 'instance-id', Values: [blueId] }])).toEqual([blueId]);

    await fake.advance(5_000);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [blueId] }));
    expect(
      await ids([
        { Name: 'tag-key', Values: ['fleet'] },
        { Name: 'instance-state-name', Values: ['pending', 'running'] },
      ]),
    ).toHaveLength(1);
    await expect(
      ec2.send(new DescribeInstancesCommand({ Filters: [{ Name: 'no-such-filter', Values: ['x'] }] })),
    ).rejects.toMatchObject({
      name: 'InvalidParameterValue',
    });
  });

  it('paginates DescribeInstances with MaxResults/NextToken (and a small default page when configured)', async () => {
    await run({
      MinCount: 12,
      MaxCount: 12,
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'fleet', Value: 'p' }] }],
    });
    await run({ MinCount: 1, MaxCount: 1 });
    fake.clearCalls();
    const all = await describeAll(ec2, { Filters: [{ Name: 'tag:fleet', Values: ['p'] }], MaxResults: 5 });
    expect(all).toHaveLength(12);
    expect(new Set(all.map((i) => i.InstanceId)).size).toBe(12);
    expect(fake.callCount('DescribeInstances')).toBe(3);
    const pages = fake.calls('DescribeInstances');
    expect(pages[0]!.params.NextToken).toBeUndefined();
    expect(pages[1]!.params.NextToken).toBeDefined();

    fake.setDescribePageSize(4);
    fake.clearCalls();
    expect(await describeAll(ec2)).toHaveLength(13);
    expect(fake.callCount('DescribeInstances')).toBe(4);

    await expect(ec2.send(new DescribeInstancesCommand({ MaxResults: 3 }))).rejects.toMatchObject({
      name: 'InvalidParameterValue',
    });
    await expect(ec2.send(new DescribeInstancesCommand({ NextToken: 'garbage' }))).rejects.toMatchObject({
      name: 'InvalidParameterValue',
    });
  });

  it('answers unknown and malformed instance ids like EC2', async () => {
    await expect(
      ec2.send(new DescribeInstancesCommand({ InstanceIds: ['i-0123456789abcdef0'] })),
    ).rejects.toMatchObject({
      name: 'InvalidInstanceID.NotFound',
      $metadata: { httpStatusCode: 400 },
    });
    await expect(ec2.send(new TerminateInstancesCommand({ InstanceIds: ['nope'] }))).rejects.toMatchObject({
      name: 'InvalidInstanceID.Malformed',
    });
  });

  it('CreateTags and DeleteTags change what the tag filters see', async () => {
    const id = (await run()).Instances![0]!.InstanceId!;
    await ec2.send(
      new CreateTagsCommand({
        Resources: [id],
        Tags: [
          { Key: 'state', Value: 'idle' },
          { Key: 'job', Value: '42' },
        ],
      }),
    );
    await ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'state', Value: 'leased' }] }));
    let [i] = await describeAll(ec2, { Filters: [{ Name: 'tag:state', Values: ['leased'] }] });
    expect(i?.Tags).toEqual(expect.arrayContaining([{ Key: 'job', Value: '42' }]));
    await ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'job', Value: 'not-42' }] }));
    [i] = await describeAll(ec2, { InstanceIds: [id] });
    expect(i?.Tags?.find((t) => t.Key === 'job')?.Value).toBe('42');
    await ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'job' }] }));
    [i] = await describeAll(ec2, { InstanceIds: [id] });
    expect(i?.Tags?.find((t) => t.Key === 'job')).toBeUndefined();
    await expect(
      ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'aws:x', Value: '1' }] })),
    ).rejects.toMatchObject({
      name: 'InvalidParameterValue',
    });
  });

  it('hides new instances from Describe* during the eventual-consistency window when asked', async () => {
    fake.setTiming({ eventualConsistencyMs: 1_000 });
    const id = (await run()).Instances![0]!.InstanceId!;
    await expect(ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }))).rejects.toMatchObject({
      name: 'InvalidInstanceID.NotFound',
    });
    expect(await describeAll(ec2)).toHaveLength(0);
    await fake.advance(1_000);
    expect(await describeAll(ec2)).toHaveLength(1);
  });

  it('DescribeInstanceStatus reports running instances, or all with IncludeAllInstances', async () => {
    const id = (await run()).Instances![0]!.InstanceId!;
    expect((await ec2.send(new DescribeInstanceStatusCommand({}))).InstanceStatuses).toEqual([]);
    const all = await ec2.send(new DescribeInstanceStatusCommand({ IncludeAllInstances: true }));
    expect(all.InstanceStatuses?.[0]?.InstanceState?.Name).toBe('pending');
    await fake.advance(5_000);
    const st = await ec2.send(new DescribeInstanceStatusCommand({ InstanceIds: [id] }));
    expect(st.InstanceStatuses?.[0]).toMatchObject({
      InstanceId: id,
      InstanceStatus: { Status: 'ok' },
      SystemStatus: { Status: 'ok' },
    });
  });

  it('associates and replaces instance profiles', async () => {
    const id = (await run()).Instances![0]!.InstanceId!;
    await fake.advance(5_000);
    const assoc = await ec2.send(
      new AssociateIamInstanceProfileCommand({ InstanceId: id, IamInstanceProfile: { Name: 'job-a' } }),
    );
    expect(assoc.IamInstanceProfileAssociation).toMatchObject({ InstanceId: id, State: 'associating' });
    expect(assoc.IamInstanceProfileAssociation?.AssociationId).toMatch(/^iip-assoc-[0-9a-f]{17}$/);
    await expect(
      ec2.send(
        new AssociateIamInstanceProfileCommand({ InstanceId: id, IamInstanceProfile: { Name: 'job-b' } }),
      ),
    ).rejects.toMatchObject({ name: 'IncorrectState' });

    const described = await ec2.send(
      new DescribeIamInstanceProfileAssociationsCommand({ Filters: [{ Name: 'instance-id', Values: [id] }] }),
    );
    expect(described.IamInstanceProfileAssociations).toHaveLength(1);
    expect(described.IamInstanceProfileAssociations?.[0]?.State).toBe('associated');

    const replaced = await ec2.send(
      new ReplaceIamInstanceProfileAssociationCommand({
        AssociationId: assoc.IamInstanceProfileAssociation!.AssociationId!,
        IamInstanceProfile: { Arn: 'arn:aws:iam::123456789012:instance-profile/job-b' },
      }),
    );
    expect(replaced.IamInstanceProfileAssociation?.IamInstanceProfile?.Arn).toBe(
      'arn:aws:iam::123456789012:instance-profile/job-b',
    );
    const [inst] = await describeAll(ec2, { InstanceIds: [id] });
    expect(inst?.IamInstanceProfile?.Arn).toBe('arn:aws:iam::123456789012:instance-profile/job-b');
    await expect(
      ec2.send(
        new ReplaceIamInstanceProfileAssociationCommand({
          AssociationId: assoc.IamInstanceProfileAssociation!.AssociationId!,
          IamInstanceProfile: { Name: 'job-c' },
        }),
      ),
    ).rejects.toMatchObject({ name: 'InvalidAssociationID.NotFound' });
  });

  it('a launch with a profile creates its association; unknown profiles are refused when a list is configured', async () => {
    await fake.close();
    fake = await AwsFake.start({ clock: 'virtual', instanceProfiles: ['runner-job-default'] });
    ec2.destroy();
    ec2 = new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 });
    const id = (await run({ IamInstanceProfile: { Name: 'runner-job-default' } })).Instances![0]!.InstanceId!;
    const assoc = await ec2.send(
      new DescribeIamInstanceProfileAssociationsCommand({ Filters: [{ Name: 'instance-id', Values: [id] }] }),
    );
    expect(assoc.IamInstanceProfileAssociations?.[0]?.IamInstanceProfile?.Arn).toBe(
      'arn:aws:iam::123456789012:instance-profile/runner-job-default',
    );
    await expect(run({ IamInstanceProfile: { Name: 'admin' } })).rejects.toMatchObject({
      name: 'InvalidParameterValue',
    });
    await fake.advance(100);
    await ec2.send(new TerminateInstancesCommand({ InstanceIds: [id] }));
    await fake.advance(100);
    const after = await ec2.send(new DescribeIamInstanceProfileAssociationsCommand({}));
    expect(after.IamInstanceProfileAssociations).toEqual([]);
  });

  it('launches from a launch template and returns its data from DescribeLaunchTemplateVersions', async () => {
    const lt = fake.addLaunchTemplate('runner', [
      { ImageId: 'ami-aaaaaaaaaaaaaaaaa', InstanceType: 'm5.large' },
      {
        ImageId: 'ami-bbbbbbbbbbbbbbbbb',
        InstanceType: 'c5.large',
        MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 1 },
        BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { Encrypted: true, VolumeSize: 40 } }],
        IamInstanceProfile: { Name: 'runner-job-default' },
        TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'from', Value: 'template' }] }],
        InstanceInitiatedShutdownBehavior: 'terminate',
      },
    ]);
    const res = await ec2.send(
      new RunInstancesCommand({
        MinCount: 1,
        MaxCount: 1,
        LaunchTemplate: { LaunchTemplateName: 'runner', Version: '$Latest' },
      }),
    );
    const inst = res.Instances![0]!;
    expect(inst.ImageId).toBe('ami-bbbbbbbbbbbbbbbbb');
    expect(inst.InstanceType).toBe('c5.large');
    expect(inst.MetadataOptions?.HttpTokens).toBe('required');
    expect(inst.Tags).toEqual(
      expect.arrayContaining([
        { Key: 'from', Value: 'template' },
        { Key: 'aws:ec2launchtemplate:id', Value: lt.LaunchTemplateId },
        { Key: 'aws:ec2launchtemplate:version', Value: '2' },
      ]),
    );

    const versions = await ec2.send(
      new DescribeLaunchTemplateVersionsCommand({
        LaunchTemplateId: lt.LaunchTemplateId,
        Versions: ['$Latest'],
      }),
    );
    expect(versions.LaunchTemplateVersions).toHaveLength(1);
    const v = versions.LaunchTemplateVersions![0]!;
    expect(v).toMatchObject({ LaunchTemplateName: 'runner', VersionNumber: 2, DefaultVersion: false });
    expect(v.LaunchTemplateData).toMatchObject({
      ImageId: 'ami-bbbbbbbbbbbbbbbbb',
      MetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 1 },
      BlockDeviceMappings: [{ DeviceName: '/dev/xvda', Ebs: { Encrypted: true, VolumeSize: 40 } }],
      IamInstanceProfile: { Name: 'runner-job-default' },
      InstanceInitiatedShutdownBehavior: 'terminate',
      TagSpecifications: [{ ResourceType: 'instance', Tags: [{ Key: 'from', Value: 'template' }] }],
    });
    const all = await ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: 'runner' }));
    expect(all.LaunchTemplateVersions?.map((x) => x.VersionNumber)).toEqual([2, 1]);
    await expect(
      ec2.send(new DescribeLaunchTemplateVersionsCommand({ LaunchTemplateName: 'nope' })),
    ).rejects.toMatchObject({
      name: 'InvalidLaunchTemplateName.NotFoundException',
    });
  });

  it('CreateFleet instant fills capacity over prioritized overrides and reports per-override capacity errors', async () => {
    const lt = fake.addLaunchTemplate('fleet', { ImageId: 'ami-ccccccccccccccccc' });
    fake.insufficientCapacity({ instanceTypes: ['m5.large'], subnetIds: [SUBNET_A], market: 'spot' });
    fake.insufficientCapacity({ instanceTypes: ['c5.large'], market: 'spot', available: 1 });
    const input = {
      Type: 'instant' as const,
      LaunchTemplateConfigs: [
        {
          LaunchTemplateSpecification: { LaunchTemplateId: lt.LaunchTemplateId, Version: '$Latest' },
          Overrides: [
            { InstanceType: 'm5.large' as const, SubnetId: SUBNET_A, Priority: 1 },
            { InstanceType: 'c5.large' as const, SubnetId: SUBNET_A, Priority: 2 },
            { InstanceType: 'm5.large' as const, SubnetId: SUBNET_B, Priority: 3 },
          ],
        },
      ],
      TargetCapacitySpecification: { TotalTargetCapacity: 3, DefaultTargetCapacityType: 'spot' as const },
      SpotOptions: { AllocationStrategy: 'capacity-optimized-prioritized' as const },
      TagSpecifications: [{ ResourceType: 'instance' as const, Tags: [{ Key: 'fleet', Value: 'f' }] }],
      ClientToken: 'fleet-1',
    };
    const res = await ec2.send(new CreateFleetCommand(input));
    expect(res.FleetId).toMatch(/^fleet-/);
    expect(
      res.Errors?.map((e) => [
        e.LaunchTemplateAndOverrides?.Overrides?.InstanceType,
        e.LaunchTemplateAndOverrides?.Overrides?.SubnetId,
        e.ErrorCode,
        e.Lifecycle,
      ]),
    ).toEqual([
      ['m5.large', SUBNET_A, 'InsufficientInstanceCapacity', 'spot'],
      ['c5.large', SUBNET_A, 'InsufficientInstanceCapacity', 'spot'],
    ]);
    const launched = res.Instances?.map((i) => [
      i.LaunchTemplateAndOverrides?.Overrides?.InstanceType,
      i.LaunchTemplateAndOverrides?.Overrides?.SubnetId,
      i.InstanceIds?.length,
      i.Lifecycle,
    ]);
    expect(launched).toEqual([
      ['c5.large', SUBNET_A, 1, 'spot'],
      ['m5.large', SUBNET_B, 2, 'spot'],
    ]);
    const ids = res.Instances!.flatMap((i) => i.InstanceIds ?? []);
    const described = await describeAll(ec2, { InstanceIds: ids });
    expect(described.every((i) => i.InstanceLifecycle === 'spot')).toBe(true);
    expect(described[0]?.Tags).toEqual(
      expect.arrayContaining([
        { Key: 'fleet', Value: 'f' },
        { Key: 'aws:ec2:fleet-id', Value: res.FleetId },
      ]),
    );
    // As on EC2, fleet-launched instances carry the fleet's own ClientToken, not the caller's.
    expect(described.map((i) => i.ClientToken).sort()).toEqual(
      [0, 1, 2].map((n) => `${res.FleetId}-${n}`).sort(),
    );

    // Same token: same answer, nothing new launched.
    const again = await ec2.send(new CreateFleetCommand(input));
    expect(again.FleetId).toBe(res.FleetId);
    expect(fake.instances()).toHaveLength(3);
  });

  it('CreateFleet reports total failure as Errors only, and on-demand targets launch on-demand', async () => {
    const lt = fake.addLaunchTemplate('fleet', { ImageId: 'ami-ccccccccccccccccc' });
    fake.insufficientCapacity({ market: 'spot' });
    const config = [
      {
        LaunchTemplateSpecification: { LaunchTemplateName: 'fleet', Version: '1' },
        Overrides: [{ InstanceType: 'm5.large' as const, SubnetId: SUBNET_A }],
      },
    ];
    const spot = await ec2.send(
      new CreateFleetCommand({
        Type: 'instant',
        LaunchTemplateConfigs: config,
        TargetCapacitySpecification: { TotalTargetCapacity: 2, DefaultTargetCapacityType: 'spot' },
      }),
    );
    expect(spot.Instances ?? []).toEqual([]);
    expect(spot.Errors?.[0]?.ErrorCode).toBe('InsufficientInstanceCapacity');
    const od = await ec2.send(
      new CreateFleetCommand({
        Type: 'instant',
        LaunchTemplateConfigs: config,
        TargetCapacitySpecification: { TotalTargetCapacity: 2, DefaultTargetCapacityType: 'on-demand' },
      }),
    );
    expect(od.Errors ?? []).toEqual([]);
    expect(od.Instances?.[0]).toMatchObject({ Lifecycle: 'on-demand' });
    expect(od.Instances?.[0]?.InstanceIds).toHaveLength(2);
    expect(lt.LaunchTemplateName).toBe('fleet');
  });

  it('RunInstances fails with InsufficientInstanceCapacity (HTTP 500) for a refused pool', async () => {
    fake.insufficientCapacity({ instanceTypes: ['t3.micro'], subnetIds: [SUBNET_A] });
    const err = await run({ SubnetId: SUBNET_A }).catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'InsufficientInstanceCapacity', $metadata: { httpStatusCode: 500 } });
    await expect(run({ SubnetId: SUBNET_B })).resolves.toBeDefined();
    await expect(run({ SubnetId: SUBNET_A, InstanceType: 'm5.large' })).resolves.toBeDefined();
  });
});
