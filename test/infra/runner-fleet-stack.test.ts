import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultTarballPath } from '../../infra/fleet/package-asset.js';
import { RunnerFleetStack, type RunnerFleetStackProps } from '../../infra/fleet/runner-fleet-stack.js';
import { Network } from '../../infra/gitlab/network.js';
import { accessLogBucket } from '../../infra/shared/buckets.js';
import { hookEntryPath } from '../../manager/commands/runner-config.js';
import { loadConfig } from '../../manager/config/load.js';
import { TAG } from '../../manager/providers/tags.js';
import { CLI } from '../support/daemon.js';
import { parseRunnerEntry } from '../support/gitlab-runner.js';
import { appWithContext } from './cdk-context.js';
import {
  acknowledgements,
  asList,
  type Json,
  policyStatements,
  SYNTH_TIMEOUT_MS,
  Synthesized,
} from './synth.js';
import { bashSyntaxCheck, heredoc, userDataOf } from './user-data.js';

const env = { account: '222222222222', region: 'eu-west-1' };

let synth: Synthesized;
let props: RunnerFleetStackProps;
let asgStack: RunnerFleetStack;
let asg: Template;
let fleet: Template;

beforeAll(() => {
  const app = appWithContext();
  const network = new Stack(app, 'Network', { env });
  const vpc = new Network(network, 'Network', { natGateways: 1, flowLogs: accessLogBucket(network, 'Logs') })
    .vpc;
  props = {
    env,
    vpc,
    fleetName: 'ci',
    mode: 'asg',
    gitlabUrl: 'https://gitlab.example.com',
    runnerTokenParameter: '/runner-fleet/ci/runner-token',
    cacheExpiryDays: 14,
    maxJobInstances: 20,
    jobInstanceType: 'm7i.large',
    managerInstanceType: 't3.small',
    jobMaxLifetimeMinutes: 240,
    packageTarball: defaultTarballPath(),
    gitlabRunnerVersion: '18.2.0',
    gitlabRunnerSha256: 'a'.repeat(64),
    credentialClasses: [
      { name: 'default' },
      { name: 'deploy-dev', assumableRoleArns: ['arn:aws:iam::222222222222:role/runner-fleet-jobs/*'] },
    ],
  };
  asgStack = new RunnerFleetStack(app, 'FleetAsg', props);
  const fleetStack = new RunnerFleetStack(app, 'FleetFleet', { ...props, mode: 'fleet', fleetName: 'ci2' });
  synth = new Synthesized(app);
  asg = synth.template(asgStack);
  fleet = synth.template(fleetStack);
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

const resourcesOf = (template: Template, type: string) =>
  Object.entries(template.findResources(type)) as [string, { Properties: Record<string, Json> }][];
const launchTemplate = (template: Template, prefix: string) =>
  resourcesOf(template, 'AWS::EC2::LaunchTemplate').find(([id]) => id.startsWith(prefix))![1].Properties
    .LaunchTemplateData;

describe('runner fleet stack: launch templates', () => {
  it('requires IMDSv2 and encrypts the root volume on every launch template', () => {
    for (const template of [asg, fleet]) {
      const all = resourcesOf(template, 'AWS::EC2::LaunchTemplate');
      expect(all).toHaveLength(2);
      for (const [, lt] of all) {
        expect(lt.Properties.LaunchTemplateData.MetadataOptions.HttpTokens).toBe('required');
        expect(lt.Properties.LaunchTemplateData.BlockDeviceMappings[0].Ebs.Encrypted).toBe(true);
      }
    }
  });

  it('makes job instances terminate on shutdown, tagged with the fleet, with the default profile', () => {
    const job = launchTemplate(asg, 'JobLaunchTemplate');
    expect(job.InstanceInitiatedShutdownBehavior).toBe('terminate');
    expect(job.IamInstanceProfile.Arn).toEqual({
      'Fn::GetAtt': [expect.stringMatching(/^JobDefaultProfile/), 'Arn'],
    });
    const instanceTags = job.TagSpecifications.find(
      (s: { ResourceType: string }) => s.ResourceType === 'instance',
    ).Tags;
    expect(instanceTags).toContainEqual({ Key: TAG.fleet, Value: 'ci' });
    expect(JSON.stringify(job.UserData)).toContain('shutdown -P +240');
  });

  it('never tags the manager (or anything but job instances) with the fleet tag', () => {
    const manager = JSON.stringify(launchTemplate(asg, 'ManagerLaunchTemplate'));
    expect(manager).not.toContain(TAG.fleet);
    for (const [id, group] of resourcesOf(asg, 'AWS::AutoScaling::AutoScalingGroup')) {
      expect(JSON.stringify(group.Properties.Tags ?? []), id).not.toContain(TAG.fleet);
    }
  });

  it('runs the manager with the daemon unit and writes the runner entry with runner-config at boot', () => {
    const userData = userDataOf(asg, 'ManagerLaunchTemplate', env);
    expect(userData).toContain(
      'ExecStart=/usr/bin/runner-fleet daemon --config /etc/runner-fleet/config.toml',
    );
    expect(userData).toContain('runner-fleet runner-config --write --config /etc/runner-fleet/config.toml');
    expect(userData).not.toMatch(/glrt-|get-parameter/);
  });
});

/**
 * The seam between the stack and the daemon: the manager config the stack renders into user data,
 * with deploy-time values filled in, must load in the daemon's own loader, and `runner-config`
 * (the command the boot script runs) must render a usable [[runners]] entry from it.
 */
describe('runner fleet stack: the manager config loads in the daemon', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'rf-manager-config-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const rendered = (template: Template, name: string) => {
    const script = userDataOf(template, 'ManagerLaunchTemplate', env);
    const file = join(dir, `${name}.toml`);
    writeFileSync(file, heredoc(script, '/etc/runner-fleet/config.toml'));
    return { script, file };
  };

  it('in asg mode: the group, the default profile, GitLab, the token parameter and the cache', () => {
    const { file } = rendered(asg, 'asg');
    const config = loadConfig({ path: file, explicit: true }, {});
    expect(config.provider).toBe('aws');
    expect(config.fleet_name).toBe('ci');
    expect(config.aws).toMatchObject({ region: 'eu-west-1', mode: 'asg', asg_name: 'runner-fleet-ci-jobs' });
    expect(config.aws!.instance_profile).toMatch(
      /^arn:aws:iam::222222222222:instance-profile\/JobDefaultProfile/,
    );
    expect(config.gitlab).toEqual({
      url: 'https://gitlab.example.com',
      runner_token_parameter: '/runner-fleet/ci/runner-token',
    });
    expect(config.cache.bucket).toMatch(/^stack-cache/);
    expect(config.pool.max_instances).toBe(20);
    expect(config.pool.max_instance_lifetime).toBe(240 * 60_000);
    expect(config.metrics.listen).toBe('127.0.0.1:9402');
  });

  it('in fleet mode: the launch template and the private subnets', () => {
    const { file } = rendered(fleet, 'fleet');
    const config = loadConfig({ path: file, explicit: true }, {});
    expect(config.aws!.mode).toBe('fleet');
    expect(config.aws!.launch_template).toMatch(/^lt-[0-9a-f]{17}$/);
    expect(config.aws!.subnets).toHaveLength(2);
    for (const subnet of config.aws!.subnets) expect(subnet).toMatch(/^subnet-[0-9a-f]{17}$/);
  });

  it('runner-config renders the entry from it: every hook with --socket, the S3 cache, the url', () => {
    const { file } = rendered(asg, 'asg-entry');
    const config = loadConfig({ path: file, explicit: true }, {});
    const text = execFileSync(process.execPath, [CLI, 'runner-config', '--config', file], {
      encoding: 'utf8',
      env: { ...process.env, RUNNER_FLEET_CONFIG: '' },
    });
    const entry = parseRunnerEntry(text);
    for (const hook of ['config', 'prepare', 'run', 'cleanup'] as const) {
      expect(entry.custom[`${hook}_exec`]).toBe(process.execPath);
      expect(entry.custom[`${hook}_args`]).toEqual([hookEntryPath(CLI), hook, '--socket', config.socket]);
    }
    expect(config.socket).toBe('/var/lib/runner-fleet/control.sock');
    expect(text).toContain(`BucketName = "${config.cache.bucket}"`);
    expect(text).toContain('AuthenticationType = "iam"');
    expect(text).toContain('url = "https://gitlab.example.com"');
  });

  it('the whole manager user data is valid bash', () => {
    bashSyntaxCheck(rendered(asg, 'asg-bash').script);
    bashSyntaxCheck(rendered(fleet, 'fleet-bash').script);
  });
});

