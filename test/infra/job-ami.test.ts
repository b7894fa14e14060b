/**
 * The job AMI pipeline: the Image Builder component document (YAML, bash steps checked by `bash
 * -n`), the manifest its test phase publishes — run for real with stand-ins for the instance's
 * tools and read back by doctor's own parser and checks — and the stack's resources.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Stack } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { AMI_MANIFEST_PREFIX, JobAmiStack, jobAmiParameterName } from '../../infra/ami/job-ami-stack.js';
import {
  type ComponentDocument,
  contentVersion,
  type JobImageOptions,
  renderJobImageComponentYaml,
} from '../../infra/ami/job-image-component.js';
import { Network } from '../../infra/gitlab/network.js';
import { accessLogBucket } from '../../infra/shared/buckets.js';
import { parseConfigText } from '../../manager/config/load.js';
import type { Config } from '../../manager/config/schema.js';
import {
  checkAmiDirs,
  checkAmiDocker,
  checkAmiPackages,
  parseAmiManifest,
} from '../../manager/ops/doctor.js';
import { appWithContext } from './cdk-context.js';
import { acknowledgements, policyStatements, SYNTH_TIMEOUT_MS, Synthesized } from './synth.js';
import { bashSyntaxCheck } from './user-data.js';

/** The daemon's own defaults for what the image must match: `[aws] ssh_user`, builds/cache dirs, manifest prefix. */
function daemonConfig(extra = ''): Config {
  return parseConfigText(
    `provider = "aws"
fleet_name = "ci"
[aws]
region = "eu-west-1"
mode = "fleet"
launch_template = "lt-0123456789abcdef0"
subnets = ["subnet-0aaa1111"]
${extra}`,
    '/etc/runner-fleet/config.toml',
    {},
  );
}

const RUNNER = { version: '18.2.0', sha256: 'a'.repeat(64) };

function optionsFrom(config: Config): JobImageOptions {
  if (config.provider !== 'aws' || !config.aws) throw new Error('aws config expected');
  return {
    sshUser: config.aws.ssh_user,
    buildsDir: config.executor.builds_dir,
    cacheDir: config.executor.cache_dir,
    gitlabRunner: RUNNER,
    manifestParameterPrefix: config.image.manifest_parameter_prefix,
  };
}

const steps = (doc: ComponentDocument) =>
  doc.phases.flatMap((p) => p.steps.map((s) => ({ phase: p.name, ...s })));

