/**
 * Provenance end to end on the AWS path: the real daemon against the wire-level fake, and a third
 * party (a raw SDK client) that launches its own instances and tags them as ours. They must never
 * be adopted, leased, reaped or terminated; they are logged once, counted in /metrics and shown by
 * `status` and `doctor`. Our own instances survive a daemon SIGKILL and restart as ours.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  CreateTagsCommand,
  DescribeInstancesCommand,
  EC2Client,
  RunInstancesCommand,
} from '@aws-sdk/client-ec2';
import { describe, expect, it } from 'vitest';
import { TAG } from '../../manager/providers/tags.js';
import { AWS_ENV, awsDaemonConfig, awsToml, TEMPLATE } from '../providers/aws-harness.js';
import { CLI, eventually } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';
import { awsE2eLifecycle } from './aws-e2e-harness.js';

const execFileAsync = promisify(execFile);
const e2e = awsE2eLifecycle();

/** A daemon (metrics on) with one idle instance of its own, and the tags that mark ours. */
async function daemonWithIdle(mode: 'fleet' | 'asg') {
  const { w, scratch } = await e2e.start(`rf-aws-prov-${mode}-`);
  const d = await e2e.daemon(
    awsDaemonConfig({
      scratch,
      pool: 'idle_count = 1\nidle_time = "10m"',
      sections: '[metrics]\nlisten = "127.0.0.1:0"',
      aws: awsToml(w, mode),
    }),
  );
  const ready = await eventually(
    'an idle instance',
    () => d.status(),
    (s) => s.instances.some((i) => i.state === 'idle'),
  );
  const ours = ready.instances.find((i) => i.state === 'idle')?.id ?? '';
  const ourTags = [
    { Key: TAG.fleet, Value: 'e2e' },
    { Key: TAG.manager, Value: ready.manager.id },
  ];
  return { w, d, ours, ourTags };
}