describe('runner fleet stack: pinned, verified software', () => {
  it('installs runner-fleet from its npm pack tarball shipped as a CDK asset, never by registry name', () => {
    const userData = userDataOf(asg, 'ManagerLaunchTemplate', env);
    expect(userData).toMatch(
      /aws s3 cp 's3:\/\/cdk-[a-z0-9]+-assets-222222222222-eu-west-1\/[0-9a-f]{64}\.tgz' \/tmp\/runner-fleet.tgz/,
    );
    expect(userData).toContain('npm install --global --prefix /usr /tmp/runner-fleet.tgz');
    expect(userData).not.toMatch(/npm install[^\n]* runner-fleet(@|\s|$)/m);
    expect(userData).not.toMatch(/\|\s*(ba)?sh\b/);
    // The asset is the packed tarball, staged into the cloud assembly.
    const tarball = readdirSync(synth.assembly.directory).find((f) => /^asset\.[0-9a-f]{64}\.tgz$/.test(f));
    expect(tarball).toBeDefined();
    const listing = execFileSync('tar', ['tzf', join(synth.assembly.directory, tarball!)], {
      encoding: 'utf8',
    });
    expect(listing.split('\n')).toEqual(
      expect.arrayContaining(['package/package.json', 'package/dist/cli.js', 'package/npm-shrinkwrap.json']),
    );
  });

  it('installs the pinned gitlab-runner on manager and job instances only after its checksum matches', () => {
    for (const prefix of ['ManagerLaunchTemplate', 'JobLaunchTemplate']) {
      const userData = userDataOf(asg, prefix, env);
      expect(userData).toContain(
        'curl -fsSL --retry 5 -o "$runner_tmp" \'https://gitlab-runner-downloads.s3.amazonaws.com/v18.2.0/binaries/gitlab-runner-linux-amd64\'',
      );
      expect(userData).toContain(`expected='${'a'.repeat(64)}'`);
      expect(userData).not.toContain('/latest/');
    }
  });

  it('refuses to synthesize without the tarball, naming the command that makes it', () => {
    const app = appWithContext();
    const network = new Stack(app, 'Net', { env });
    const vpc = new Network(network, 'Network', {
      natGateways: 1,
      flowLogs: accessLogBucket(network, 'Logs'),
    }).vpc;
    expect(
      () =>
        new RunnerFleetStack(app, 'NoTarball', {
          ...props,
          vpc,
          packageTarball: '/nonexistent/runner-fleet.tgz',
        }),
    ).toThrow(/runner-fleet package not found at \/nonexistent\/runner-fleet.tgz: run `npm run pack:asset`/);
  });
});

