import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AutoScalingClient, SuspendProcessesCommand } from '@aws-sdk/client-auto-scaling';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { hookEntryPath, writeRunnerConfig } from '../../manager/commands/runner-config.js';
import { parseConfigText } from '../../manager/config/load.js';
import type { Config } from '../../manager/config/schema.js';
import { listenControl } from '../../manager/control/server.js';
import { type CheckResult, renderReport, runDoctor } from '../../manager/ops/doctor.js';
import { install } from '../../manager/ops/install.js';
import { register } from '../../manager/ops/register.js';
import { AwsFake } from '../fakes/aws/fake.js';
import { type FakeGitlab, startFakeGitlab } from './fake-gitlab.js';

let fake: AwsFake;
let gitlab: FakeGitlab;
let dir: string;
const closers: Array<() => Promise<void> | void> = [];

beforeEach(async () => {
  fake = await AwsFake.start();
  gitlab = await startFakeGitlab();
  dir = mkdtempSync(join(tmpdir(), 'rf-doctor-'));
});
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  await fake.close();
  await gitlab.close();
  rmSync(dir, { recursive: true, force: true });
});

const creds = () => ({ credentials: fake.clientConfig().credentials });

function configText(mode: 'asg' | 'fleet', extra = ''): string {
  return `provider = "aws"
fleet_name = "blue"
state_dir = "${dir}/root/var/lib/runner-fleet"
[aws]
region = "${fake.world.region}"
mode = "${mode}"
asg_name = "rf-jobs"
launch_template = "rf-job"
subnets = ["subnet-0aaa1111"]
endpoint = "${fake.url}"
[gitlab]
url = "${gitlab.url}"
runner_token_parameter = "/runner-fleet/blue/runner-token"
[cache]
bucket = "rf-cache-blue"
${extra}`;
}

const byId = (results: CheckResult[]) => new Map(results.map((r) => [r.id, r]));
const failing = (results: CheckResult[]) => results.filter((r) => r.status === 'fail').map((r) => r.id);

async function doctor(config: Config, runnerConfigPath: string) {
  const progress: string[] = [];
  const results = await runDoctor({
    config,
    aws: creds(),
    runnerConfigPath,
    gitlabRunnerVersion: async () => '17.11.0',
    progress: (m) => progress.push(m),
  });
  return { results, progress };
}

