/**
 * The AWS provider through the real SDK v3 clients against the wire-level fake: the behaviours
 * the contract suite does not cover (pagination, AZRebalance, failover, throttling, spot
 * interruption, launch settings, user data, instance profiles, the IAM policy command).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { provenanceOf } from '../../manager/fleet/adoption.js';
import { systemClock } from '../../manager/fleet/clock.js';
import { MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import { LaunchSigner } from '../../manager/fleet/provenance.js';
import type { AwsProvider } from '../../manager/providers/aws/aws-provider.js';
import type { ManagerPolicyDocument } from '../../manager/providers/aws/iam-policy.js';
import type { LaunchRequest, ProviderInstance } from '../../manager/providers/provider.js';
import { TAG } from '../../manager/providers/tags.js';
import { CLI } from '../support/daemon.js';
import {
  type AwsWorld,
  awsProvider,
  awsToml,
  type ProviderHandle,
  SUBNETS,
  startAwsWorld,
} from './aws-harness.js';
import { tagsFor } from './contract.js';

const execFileAsync = promisify(execFile);
let world: AwsWorld | undefined;
const handles: ProviderHandle[] = [];
afterEach(async () => {
  await world?.close();
  world = undefined;
  for (const h of handles.splice(0)) h.cleanup();
});

async function setup(
  mode: 'asg' | 'fleet',
  opts: Parameters<typeof startAwsWorld>[0] = { backing: false },
  provider: Parameters<typeof awsProvider>[2] = {},
) {
  world = await startAwsWorld(opts);
  const h = awsProvider(world, mode, provider);
  handles.push(h);
  return { world, ...h };
}

let n = 0;
const token = () => `tok-${process.pid}-${n++}`;

/** The launched instance's id: named by the launch (fleet) or found by the listing (asg). */
async function launchAndFind(provider: AwsProvider, request: LaunchRequest): Promise<string> {
  const before = new Set((await provider.list()).map((i) => i.id));
  const result = await provider.launch(request);
  if (result.launched[0]) return result.launched[0].id;
  for (let i = 0; i < 200; i++) {
    const fresh = (await provider.list()).find((x) => !before.has(x.id) && x.status !== 'gone');
    if (fresh) return fresh.id;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the group launched nothing');
}

describe('AWS provider on the wire-level fake', () => {
  it('lists through every page of one DescribeInstances filtered on tags and live states', async () => {
    const { world, provider } = await setup('fleet', { backing: false, pageSize: 5 });
    await provider.start();
    for (let i = 0; i < 12; i++)
      await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    world.fake.clearCalls();
    const listed = await provider.list();
    expect(listed).toHaveLength(12);
    const calls = world.fake.calls('DescribeInstances');
    expect(calls).toHaveLength(3);
    for (const c of calls) {
      expect(Object.values(c.params)).toContain(`tag:${TAG.fleet}`);
      expect(Object.values(c.params)).toContain(`tag:${TAG.manager}`);
      expect(Object.values(c.params)).toContain('instance-state-name');
      expect(Object.values(c.params)).not.toContain('terminated');
    }
    // A terminated instance stays visible in EC2 for about an hour; the listing does not page
    // through it, and the provider does not look up instances it terminated itself.
    await provider.terminate([listed[0]!.id]);
    await world.fake.waitFor(() => world.fake.instance(listed[0]!.id)?.State === 'terminated');
    world.fake.clearCalls();
    expect((await provider.list()).map((i) => i.id)).not.toContain(listed[0]!.id);
    expect(world.fake.callCount('DescribeInstances')).toBe(3);
  });

  it('refuses to start in asg mode while AZRebalance is active, and says how to fix it', async () => {
    const { provider } = await setup('asg', { backing: false, azRebalanceSuspended: false });
    await expect(provider.start()).rejects.toThrow(/suspend-processes .*--scaling-processes AZRebalance/);
  });

  it('fails over across pools, then from spot to on-demand, one call per dry pool', async () => {
    const { world, provider } = await setup('fleet', { backing: false }, { config: { market: 'spot' } });
    await provider.start();
    world.fake.insufficientCapacity({ market: 'spot' });
    const result = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    expect(result.failures).toEqual([]);
    expect(result.launched).toHaveLength(1);
    expect(result.launched[0]!.detail?.market).toBe('on-demand');
    const runs = world.fake.calls('RunInstances');
    // 2 types × 3 subnets of spot, each refused once (capacity errors are not retried), then on-demand.
    expect(runs.map((c) => c.params['InstanceMarketOptions.MarketType'] ?? 'on-demand')).toEqual([
      ...Array(6).fill('spot'),
      'on-demand',
    ]);
    // priorities = "instance_types": every subnet of the first type before the second type.
    expect(runs.slice(0, 4).map((c) => [c.params.InstanceType, c.params.SubnetId])).toEqual([
      ['t3.micro', SUBNETS[0]],
      ['t3.micro', SUBNETS[1]],
      ['t3.micro', SUBNETS[2]],
      ['t3a.micro', SUBNETS[0]],
    ]);
    // Every attempt has its own idempotency token.
    expect(new Set(runs.map((c) => c.params.ClientToken)).size).toBe(runs.length);
    // The dry spot pools are skipped for a while: the next launch goes to on-demand... after
    // trying them last, never first.
    world.fake.clearCalls();
    world.fake.clearFaults();
    await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    expect(world.fake.calls('RunInstances')).toHaveLength(1);
  });

  it('reports a capacity failure with its AWS code and advice when on-demand fails too', async () => {
    const { world, provider } = await setup('fleet', { backing: false }, { config: { market: 'spot' } });
    await provider.start();
    world.fake.insufficientCapacity({});
    const result = await provider.launch({ count: 2, token: token(), tags: tagsFor('manager-a') });
    expect(result.launched).toEqual([]);
    expect(result.failures.reduce((sum, f) => sum + f.count, 0)).toBe(2);
    expect(result.failures[0]!.code).toBe('InsufficientInstanceCapacity');
    expect(result.failures[0]!.message).toMatch(/add instance types or subnets/);
  });

  it('retries throttled calls (adaptive retry) and turns persistent throttling into a launch failure', async () => {
    const { world, provider } = await setup('fleet', { backing: false }, { maxAttempts: 3 });
    await provider.start();
    world.fake.throttle('RunInstances', { count: 2 });
    const ok = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    expect(ok.launched).toHaveLength(1);
    expect(world.fake.calls('RunInstances').filter((c) => c.error === 'RequestLimitExceeded')).toHaveLength(
      2,
    );
    world.fake.throttle('RunInstances', { count: 3 });
    const throttled = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    expect(throttled.launched).toEqual([]);
    expect(throttled.failures[0]).toMatchObject({ code: 'RequestLimitExceeded', count: 1 });
    expect(throttled.failures[0]!.message).toMatch(/launch_rate/);
  });

  it('reports a reclaimed spot instance as gone with its cause and counts the interruption', async () => {
    const { world, provider } = await setup('fleet', { backing: false }, { config: { market: 'spot' } });
    await provider.start();
    const { launched } = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    const id = launched[0]!.id;
    await world.fake.waitFor(() => world.fake.instance(id)?.State === 'running');
    expect((await provider.list()).map((i) => i.id)).toContain(id);
    world.fake.vanish(id, 'spot');
    // The listing no longer shows it (terminated); the provider looks it up by id and says why.
    world.fake.clearCalls();
    const gone = (await provider.list()).find((i) => i.id === id);
    expect(world.fake.calls('DescribeInstances').map((c) => c.params['InstanceId.1'])).toContain(id);
    expect(gone?.status).toBe('gone');
    expect(gone?.detail?.stateReason).toBe('Server.SpotInstanceTermination');
    expect(provider.spotInterruptions()).toBe(1);
    await provider.list();
    expect(provider.spotInterruptions()).toBe(1);
    expect((await provider.checkReady(id)).ready).toBe(false);
  });

  for (const mode of ['asg', 'fleet'] as const) {
    it(`${mode} mode: launches with IMDSv2, hop limit, shutdown=terminate, encrypted root, and SSH keys but no secrets in user data`, async () => {
      const { world, provider, stateDir } = await setup(
        mode,
        { backing: false },
        { config: { metadata_hop_limit: 2 } },
      );
      await provider.start();
      const t = token();
      const id = await launchAndFind(provider, { count: 1, token: t, tags: tagsFor('manager-a') });
      await provider.connectInfo(id);
      const instance = world.fake.instance(id)!;
      expect(instance.MetadataOptions.HttpTokens).toBe('required');
      expect(instance.MetadataOptions.HttpPutResponseHopLimit).toBe(2);
      expect(instance.InstanceInitiatedShutdownBehavior).toBe('terminate');
      expect(instance.BlockDeviceMappings).toContainEqual(
        expect.objectContaining({
          DeviceName: '/dev/xvda',
          Ebs: expect.objectContaining({ Encrypted: true }),
        }),
      );
      expect(instance.Tags).toContainEqual({ Key: TAG.launchToken, Value: t });
      const userData = world.fake.userData(id)!;
      const keyDir = join(stateDir, 'instances', id);
      const hostPub = readFileSync(join(keyDir, 'host_ed25519.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
      const clientPub = readFileSync(join(keyDir, 'client_ed25519.pub'), 'utf8')
        .split(' ')
        .slice(0, 2)
        .join(' ');
      expect(userData).toContain(hostPub);
      expect(userData).toContain(clientPub);
      expect(userData).toMatch(/shutdown -h \+420 /);
      // The client private key stays on the manager (line 3: past the format header all keys share).
      expect(userData).not.toContain(readFileSync(join(keyDir, 'client_ed25519'), 'utf8').split('\n')[3]);
      expect(userData).not.toMatch(/glrt-|CI_JOB_TOKEN|runner.?token\s*=/i);
      if (mode === 'fleet') {
        // Everything per instance travels in the RunInstances call: no template version at all.
        expect(world.fake.callCount('CreateLaunchTemplateVersion')).toBe(0);
        expect(world.fake.callCount('RunInstances')).toBe(1);
      } else {
        // One version for the key window, which later launches share.
        expect(world.fake.callCount('CreateLaunchTemplateVersion')).toBe(1);
        expect(world.fake.callCount('SetDesiredCapacity')).toBe(1);
      }
      if (mode === 'asg') {
        expect(world.fake.group('runner-fleet-jobs')?.instances).toEqual([
          { InstanceId: id, ProtectedFromScaleIn: true },
        ]);
        await provider.terminate([id]);
        expect(world.fake.group('runner-fleet-jobs')?.DesiredCapacity).toBe(0);
        expect(world.fake.callCount('TerminateInstanceInAutoScalingGroup')).toBe(1);
      } else {
        await provider.terminate([id]);
      }
      expect(existsSync(keyDir)).toBe(false);
    });
  }

  it('associates the lease instance profile and never lets an instance serve a second one', async () => {
    const { world, provider } = await setup('fleet', { backing: false });
    await provider.start();
    const { launched } = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    const id = launched[0]!.id;
    await world.fake.waitFor(() => world.fake.instance(id)?.State === 'running');
    await provider.prepareLease(id, { jobId: '1', instanceProfile: 'job-dev' });
    expect(world.fake.instance(id)?.IamInstanceProfile?.Name).toBe('job-dev');
    await provider.prepareLease(id, { jobId: '2', instanceProfile: 'job-dev' });
    await expect(provider.prepareLease(id, { jobId: '3', instanceProfile: 'job-prod' })).rejects.toThrow(
      /already served a job with instance profile "job-dev"/,
    );
    expect(world.fake.callCount('AssociateIamInstanceProfile')).toBe(1);
  });

  it('a lease that wants the profile the instance launched with makes no AWS call', async () => {
    const { world, provider } = await setup('fleet', { backing: false });
    await provider.start();
    const { launched } = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    const id = launched[0]!.id;
    await world.fake.waitFor(() => world.fake.instance(id)?.State === 'running');
    world.fake.clearCalls();
    await provider.prepareLease(id, { jobId: '1' });
    expect(world.fake.calls().length).toBe(0);
    // The same instance still refuses a job of another profile afterwards.
    await expect(provider.prepareLease(id, { jobId: '2', instanceProfile: 'job-prod' })).rejects.toThrow(
      /already served a job/,
    );
  });

  it('probes a booting instance with a TCP connect only: no AWS call, and says it may be probed again soon', async () => {
    const { world, provider } = await setup('fleet', { backing: false });
    world.fake.setTiming({ pendingMs: 60_000 });
    await provider.start();
    const { launched } = await provider.launch({ count: 1, token: token(), tags: tagsFor('manager-a') });
    const id = launched[0]!.id;
    world.fake.clearCalls();
    // Nothing listens on the instance's address while it is pending (no backing either).
    const check = await provider.checkReady(id);
    expect(check.ready).toBe(false);
    expect(check.ready === false && check.reason).toMatch(
      /SSH port \d+ not reachable yet \(EC2 state is pending\)/,
    );
    expect(check.ready === false && check.retryInMs).toBeGreaterThan(0);
    expect(world.fake.calls()).toEqual([]);
  });

  it('asg mode: instances the group launches from a key window hours after it opened stay ours, across a restart', async () => {
    const { world, provider, stateDir } = await setup('asg');
    await provider.start();
    const signer = new LaunchSigner(Buffer.alloc(32, 3), 'contract\nmanager-a');
    const hours = (n: number) => n * 3_600_000;
    // The window's launch token was minted two hours ago, as for a window opened then: the group
    // still launches from its version ($Latest) now, e.g. a replacement for a reclaimed instance.
    const first = await launchAndFind(provider, {
      count: 1,
      token: signer.mint(1, Date.now() - hours(2)),
      tags: tagsFor('manager-a'),
    });
    const ours = (listing: ProviderInstance[], id: string) => {
      const listed = listing.find((i) => i.id === id);
      if (!listed) throw new Error(`${id} not listed`);
      return provenanceOf(listed, new MemoryLeaseStore(), signer);
    };
    expect(ours(await provider.list(), first)).toEqual({ ours: true, proof: 'launch token' });

    // A restart (same state directory, no journal): the window is still $Latest, its instance ours.
    const again = awsProvider(world, 'asg', { stateDir });
    await again.provider.start();
    expect(ours(await again.provider.list(), first)).toEqual({ ours: true, proof: 'launch token' });
    // The group replaces a reclaimed instance from the same (stale) window, after the restart.
    world.fake.vanish(first, 'spot');
    const fresh = () =>
      world.fake.instances().find((i) => i.InstanceId !== first && i.State !== 'terminated')?.InstanceId;
    await world.fake.waitFor(() => fresh() !== undefined);
    const replacement = fresh();
    expect(ours(await again.provider.list(), replacement as string)).toEqual({
      ours: true,
      proof: 'launch token',
    });

    // A restart an hour later (clock ahead): the window is too old to resume, the next launch opens
    // a new one, and the old window's end is recorded: what it launched stays ours.
    const later = { ...systemClock, now: () => Date.now() + hours(1) };
    const third = awsProvider(world, 'asg', { stateDir, clock: later });
    await third.provider.start();
    await third.provider.launch({
      count: 1,
      token: signer.mint(1, later.now()),
      tags: tagsFor('manager-a'),
    });
    const listed = (await third.provider.list()).find((i) => i.id === replacement);
    expect(listed?.tokenInUseUntil?.getTime()).toBeGreaterThan(Date.now());
    expect(ours(await third.provider.list(), replacement as string)).toEqual({
      ours: true,
      proof: 'launch token',
    });
  });

  it("applies the credential class's IMDSv2 hop limit, only when it differs from the launch setting", async () => {
    const { world, provider } = await setup('fleet', { backing: false });
    await provider.start();
    const { launched } = await provider.launch({ count: 2, token: token(), tags: tagsFor('manager-a') });
    const [a, b] = launched.map((i) => i.id) as [string, string];
    await world.fake.waitFor(() => world.fake.instance(b)?.State === 'running');
    world.fake.clearCalls();
    await provider.prepareLease(a, { jobId: '1', hopLimit: 1 });
    expect(world.fake.callCount('ModifyInstanceMetadataOptions')).toBe(0);
    await provider.prepareLease(b, { jobId: '2', hopLimit: 2 });
    expect(world.fake.callCount('ModifyInstanceMetadataOptions')).toBe(1);
    expect(world.fake.instance(b)?.MetadataOptions).toMatchObject({
      HttpTokens: 'required',
      HttpPutResponseHopLimit: 2,
    });
    expect(world.fake.instance(a)?.MetadataOptions?.HttpPutResponseHopLimit).toBe(1);
  });

  it('iam-policy prints a policy whose terminate actions are all conditioned or pinned', async () => {
    for (const mode of ['asg', 'fleet'] as const) {
      world = await startAwsWorld({ backing: false });
      const dir = mkdtempSync(join(tmpdir(), 'rf-iam-'));
      const config = join(dir, 'config.toml');
      writeFileSync(
        config,
        `provider = "aws"\nfleet_name = "ci"\nstate_dir = "${dir}"\n${awsToml(world, mode)}\n` +
          '[gitlab]\nrunner_token_parameter = "/runner-fleet/ci/token"\n[cache]\nbucket = "ci-cache"\n',
      );
      // Asynchronous: the CLI asks the fake (in this process) for the account id through STS.
      const { stdout: out } = await execFileAsync(process.execPath, [CLI, 'iam-policy', '--config', config], {
        encoding: 'utf8',
        timeout: 20_000,
        env: { ...process.env, AWS_ACCESS_KEY_ID: 'AKIAFAKE', AWS_SECRET_ACCESS_KEY: 'x' },
      });
      const doc = JSON.parse(out) as ManagerPolicyDocument;
      const terminating = doc.Statement.filter((s) => s.Action.some((a) => /terminate/i.test(a)));
      expect(terminating.length).toBeGreaterThan(0);
      for (const s of terminating) {
        const resources = [s.Resource].flat();
        const pinnedGroup = resources.every((r) => /autoScalingGroupName\/runner-fleet-jobs$/.test(r));
        expect(s.Condition !== undefined || pinnedGroup, JSON.stringify(s)).toBe(true);
        expect(resources).not.toContain('*');
      }
      expect(JSON.stringify(doc)).toContain(world.fake.world.accountId);
      // Everything the config names is in the printed policy, exactly scoped.
      const resources = doc.Statement.flatMap((s) => [s.Resource].flat());
      expect(resources).toContain(
        `arn:aws:ssm:eu-west-1:${world.fake.world.accountId}:parameter/runner-fleet/ci/token`,
      );
      expect(resources).toContain(
        `arn:aws:ssm:eu-west-1:${world.fake.world.accountId}:parameter/runner-fleet/ami/*`,
      );
      expect(resources).toContain('arn:aws:s3:::ci-cache');
      await world.close();
      world = undefined;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