describe('provenance on AWS (fleet mode)', () => {
  it('never adopts, leases or terminates instances a third party tagged as ours; logs, counts and reports them; ours survive a SIGKILL', async () => {
    const { w, d, ours, ourTags } = await daemonWithIdle('fleet');

    // A third party with its own credentials: RunInstances and CreateTags, nothing of ours.
    const attacker = new EC2Client({ ...w.fake.clientConfig() });
    e2e.onStop(() => attacker.destroy());
    const described = await attacker.send(new DescribeInstancesCommand({ InstanceIds: [ours] }));
    const ourToken = described.Reservations?.[0]?.Instances?.[0]?.Tags?.find(
      (t) => t.Key === TAG.launchToken,
    )?.Value;
    expect(ourToken).toBeDefined();
    // 1. Launched already tagged as one of our idle instances.
    const tagged = await attacker.send(
      new RunInstancesCommand({
        ImageId: 'ami-0123456789abcdef0',
        MinCount: 1,
        MaxCount: 1,
        TagSpecifications: [
          { ResourceType: 'instance', Tags: [...ourTags, { Key: TAG.state, Value: 'idle' }] },
        ],
      }),
    );
    // 2. Launched from our own launch template, with our launch-token tag copied from our instance.
    const copied = await attacker.send(
      new RunInstancesCommand({
        LaunchTemplate: { LaunchTemplateName: TEMPLATE },
        MinCount: 1,
        MaxCount: 1,
        TagSpecifications: [
          {
            ResourceType: 'instance',
            Tags: [...ourTags, { Key: TAG.launchToken, Value: ourToken as string }],
          },
        ],
      }),
    );
    // 3. Launched plain, then tagged as one of our leases, long orphaned.
    const later = await attacker.send(
      new RunInstancesCommand({ ImageId: 'ami-0123456789abcdef0', MinCount: 1, MaxCount: 1 }),
    );
    const orphanId = later.Instances?.[0]?.InstanceId ?? '';
    await attacker.send(
      new CreateTagsCommand({
        Resources: [orphanId],
        Tags: [
          ...ourTags,
          { Key: TAG.state, Value: 'leased' },
          { Key: TAG.jobId, Value: '666' },
          { Key: TAG.leasedAt, Value: '2020-01-01T00:00:00.000Z' },
        ],
      }),
    );
    const foreign = [
      tagged.Instances?.[0]?.InstanceId ?? '',
      copied.Instances?.[0]?.InstanceId ?? '',
      orphanId,
    ].sort();

    const seen = await eventually(
      'the three foreign instances in status',
      () => d.status(),
      (s) => (s.foreign ?? []).length === 3,
    );
    expect((seen.foreign ?? []).map((f) => f.id).sort()).toEqual(foreign);
    for (const f of seen.foreign ?? []) expect(f.why).toMatch(/launch journal does not list it/);
    expect(seen.instances.map((i) => i.id)).not.toEqual(expect.arrayContaining([foreign[0]]));

    // A job runs on our instance, never on theirs.
    const result = await runJob(d.entry(), { id: '7101', script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"' });
    expect(result.outcome, result.log).toBe('success');
    const used = /on (i-[0-9a-f]{17})/.exec(result.log)?.[1] ?? '';
    expect(foreign).not.toContain(used);

    // Counted in /metrics.
    const address = /"address":"(127\.0\.0\.1:\d+)"[^\n]*metrics listening/.exec(d.output())?.[1];
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    expect(metrics).toMatch(/^runner_fleet_foreign_instances 3$/m);

    // Shown by doctor, with every id.
    const doctor = await execFileAsync(
      process.execPath,
      [CLI, 'doctor', '--json', '--config', d.configPath],
      {
        encoding: 'utf8',
        env: { ...process.env, ...AWS_ENV },
        timeout: 180_000,
      },
    ).catch((error: { stdout: string }) => ({ stdout: error.stdout }));
    const check = (
      JSON.parse(doctor.stdout) as { checks: { id: string; status: string; detail: string }[] }
    ).checks.find((c) => c.id === 'foreign instances');
    expect(check?.status).toBe('warn');
    for (const id of foreign) expect(check?.detail).toContain(id);

    // A daemon SIGKILL and restart: ours (the idle replacement for the used one) is adopted again,
    // proven by the launch journal; theirs is still left alone.
    const before = await eventually(
      'an idle instance of ours again',
      () => d.status(),
      (s) => s.instances.some((i) => i.state === 'idle'),
    );
    const idleId = before.instances.find((i) => i.state === 'idle')?.id ?? '';
    await d.kill();
    await d.start();
    const after = await eventually(
      'our instance adopted again, theirs foreign again',
      () => d.status(),
      (s) => (s.foreign ?? []).length === 3 && s.instances.some((i) => i.id === idleId),
    );
    for (const id of foreign) expect(after.instances.map((i) => i.id)).not.toContain(id);
    // The daemon logs asynchronously: its status answer can overtake the adoption's log line.
    const adopted = await eventually(
      'the adoption in the log',
      async () =>
        d
          .output()
          .split('\n')
          .filter((l) => l.includes(idleId) && l.includes('adopted instance from tags')),
      (l) => l.length > 0,
      30_000,
    );
    // The launch journal if its write beat the SIGKILL, else the ClientToken EC2 recorded: both
    // are proofs only this manager can have, and a planted instance has neither.
    expect(adopted.join('\n')).toMatch(/"proof":"launch (journal|token)"/);
    // Let the reaper and the readiness checks have their ticks: nothing of theirs is touched.
    await new Promise((r) => setTimeout(r, 3_000));
    for (const id of foreign) expect(w.fake.instance(id)?.State).toBe('running');
    expect(w.fake.calls('TerminateInstances').flatMap((c) => Object.values(c.params))).not.toEqual(
      expect.arrayContaining(foreign),
    );
    // Logged loudly, once per instance per daemon run (two runs here).
    for (const id of foreign) {
      const lines = await eventually(
        `both warnings about ${id} in the log`,
        async () =>
          d
            .output()
            .split('\n')
            .filter((l) => l.includes(id) && l.includes('was not launched by it')),
        (l) => l.length >= 2,
        30_000,
      );
      expect(lines).toHaveLength(2);
    }
  }, 240_000);
});

describe('provenance on AWS (asg mode)', () => {
  it("refuses an instance launched from our template's base version with our launch-token tag copied, and one tagged as ours", async () => {
    const { w, d, ours, ourTags } = await daemonWithIdle('asg');
    const attacker = new EC2Client({ ...w.fake.clientConfig() });
    e2e.onStop(() => attacker.destroy());
    const tagOf = (id: string, key: string) => w.fake.instance(id)?.Tags.find((t) => t.Key === key)?.Value;
    const ourToken = tagOf(ours, TAG.launchToken);
    expect(ourToken).toBeDefined();
    // Our instance came from the key window's own template version, not the base one.
    expect(tagOf(ours, 'aws:ec2launchtemplate:version')).not.toBe('1');

    // 1. From our template (its base version, which anyone allowed to launch from it can use),
    //    with our launch-token tag copied from our instance.
    const replayed = await attacker.send(
      new RunInstancesCommand({
        LaunchTemplate: { LaunchTemplateName: TEMPLATE, Version: '1' },
        MinCount: 1,
        MaxCount: 1,
        TagSpecifications: [
          {
            ResourceType: 'instance',
            Tags: [
              ...ourTags,
              { Key: TAG.state, Value: 'idle' },
              { Key: TAG.launchToken, Value: ourToken as string },
            ],
          },
        ],
      }),
    );
    // 2. Launched plain, then tagged as ours.
    const plain = await attacker.send(
      new RunInstancesCommand({ ImageId: 'ami-0123456789abcdef0', MinCount: 1, MaxCount: 1 }),
    );
    const plainId = plain.Instances?.[0]?.InstanceId ?? '';
    await attacker.send(
      new CreateTagsCommand({ Resources: [plainId], Tags: [...ourTags, { Key: TAG.state, Value: 'idle' }] }),
    );
    const foreign = [replayed.Instances?.[0]?.InstanceId ?? '', plainId].sort();
    expect(tagOf(replayed.Instances?.[0]?.InstanceId ?? '', 'aws:ec2launchtemplate:version')).toBe('1');

    const seen = await eventually(
      'both foreign instances in status',
      () => d.status(),
      (s) => (s.foreign ?? []).length === 2,
      60_000,
    );
    expect((seen.foreign ?? []).map((f) => f.id).sort()).toEqual(foreign);
    for (const id of foreign) expect(seen.instances.map((i) => i.id)).not.toContain(id);

    // A job runs on ours, never on theirs.
    const result = await runJob(d.entry(), { id: '7201', script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"' });
    expect(result.outcome, result.log).toBe('success');
    expect(foreign).not.toContain(/on (i-[0-9a-f]{17})/.exec(result.log)?.[1]);
    const address = /"address":"(127\.0\.0\.1:\d+)"[^\n]*metrics listening/.exec(d.output())?.[1];
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    expect(metrics).toMatch(/^runner_fleet_foreign_instances 2$/m);
    // Reconciles later, neither is terminated.
    await new Promise((r) => setTimeout(r, 3_000));
    for (const id of foreign) expect(w.fake.instance(id)?.State).toBe('running');
    const terminated = [
      ...w.fake.calls('TerminateInstances'),
      ...w.fake.calls('TerminateInstanceInAutoScalingGroup'),
    ].flatMap((c) => Object.values(c.params));
    expect(terminated).not.toEqual(expect.arrayContaining([foreign[0]]));
    expect(terminated).not.toEqual(expect.arrayContaining([foreign[1]]));
  }, 240_000);
});