describe('job image component document', () => {
  const yaml = renderJobImageComponentYaml(optionsFrom(daemonConfig()));
  const doc = parse(yaml) as ComponentDocument;

  it('is Image Builder YAML: schema 1.0, build/validate/test phases of ExecuteBash steps', () => {
    expect(doc.schemaVersion).toBe(1);
    expect(yaml).toMatch(/^schemaVersion: 1\.0$/m);
    expect(doc.phases.map((p) => p.name)).toEqual(['build', 'validate', 'test']);
    expect(steps(doc).map((s) => `${s.phase}/${s.name}`)).toEqual([
      'build/InstallPackages',
      'build/InstallGitlabRunner',
      'build/PrepareJobUser',
      'validate/ValidateTools',
      'test/CheckJobUser',
      'test/PublishManifest',
    ]);
    for (const s of steps(doc)) {
      expect(s.action).toBe('ExecuteBash');
      expect(s.inputs.commands).toHaveLength(1);
      expect(s.inputs.commands[0]).toMatch(/^set -euo pipefail\n/);
    }
  });

  it('has steps bash parses, and no {{ }} Image Builder would substitute', () => {
    for (const s of steps(doc)) {
      bashSyntaxCheck(s.inputs.commands[0]!);
      expect(s.inputs.commands[0], s.name).not.toContain('{{');
    }
    expect(() => bashSyntaxCheck('if then')).toThrow();
  });

  it('installs what the README and docs/containers.md require, gitlab-runner pinned and verified', () => {
    const text = (name: string) => steps(doc).find((s) => s.name === name)!.inputs.commands[0]!;
    const install = text('InstallPackages');
    // Not coreutils: AL2023 may carry coreutils-single, which conflicts; setsid/timeout are validated instead.
    expect(install).not.toMatch(/coreutils/);
    for (const pkg of ['git', 'git-lfs', 'docker', 'amazon-ecr-credential-helper', 'openssh-server'])
      expect(install).toMatch(new RegExp(`dnf install -y .*\\b${pkg}\\b`));
    expect(install).toContain('systemctl enable sshd.service docker.service');
    const runner = text('InstallGitlabRunner');
    expect(runner).toContain('/v18.2.0/binaries/gitlab-runner-linux-amd64');
    expect(runner).toContain(`expected='${RUNNER.sha256}'`);
    expect(runner).toContain('sha256sum --check');
    const user = text('PrepareJobUser');
    expect(user).toContain("usermod -aG docker 'ec2-user'");
    expect(user).toContain("install -d -o 'ec2-user' -g 'ec2-user' -m 0750 '/builds' '/cache'");
  });

  it('follows the daemon config it is rendered for', () => {
    const other = renderJobImageComponentYaml(
      optionsFrom(daemonConfig('ssh_user = "admin"\n[executor]\nbuilds_dir = "/srv/builds"')),
    );
    expect(other).toContain("install -d -o 'admin' -g 'admin' -m 0750 '/srv/builds' '/cache'");
    expect(contentVersion(other)).not.toBe(contentVersion(yaml));
    expect(contentVersion(yaml)).toBe(contentVersion(yaml));
    expect(contentVersion(yaml)).toMatch(/^1\.0\.\d+$/);
  });

  it('refuses values it would have to quote for bash', () => {
    const o = optionsFrom(daemonConfig());
    expect(() => renderJobImageComponentYaml({ ...o, buildsDir: "/b'; rm -rf /" })).toThrow(/builds_dir/);
    expect(() => renderJobImageComponentYaml({ ...o, sshUser: 'a b' })).toThrow(/ssh user/);
  });
});

/**
 * Runs the PublishManifest step as Image Builder would, with stand-ins on PATH for what only the
 * instance has: IMDS (curl), rpm, gitlab-runner, runuser and the AWS CLI (which records its call).
 */