describe('doctor', () => {
  it('from install: explains every missing piece, then passes after the fixes', async () => {
    const root = join(dir, 'root');
    const cli = join(dir, 'cli.js');
    writeFileSync(cli, '#!/usr/bin/env node\n', { mode: 0o755 });
    // The hooks' bundle sits next to cli.js in a built package (runner-config's hookEntryPath).
    mkdirSync(dirname(hookEntryPath(cli)), { recursive: true });
    writeFileSync(hookEntryPath(cli), '', { mode: 0o644 });
    // install into a temp root, as the current user (tests do not create system users).
    const lines: string[] = [];
    const installed = install(
      {
        root,
        user: 'root',
        node: process.execPath,
        cli,
        stateDir: '/var/lib/runner-fleet',
        stopTimeoutMs: 600_000,
        exampleConfig: '# example\n',
        dryRun: false,
        lookupUser: () => ({ uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }),
      },
      (l) => lines.push(l),
    );
    expect(installed.ok).toBe(true);
    const config = parseConfigText(configText('asg'), join(root, 'etc/runner-fleet/config.toml'));
    const runnerToml = join(dir, 'gitlab-runner-config.toml');

    // An AWS account set up the way people forget: IMDSv1 allowed, stop on shutdown, AZRebalance on.
    fake.addLaunchTemplate(
      'rf-job',
      [
        { ImageId: 'ami-0123456789abcdef0', MetadataOptions: { HttpTokens: 'optional' } },
        {
          ImageId: 'ami-0123456789abcdef0',
          MetadataOptions: { HttpTokens: 'required' },
          InstanceInitiatedShutdownBehavior: 'terminate',
        },
      ],
      1,
    );
    fake.addAutoScalingGroup({
      name: 'rf-jobs',
      maxSize: 10,
      launchTemplate: { LaunchTemplateName: 'rf-job', Version: '$Default' },
    });

    const before = await doctor(config, runnerToml);
    const b = byId(before.results);
    expect(failing(before.results).sort()).toEqual(
      [
        'daemon',
        'runner entry',
        'az rebalance',
        'imdsv2',
        'shutdown behavior',
        'ami',
        'cache bucket',
        'runner token',
      ].sort(),
    );
    expect(b.get('state directory')?.status).toBe('pass'); // install created it, 0700
    expect(b.get('group size')).toMatchObject({
      status: 'pass',
      detail: 'MaxSize 10 ≥ [pool] max_instances 10',
    });
    expect(b.get('ami directories')?.status).toBe('skip'); // no manifest yet
    expect(b.get('aws identity')?.status).toBe('pass');
    expect(b.get('az rebalance')?.fix).toContain('--scaling-processes AZRebalance');
    expect(b.get('imdsv2')?.fix).toContain('HttpTokens = "required"');
    expect(b.get('ami')?.fix).toContain('/runner-fleet/ami/ami-0123456789abcdef0');
    expect(b.get('runner token')?.fix).toContain('runner-fleet register');
    expect(b.get('permission autoscaling:SetDesiredCapacity')?.status).toBe('skip');
    expect(b.get('permission ec2:DescribeInstances')?.status).toBe('pass');
    expect(before.progress.some((m) => m.includes('DryRun'))).toBe(true);
    const report = renderReport(before.results);
    expect(report).toMatch(/FAIL {2}az rebalance +AZRebalance is active/);
    expect(report).toContain('8 check(s) failed');
    // Doctor changed nothing and launched nothing.
    expect(fake.instances()).toEqual([]);
    expect(fake.callCount('RunInstances', { includeErrors: true })).toBe(0);

    // The fixes, the way an operator makes them.
    const asg = new AutoScalingClient({ ...fake.clientConfig() });
    await asg.send(
      new SuspendProcessesCommand({ AutoScalingGroupName: 'rf-jobs', ScalingProcesses: ['AZRebalance'] }),
    );
    asg.destroy();
    (fake.world.launchTemplates.get('rf-job') as { DefaultVersionNumber: number }).DefaultVersionNumber = 2;
    // An AMI without Docker: bare jobs would run, jobs with image: would not.
    fake.putParameter(
      '/runner-fleet/ami/ami-0123456789abcdef0',
      JSON.stringify({
        packages: { git: '2.43.0', 'git-lfs': '3.4.1', 'gitlab-runner': '17.11.0' },
        ssh_user: 'ec2-user',
        writable_dirs: ['/builds', '/cache'],
      }),
    );
    const noDocker = byId((await doctor(config, runnerToml)).results);
    expect(noDocker.get('ami')?.status).toBe('pass');
    expect(noDocker.get('ami docker')).toMatchObject({ status: 'fail' });
    expect(noDocker.get('ami docker')?.detail).toContain('has no docker in its manifest');
    fake.putParameter(
      '/runner-fleet/ami/ami-0123456789abcdef0',
      JSON.stringify({
        packages: { git: '2.43.0', 'git-lfs': '3.4.1', 'gitlab-runner': '17.11.0', docker: '26.1.5' },
        ssh_user: 'ec2-user',
        writable_dirs: ['/builds', '/cache'],
      }),
    );
    fake.addBucket('rf-cache-blue');
    gitlab.accessTokens.set('glpat-admin-secret', ['create_runner']);
    const reg = await register(
      config,
      { gitlabUrl: gitlab.url, accessToken: 'glpat-admin-secret', runnerType: 'instance_type' },
      () => {},
      creds(),
    );
    expect(reg.ok).toBe(true);
    expect((await writeRunnerConfig(config, { node: process.execPath, cli }, runnerToml, creds())).code).toBe(
      0,
    );
    const server = await listenControl(
      config.socket,
      async () => ({ pong: true }),
      pino({ level: 'silent' }),
    );
    closers.push(() => new Promise<void>((r) => server.close(() => r())));

    const after = await doctor(config, runnerToml);
    expect(failing(after.results), renderReport(after.results)).toEqual([]);
    expect(byId(after.results).get('ami directories')).toMatchObject({
      status: 'pass',
      detail: '/builds and /cache writable by ec2-user on ami-0123456789abcdef0',
    });
    expect(byId(after.results).get('gitlab accepts token')?.detail).toContain('runner 100');
    expect(byId(after.results).get('job checks')?.detail).toContain(`${gitlab.url}/api/v4/job`);
    expect(renderReport(after.results)).toContain('all checks passed');
    // The runner token never shows up in what doctor prints.
    const token = fake.parameter('/runner-fleet/blue/runner-token')?.Value as string;
    expect(token).toMatch(/^glrt-/);
    expect(JSON.stringify(after)).not.toContain(token);
    expect(readFileSync(runnerToml, 'utf8')).toContain(`token = "${token}"`);
  });

  it('fleet mode: a denied launch permission and a rejected token fail with their fix', async () => {
    fake.addLaunchTemplate('rf-job', {
      ImageId: 'ami-0123456789abcdef0',
      MetadataOptions: { HttpTokens: 'required' },
      InstanceInitiatedShutdownBehavior: 'terminate',
    });
    fake.deny('RunInstances');
    fake.putParameter('/runner-fleet/blue/runner-token', 'glrt-revoked-token-0000', 'SecureString');
    const config = parseConfigText(configText('fleet'), '/etc/runner-fleet/config.toml');
    const { results } = await doctor(config, join(dir, 'none.toml'));
    const r = byId(results);
    expect(r.get('permission ec2:RunInstances')).toMatchObject({
      status: 'fail',
      detail: 'denied for the manager role',
    });
    expect(r.get('permission ec2:RunInstances')?.fix).toContain('runner-fleet iam-policy');
    expect(r.get('permission ec2:CreateFleet')).toBeUndefined();
    expect(r.get('permission ec2:TerminateInstances')?.status).toBe('skip'); // no own instance yet
    expect(r.get('runner token')?.status).toBe('pass');
    expect(r.get('gitlab accepts token')).toMatchObject({ status: 'fail' });
    expect(r.get('gitlab accepts token')?.detail).toMatch(/does not accept the runner token \(403\)/);
    expect(JSON.stringify(results)).not.toContain('glrt-revoked-token-0000');
    // The DryRun calls carried DryRun and nothing was launched.
    expect(fake.calls('RunInstances').every((c) => c.params.DryRun === 'true')).toBe(true);
    expect(fake.instances()).toEqual([]);
  });

  it("names a rule's instance profile of another account, which EC2 could never attach", async () => {
    const rules = (profile: string) => `[credentials]
gitlab_url = "https://gitlab.example.com"
audience = "runner-fleet"
default_profile = "runner-fleet-ci"
[[credentials.rule]]
name = "deploy-prod"
project_path = "platform/**"
instance_profile = "${profile}"
`;
    const foreign = 'arn:aws:iam::222222222222:instance-profile/deploy';
    const bad = parseConfigText(configText('fleet', rules(foreign)), '/etc/runner-fleet/config.toml');
    const r = byId((await doctor(bad, join(dir, 'none.toml'))).results);
    expect(r.get('instance profiles')).toMatchObject({ status: 'fail' });
    expect(r.get('instance profiles')?.detail).toContain(foreign);
    expect(r.get('instance profiles')?.fix).toContain('assume a role there');

    const own = `arn:aws:iam::${fake.world.accountId}:instance-profile/deploy`;
    const good = parseConfigText(configText('fleet', rules(own)), '/etc/runner-fleet/config.toml');
    const g = byId((await doctor(good, join(dir, 'none.toml'))).results);
    expect(g.get('instance profiles')).toMatchObject({
      status: 'pass',
      detail: `2 profile(s) named by [credentials], all in account ${fake.world.accountId}`,
    });
  });

  it('reports an invalid config and a world-readable state directory', async () => {
    const bad = await runDoctor({
      config: { error: '/etc/runner-fleet/config.toml:3: unknown key "pol"', source: 'x' },
    });
    expect(bad).toEqual([expect.objectContaining({ id: 'config', status: 'fail' })]);
    const state = join(dir, 'state');
    mkdirSync(state);
    chmodSync(state, 0o755);
    const local = parseConfigText(`state_dir = "${state}"\n`, '/etc/runner-fleet/config.toml');
    const r = byId(await runDoctor({ config: local, runnerConfigPath: join(dir, 'none.toml') }));
    expect(r.get('state directory')).toMatchObject({ status: 'fail', fix: `chmod 0700 ${state}` });
    expect(r.get('aws identity')?.status).toBe('skip');
    expect(r.get('cache bucket')?.status).toBe('skip');
    // No GitLab URL in the config: job checks are off, and doctor says so.
    expect(r.get('job checks')).toMatchObject({ status: 'warn', detail: expect.stringContaining('off') });
    // A config file on a manager: the service and --write are the fixes.
    expect(r.get('daemon')?.fix).toMatch(/^systemctl enable --now runner-fleet/);
  });

  it('gives fixes that work for the embedded default (npm start): no unit, no --write', async () => {
    const state = join(dir, 'embedded-state');
    const embedded = { ...parseConfigText(`state_dir = "${state}"\n`, 'x.toml'), source: 'embedded default' };
    const r = byId(await runDoctor({ config: embedded, runnerConfigPath: join(dir, 'none.toml') }));
    expect(r.get('daemon')?.status).toBe('fail');
    expect(r.get('daemon')?.fix).toMatch(/^start it: `runner-fleet daemon` \(or `npm start`/);
    const entry = [...r.values()].find((c) => c.fix?.includes('runner-config'));
    expect(entry?.fix).toContain('paste what `runner-fleet runner-config` prints');
    expect(JSON.stringify([...r.values()].map((c) => c.fix))).not.toContain('runner-config --write');
  });

  it('asg mode: a group smaller than max_instances, and an AMI without the job directories, fail with their fix', async () => {
    fake.addLaunchTemplate('rf-job', {
      ImageId: 'ami-0123456789abcdef0',
      MetadataOptions: { HttpTokens: 'required' },
      InstanceInitiatedShutdownBehavior: 'terminate',
    });
    fake.addAutoScalingGroup({
      name: 'rf-jobs',
      maxSize: 4,
      launchTemplate: { LaunchTemplateName: 'rf-job', Version: '$Default' },
    });
    const packages = { git: '2.43.0', 'git-lfs': '3.4.1', 'gitlab-runner': '17.11.0' };
    const manifest = '/runner-fleet/ami/ami-0123456789abcdef0';
    fake.putParameter(
      manifest,
      JSON.stringify({ packages, ssh_user: 'ec2-user', writable_dirs: ['/builds'] }),
    );
    const big = parseConfigText(
      configText('asg', '[pool]\nmax_instances = 12\n'),
      '/etc/runner-fleet/config.toml',
    );
    const r = byId((await doctor(big, join(dir, 'none.toml'))).results);
    expect(r.get('group size')).toMatchObject({
      status: 'fail',
      fix: 'aws autoscaling update-auto-scaling-group --auto-scaling-group-name rf-jobs --max-size 12 (or lower [pool] max_instances)',
    });
    expect(r.get('ami directories')).toMatchObject({ status: 'fail' });
    expect(r.get('ami directories')?.detail).toMatch(
      /^\/cache not writable by ec2-user on ami-0123456789abcdef0/,
    );

    // Sized to the group, with a manifest that says nothing about directories: pass, and a warning.
    fake.putParameter(manifest, JSON.stringify({ packages }));
    const fits = parseConfigText(
      configText('asg', '[pool]\nmax_instances = 4\n'),
      '/etc/runner-fleet/config.toml',
    );
    const f = byId((await doctor(fits, join(dir, 'none.toml'))).results);
    expect(f.get('group size')?.status).toBe('pass');
    expect(f.get('ami directories')).toMatchObject({ status: 'warn' });
    expect(f.get('ami directories')?.fix).toContain('"writable_dirs":["/builds","/cache"]');
  });
});