describe('runner fleet stack: groups', () => {
  it('keeps the manager in a self-healing group of one', () => {
    asg.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      MinSize: '1',
      MaxSize: '1',
      LaunchTemplate: Match.objectLike({
        LaunchTemplateId: { Ref: Match.stringLikeRegexp('^ManagerLaunchTemplate') },
      }),
    });
  });

  it('in asg mode: job group from 0, desired left to the manager, new instances protected', () => {
    const [, group] = resourcesOf(asg, 'AWS::AutoScaling::AutoScalingGroup').find(
      ([, g]) => g.Properties.AutoScalingGroupName === 'runner-fleet-ci-jobs',
    )!;
    expect(group.Properties).toMatchObject({
      MinSize: '0',
      MaxSize: '20',
      NewInstancesProtectedFromScaleIn: true,
    });
    expect(group.Properties.DesiredCapacity).toBeUndefined();
    expect(group.Properties.LaunchTemplate.LaunchTemplateId.Ref).toMatch(/^JobLaunchTemplate/);
  });

  it('in asg mode: suspends AZRebalance on the job group', () => {
    const [, suspend] = resourcesOf(asg, 'Custom::AWS').find(([id]) => id.startsWith('SuspendAzRebalance'))!;
    const create = JSON.stringify(suspend.Properties.Create);
    expect(create).toContain('SuspendProcesses');
    expect(create).toContain('AZRebalance');
    expect(create).toContain('runner-fleet-ci-jobs');
  });

  it('in fleet mode: no job group, only the manager', () => {
    fleet.resourceCountIs('AWS::AutoScaling::AutoScalingGroup', 1);
    fleet.resourceCountIs('Custom::AWS', 0);
  });
});