function runPublishStep(o: JobImageOptions, rpmVersions: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'rf-ami-manifest-'));
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const tool = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/bash\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  tool(
    'curl',
    `case "$*" in
  *api/token*) echo token-123 ;;
  *meta-data/ami-id*) echo ami-0123456789abcdef0 ;;
  *meta-data/placement/region*) echo eu-west-1 ;;
  *) exit 22 ;;
esac`,
  );
  tool(
    'rpm',
    `pkg="\${@: -1}"
case "$pkg" in
${Object.entries(rpmVersions)
  .map(([p, v]) => `  ${p}) printf '%s' '${v}' ;;`)
  .join('\n')}
  *) echo "package $pkg is not installed"; exit 1 ;;
esac`,
  );
  tool('gitlab-runner', "printf 'Version:      18.2.0\\nGit revision: 12345678\\n'");
  // runuser -u USER -- CMD…: the test runs as one user, so run CMD as is.
  tool('runuser', 'shift 3; exec "$@"');
  tool('aws', `printf '%s\\n' "$@" > '${dir}/aws-args'`);
  try {
    const doc = parse(renderJobImageComponentYaml(o)) as ComponentDocument;
    const script = steps(doc).find((s) => s.name === 'PublishManifest')!.inputs.commands[0]!;
    const r = spawnSync('bash', ['-c', script], {
      env: { PATH: `${bin}:${process.env.PATH}`, HOME: dir },
      // stdin not a socket (Node's default pipes are), or bash reads ~/.bashrc as if run by sshd.
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
    let args: string[] | undefined;
    try {
      args = readFileSync(join(dir, 'aws-args'), 'utf8').trimEnd().split('\n');
    } catch {}
    return { status: r.status, stderr: r.stderr, args };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const RPMS = {
  git: '2.47.1',
  'git-lfs': '3.6.1',
  docker: '25.0.8',
  'amazon-ecr-credential-helper': '0.9.1',
  'openssh-server': '8.7p1',
};

describe('the manifest the test phase publishes', () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'rf-ami-dirs-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  function setup(makeCache: boolean) {
    const builds = join(work, `builds-${makeCache}`);
    const cache = join(work, `cache-${makeCache}`);
    mkdirSync(builds, { recursive: true });
    if (makeCache) mkdirSync(cache, { recursive: true });
    const config = daemonConfig(
      `ssh_user = "${userInfo().username}"\n[executor]\nbuilds_dir = "${builds}"\ncache_dir = "${cache}"`,
    );
    return { config, options: optionsFrom(config) };
  }

  it('is a String parameter <prefix>/<ami-id> that doctor parses and passes', () => {
    const { config, options } = setup(true);
    const r = runPublishStep(options, RPMS);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const arg = (flag: string) => r.args![r.args!.indexOf(flag) + 1];
    expect(r.args!.slice(0, 2)).toEqual(['ssm', 'put-parameter']);
    expect(arg('--region')).toBe('eu-west-1');
    expect(arg('--type')).toBe('String');
    expect(r.args).toContain('--overwrite');
    expect(arg('--name')).toBe(`${config.image.manifest_parameter_prefix}/ami-0123456789abcdef0`);

    const manifest = parseAmiManifest(arg('--value')!);
    const image = 'ami-0123456789abcdef0';
    expect(checkAmiPackages(image, manifest, '18.3.1')).toMatchObject({
      status: 'pass',
      detail: `${image}: git 2.47.1, git-lfs 3.6.1, gitlab-runner 18.2.0 (manager 18.3.1)`,
    });
    expect(checkAmiDocker(image, manifest)).toMatchObject({
      status: 'pass',
      detail: `${image}: docker 25.0.8, docker-credential-ecr-login 0.9.1`,
    });
    expect(checkAmiDirs(config, config.aws!, image, manifest)).toMatchObject({ status: 'pass' });
    // gitlab-runner's major is checked against the manager's by doctor, from this manifest.
    expect(checkAmiPackages(image, manifest, '17.11.0').status).toBe('fail');
  });

  it('lists only directories that exist writable: doctor then fails the missing one', () => {
    const { config, options } = setup(false);
    const r = runPublishStep(options, RPMS);
    expect(r.status).toBe(0);
    const manifest = parseAmiManifest(r.args![r.args!.indexOf('--value') + 1]!);
    expect(manifest.writable_dirs).toEqual([config.executor.builds_dir]);
    const dirs = checkAmiDirs(config, config.aws!, 'ami-0123456789abcdef0', manifest);
    expect(dirs.status).toBe('fail');
    expect(dirs.detail).toContain(`${config.executor.cache_dir} not writable`);
  });

  it('is not published when a package is missing or its version is not one plain word', () => {
    const { options } = setup(true);
    const { docker: _, ...noDocker } = RPMS;
    const missing = runPublishStep(options, noDocker);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain("docker: unexpected version 'package docker is not installed'");
    expect(missing.args).toBeUndefined();
    const odd = runPublishStep(options, { ...RPMS, git: '2.47"1' });
    expect(odd.status).not.toBe(0);
    expect(odd.args).toBeUndefined();
  });
});

describe('JobAmiStack', () => {
  const env = { account: '222222222222', region: 'eu-west-1' };
  let synth: Synthesized;
  let stack: JobAmiStack;
  let t: Template;

  beforeAll(() => {
    const app = appWithContext();
    const network = new Stack(app, 'Network', { env });
    const vpc = new Network(network, 'Network', {
      natGateways: 1,
      flowLogs: accessLogBucket(network, 'Logs'),
    }).vpc;
    stack = new JobAmiStack(app, 'JobAmi', { env, fleetName: 'ci', vpc, gitlabRunner: RUNNER });
    synth = new Synthesized(app);
    t = synth.template(stack);
  }, SYNTH_TIMEOUT_MS);
  afterAll(() => synth?.cleanup());

  it('ships the rendered component, versioned by its content', () => {
    const data = renderJobImageComponentYaml(optionsFrom(daemonConfig()));
    t.hasResourceProperties('AWS::ImageBuilder::Component', {
      Name: 'runner-fleet-ci-job',
      Platform: 'Linux',
      Version: contentVersion(data),
      Data: data,
    });
    // The stack's defaults are the daemon's: the manifest lands where doctor looks.
    expect(AMI_MANIFEST_PREFIX).toBe(daemonConfig().image.manifest_parameter_prefix);
  });

  it('has a recipe on the newest Amazon Linux 2023 with OS updates, then the component, encrypted', () => {
    t.hasResourceProperties('AWS::ImageBuilder::ImageRecipe', {
      ParentImage: 'arn:aws:imagebuilder:eu-west-1:aws:image/amazon-linux-2023-x86/x.x.x',
      Components: [
        { ComponentArn: 'arn:aws:imagebuilder:eu-west-1:aws:component/update-linux/x.x.x' },
        { ComponentArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^JobComponent'), 'Arn'] } },
      ],
      BlockDeviceMappings: [
        Match.objectLike({ Ebs: Match.objectLike({ Encrypted: true, VolumeType: 'gp3' }) }),
      ],
    });
  });

  it('builds in a private subnet with IMDSv2, no inbound, terminating failed instances', () => {
    t.hasResourceProperties('AWS::ImageBuilder::InfrastructureConfiguration', {
      TerminateInstanceOnFailure: true,
      InstanceMetadataOptions: { HttpTokens: 'required', HttpPutResponseHopLimit: 1 },
      SubnetId: Match.anyValue(),
      SecurityGroupIds: [Match.objectLike({ 'Fn::GetAtt': Match.anyValue() })],
    });
    t.hasResourceProperties('AWS::EC2::SecurityGroup', {
      GroupDescription: Match.stringLikeRegexp('no inbound'),
      SecurityGroupIngress: Match.absent(),
    });
  });

  it("gives the build instances only Image Builder's minimum plus writing manifests", () => {
    t.resourceCountIs('AWS::IAM::Role', 1);
    const role = Object.values(t.findResources('AWS::IAM::Role'))[0] as {
      Properties: Record<string, unknown>;
    };
    const managed = (role.Properties.ManagedPolicyArns as unknown[]).map(
      (a) => /policy\/([\w-]+)/.exec(JSON.stringify(a))?.[1],
    );
    expect(managed).toEqual(['EC2InstanceProfileForImageBuilder', 'AmazonSSMManagedInstanceCore']);
    expect(policyStatements(t)).toEqual([
      {
        Effect: 'Allow',
        Action: 'ssm:PutParameter',
        Resource: 'arn:aws:ssm:eu-west-1:222222222222:parameter/runner-fleet/ami/*',
      },
    ]);
    expect(synth.nagViolations(stack)).toEqual([]);
    for (const a of acknowledgements(stack)) expect(a.reason.length, a.id).toBeGreaterThan(30);
  });

  it('distributes by writing the new AMI id to the fleet parameter, on a schedule with tests', () => {
    t.hasResourceProperties('AWS::ImageBuilder::DistributionConfiguration', {
      Distributions: [
        Match.objectLike({
          Region: 'eu-west-1',
          SsmParameterConfigurations: [
            { ParameterName: jobAmiParameterName('ci'), DataType: 'aws:ec2:image' },
          ],
        }),
      ],
    });
    t.hasResourceProperties('AWS::ImageBuilder::ImagePipeline', {
      ImageRecipeArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^JobRecipe'), 'Arn'] },
      DistributionConfigurationArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Distribution'), 'Arn'] },
      ImageTestsConfiguration: { ImageTestsEnabled: true, TimeoutMinutes: 60 },
      Status: 'ENABLED',
      Schedule: {
        ScheduleExpression: Match.stringLikeRegexp('^cron\\('),
        PipelineExecutionStartCondition: 'EXPRESSION_MATCH_AND_DEPENDENCY_UPDATES_AVAILABLE',
      },
    });
  });

  it('bakes a first image at deploy (retained) and publishes its id before any fleet reads it', () => {
    t.hasResource('AWS::ImageBuilder::Image', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: Match.objectLike({
        ImageTestsConfiguration: { ImageTestsEnabled: true, TimeoutMinutes: 60 },
      }),
    });
    t.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/runner-fleet/ci/job-ami',
      Type: 'String',
      DataType: 'aws:ec2:image',
      Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Image'), 'ImageId'] },
    });
    expect(stack.parameterName).toBe('/runner-fleet/ci/job-ami');
  });
});