describe('runner fleet stack: IAM', () => {
  const managerStatements = (template: Template) => {
    const [, policy] = resourcesOf(template, 'AWS::IAM::Policy').find(([id]) =>
      id.startsWith('ManagerPolicy'),
    )!;
    expect(policy.Properties.Roles).toEqual([{ Ref: expect.stringMatching(/^ManagerRole/) }]);
    return policy.Properties.PolicyDocument.Statement as { Sid: string }[];
  };

  it('attaches managerPolicyDocument to the manager role', () => {
    const sids = managerStatements(asg).map((s) => s.Sid);
    for (const sid of [
      'DescribeIsNotResourceScoped',
      'ManageOwnInstances',
      'SteerJobGroup',
      'ReadRunnerToken',
      'CacheBucketObjects',
    ]) {
      expect(sids).toContain(sid);
    }
    expect(managerStatements(fleet).map((s) => s.Sid)).toContain('LaunchOnlyTaggedInstances');
  });

  it('scopes terminate by fleet tag or group ARN, never an unconditioned wildcard', () => {
    for (const template of [asg, fleet]) {
      const terminating = policyStatements(template).filter((s) =>
        asList(s.Action as string | string[]).some((a) => /Terminate/.test(a)),
      );
      expect(terminating.length).toBeGreaterThan(0);
      for (const s of terminating) {
        const resources = asList(s.Resource as unknown);
        expect(resources).not.toContain('*');
        const byTag = JSON.stringify(s.Condition ?? {}).includes(`aws:ResourceTag/${TAG.fleet}`);
        const byGroup = JSON.stringify(resources).includes('autoScalingGroupName/runner-fleet-ci-jobs');
        expect(byTag || byGroup, JSON.stringify(s)).toBe(true);
      }
    }
  });

  it('passes only the job roles, and only to EC2', () => {
    const [passRole] = policyStatements(asg).filter((s) =>
      asList(s.Action as string[]).includes('iam:PassRole'),
    );
    expect(passRole!.Condition).toEqual({ StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } });
    expect(JSON.stringify(passRole!.Resource)).toMatch(/JobDefaultRole.*JobDeployDevRole/);
  });

  it('has one least-privilege role and instance profile per credential class', () => {
    asg.resourceCountIs('AWS::IAM::InstanceProfile', 3);
    const roles = resourcesOf(asg, 'AWS::IAM::Role').filter(([id]) => /^Job.*Role/.test(id));
    expect(roles.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual([
      'JobDefaultRole',
      'JobDeployDevRole',
    ]);
    const jobPolicies = policyStatements(asg).filter((s) => s.Sid === 'AssumeClassRoles');
    expect(jobPolicies).toHaveLength(1);
    expect(jobPolicies[0]!.Resource).toBe('arn:aws:iam::222222222222:role/runner-fleet-jobs/*');
    // The default class has no policy at all.
    const attached = resourcesOf(asg, 'AWS::IAM::Policy').flatMap(([, p]) =>
      JSON.stringify(p.Properties.Roles),
    );
    expect(attached.some((r) => r.includes('JobDefaultRole'))).toBe(false);
  });

  it('has no IAM users or access keys', () => {
    asg.resourceCountIs('AWS::IAM::User', 0);
    asg.resourceCountIs('AWS::IAM::AccessKey', 0);
  });
});

describe('runner fleet stack: cache and logs', () => {
  it('has a private, encrypted, expiring cache bucket', () => {
    asg.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: Match.anyValue(),
      LifecycleConfiguration: { Rules: [Match.objectLike({ ExpirationInDays: 14, Status: 'Enabled' })] },
    });
  });

  it('has a CloudWatch log group with retention', () => {
    asg.hasResourceProperties('AWS::Logs::LogGroup', {
      LogGroupName: '/runner-fleet/ci',
      RetentionInDays: 30,
    });
  });

  it('lets jobs be reached over SSH from the manager only', () => {
    const rules = resourcesOf(asg, 'AWS::EC2::SecurityGroupIngress').map(([, r]) => r.Properties);
    expect(rules).toHaveLength(1);
    expect(rules[0]).toMatchObject({ FromPort: 22, ToPort: 22 });
    expect(rules[0]!.SourceSecurityGroupId['Fn::GetAtt'][0]).toMatch(/^ManagerSecurityGroup/);
  });
});

describe('runner fleet stack: checks', () => {
  it('passes cdk-nag AwsSolutions with every acknowledgement explained', () => {
    expect(synth.nagViolations(asgStack)).toEqual([]);
    for (const a of acknowledgements(asgStack))
      expect(a.reason.length, `${a.id} at ${a.path}`).toBeGreaterThan(30);
  });

  it('synthesizes without CloudFormation-validate findings', () => {
    expect(synth.validationViolations()).toEqual([]);
  });
});
