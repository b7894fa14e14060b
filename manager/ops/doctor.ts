/**
 * `runner-fleet doctor`: checks, one by one, what a manager needs to run jobs and says for each
 * what is wrong and the one command or setting that fixes it. It launches nothing and changes
 * nothing: EC2 permissions are probed with DryRun, everything else with read-only calls.
 *
 * AMI contents are read from a manifest the image build publishes in SSM (`[image]
 * manifest_parameter_prefix`/<ami-id>, JSON `{"packages": {"git": "2.43.0", "git-lfs": "3.4.1",
 * "gitlab-runner": "17.11.0"}}`) rather than from AMI tags: tags cannot be read across accounts
 * for shared AMIs, and one JSON value keeps the versions together.
 */
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import {
  AutoScalingClient,
  type AutoScalingGroup,
  DescribeAutoScalingGroupsCommand,
} from '@aws-sdk/client-auto-scaling';
import {
  CreateFleetCommand,
  CreateTagsCommand,
  DescribeIamInstanceProfileAssociationsCommand,
  DescribeImagesCommand,
  DescribeInstanceStatusCommand,
  DescribeInstancesCommand,
  DescribeLaunchTemplateVersionsCommand,
  EC2Client,
  type LaunchTemplateVersion,
  RunInstancesCommand,
  TerminateInstancesCommand,
} from '@aws-sdk/client-ec2';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { parse } from 'smol-toml';
import type { Config } from '../config/schema.js';
import { request } from '../control/client.js';
import { readOperatorToken } from '../control/operator-token.js';
import type { StatusReport } from '../control/protocol.js';
import { profilesFromRules } from '../credentials/profiles.js';
import { jobCheckUrl } from '../fleet/job-check.js';
import { managerPolicyDocument } from '../providers/aws/iam-policy.js';
import { TAG } from '../providers/tags.js';
import {
  type AwsClientOverrides,
  type AwsConfig,
  awsErrorCode,
  awsErrorText,
  awsSection,
  clientConfig,
} from './aws.js';
import { verifyRunnerToken } from './gitlab-api.js';
import { describeSource, readRunnerToken, TokenError, tokenSource } from './runner-token.js';
import { DEFAULT_RUNNER_CONFIG_PATH } from './runner-toml.js';

export type CheckStatus = 'pass' | 'fail' | 'warn' | 'skip';

export interface CheckResult {
  id: string;
  status: CheckStatus;
  /** One line: what was found. */
  detail: string;
  /** One line: what to do, for fail and warn. */
  fix?: string;
}

export interface DoctorOptions {
  /** The loaded config, or the message of the ConfigError that stopped it. */
  config: Config | { error: string; source: string };
  aws?: AwsClientOverrides;
  /** gitlab-runner's config.toml on this host. */
  runnerConfigPath?: string;
  /** The manager's own `gitlab-runner --version` (first line), or undefined if not installed. */
  gitlabRunnerVersion?: () => Promise<string | undefined>;
  /** Called before each slow step, so a terminal shows what is being waited for. */
  progress?: (message: string) => void;
}

const IAM_FIX = 'grant it to the manager role: `runner-fleet iam-policy` prints the complete policy';

export async function runDoctor(o: DoctorOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const add = (r: CheckResult) => {
    results.push(r);
    return r;
  };
  const progress = o.progress ?? (() => {});

  if ('error' in o.config) {
    add({
      id: 'config',
      status: 'fail',
      detail: o.config.error,
      fix: 'fix the file: every key is explained in config.example.toml',
    });
    return results;
  }
  const config = o.config;
  add({
    id: 'config',
    status: 'pass',
    detail: `${config.source} is valid (provider ${config.provider}, fleet ${config.fleet_name})`,
  });

  add(checkStateDir(config));
  progress('asking the daemon on its control socket');
  const daemon = add(await checkSocket(config));
  add(await checkForeignInstances(config, daemon.status === 'pass'));
  add(checkRunnerEntry(config, o.runnerConfigPath ?? DEFAULT_RUNNER_CONFIG_PATH));
  add(checkJobChecks(config));

  const aws = awsSection(config);
  if (config.provider !== 'aws' || !aws) {
    const why = config.provider !== 'aws' ? `provider is "${config.provider}"` : 'no [aws] section';
    for (const id of ['aws identity', 'launch template', 'permissions', 'ami'])
      add({ id, status: 'skip', detail: `${why}: nothing to check on AWS` });
  } else {
    await awsChecks(config, aws, o, add, progress);
  }

  add(await checkCacheBucket(config, o.aws ?? {}, progress));
  for (const r of await checkRunnerToken(config, o.aws ?? {}, progress)) add(r);
  return results;
}

function checkStateDir(config: Config): CheckResult {
  try {
    const st = statSync(config.state_dir);
    if (!st.isDirectory())
      return {
        id: 'state directory',
        status: 'fail',
        detail: `${config.state_dir} is not a directory`,
        fix: 'remove it and run `runner-fleet install`',
      };
    // Search permission alone (0711, set by a root daemon so local jobs reach their trees) lists
    // nothing and opens none of the 0600 files; read or write for others would.
    if ((st.mode & 0o066) !== 0)
      return {
        id: 'state directory',
        status: 'fail',
        detail: `${config.state_dir} has mode ${(st.mode & 0o777).toString(8)}: others could reach the control socket and SSH keys`,
        fix: `chmod 0700 ${config.state_dir}`,
      };
    return {
      id: 'state directory',
      status: 'pass',
      detail: `${config.state_dir} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`,
    };
  } catch {
    return {
      id: 'state directory',
      status: 'fail',
      detail: `${config.state_dir} does not exist`,
      fix: '`runner-fleet install` creates it (systemd also does, through StateDirectory=, at start)',
    };
  }
}

/** Leases whose cleanup never ran end early only if GitLab can be asked: the configured GitLab. */
function checkJobChecks(config: Config): CheckResult {
  const url = jobCheckUrl(config);
  if (!url)
    return {
      id: 'job checks',
      status: 'warn',
      detail:
        'off: no [gitlab] url nor [credentials] gitlab_url, so a lease whose cleanup never ran ends only at max_job_lifetime',
      fix: "set [gitlab] url to the GitLab root URL (never the job's CI_SERVER_URL, which the job author sets)",
    };
  return {
    id: 'job checks',
    status: 'pass',
    detail: `leases' jobs are checked at ${url}/api/v4/job every ${Math.round(config.pool.job_check_interval / 1000)} s`,
  };
}

async function checkSocket(config: Config): Promise<CheckResult> {
  try {
    await request(config.socket, { op: 'ping' }, { signal: AbortSignal.timeout(3000) });
    return { id: 'daemon', status: 'pass', detail: `answers on ${config.socket}` };
  } catch (error) {
    return {
      id: 'daemon',
      status: 'fail',
      detail: (error as Error).message.replace(/: is it running\?.*$/, ''),
      // The embedded default is what `npm start` runs: no unit is installed for it.
      fix:
        config.source === 'embedded default'
          ? 'start it: `runner-fleet daemon` (or `npm start` in a checkout) runs the embedded default; for a service, `runner-fleet install` first, then systemctl enable --now runner-fleet'
          : 'systemctl enable --now runner-fleet; if it does not stay up: journalctl -u runner-fleet -e -o cat',
    };
  }
}

/** Instances with this manager's tags that it did not launch: the daemon never touches them. */
async function checkForeignInstances(config: Config, daemonUp: boolean): Promise<CheckResult> {
  const id = 'foreign instances';
  if (!daemonUp) return { id, status: 'skip', detail: 'the daemon does not answer' };
  let report: StatusReport;
  try {
    report = await request<StatusReport>(
      config.socket,
      { op: 'status', operatorToken: readOperatorToken(config.socket) },
      { signal: AbortSignal.timeout(5000) },
    );
  } catch (error) {
    return { id, status: 'skip', detail: `status: ${(error as Error).message}` };
  }
  const foreign = report.foreign ?? [];
  if (foreign.length === 0)
    return { id, status: 'pass', detail: "every instance with this manager's tags was launched by it" };
  return {
    id,
    status: 'warn',
    detail: `${foreign.length} instance(s) carry this manager's tags but were not launched by it: ${foreign.map((f) => `${f.id} (${f.why})`).join('; ')}`,
    fix: `runner-fleet never uses nor terminates them. Find who tagged them (CloudTrail CreateTags/RunInstances with ${TAG.fleet}), terminate them yourself if they are not wanted, and deny runner-fleet:* tag writes to other principals (docs/security.md, "Provenance")`,
  };
}

function checkRunnerEntry(config: Config, path: string): CheckResult {
  // --write builds the entry from a config file on the manager; the embedded default has none,
  // so there the entry is printed and pasted.
  const fix =
    config.source === 'embedded default'
      ? "paste what `runner-fleet runner-config` prints into gitlab-runner's config.toml (set url and token)"
      : 'runner-fleet runner-config --write';
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return {
      id: 'runner entry',
      status: code === 'EACCES' ? 'skip' : 'fail',
      detail: code === 'EACCES' ? `${path} is not readable by this user` : `${path} does not exist (${code})`,
      fix: code === 'EACCES' ? 'run doctor as root to check it' : fix,
    };
  }
  let doc: { runners?: Array<Record<string, unknown>> };
  try {
    doc = parse(text) as typeof doc;
  } catch {
    return {
      id: 'runner entry',
      status: 'fail',
      detail: `${path} is not valid TOML`,
      fix: 'gitlab-runner cannot read it either: fix the syntax',
    };
  }
  const name = `runner-fleet ${config.fleet_name}`;
  const entry = doc.runners?.find((r) => r.name === name);
  if (!entry)
    return {
      id: 'runner entry',
      status: 'fail',
      detail: `${path} has no [[runners]] entry named "${name}"`,
      fix,
    };
  const custom = (entry.custom ?? {}) as Record<string, unknown>;
  const args = Array.isArray(custom.run_args) ? (custom.run_args as unknown[]) : [];
  const socketAt = args.indexOf('--socket');
  if (socketAt >= 0 && args[socketAt + 1] !== config.socket)
    return {
      id: 'runner entry',
      status: 'fail',
      detail: `the entry's hooks use socket ${String(args[socketAt + 1])}, the daemon ${config.socket}`,
      fix,
    };
  for (const key of ['run_exec', 'prepare_exec']) {
    const exec = custom[key];
    if (typeof exec !== 'string' || !exists(exec))
      return {
        id: 'runner entry',
        status: 'fail',
        detail: `${key} ${String(exec)} does not exist (node moved?)`,
        fix,
      };
  }
  const hookCli = args[0];
  if (typeof hookCli === 'string' && !exists(hookCli))
    return {
      id: 'runner entry',
      status: 'fail',
      detail: `hook script ${hookCli} does not exist (package moved?)`,
      fix,
    };
  if (entry.token === 'glrt-REPLACE-ME' || typeof entry.token !== 'string')
    return {
      id: 'runner entry',
      status: 'fail',
      detail: 'the entry has no runner token (a pasted placeholder)',
      fix,
    };
  return {
    id: 'runner entry',
    status: 'pass',
    detail: `${path} has "${name}" with hooks and socket of this install`,
  };
}

const exists = (p: string) => {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
};

interface TemplateRef {
  id?: string;
  name?: string;
  version: string;
}

/**
 * A rule naming an instance profile of another account fails every job it matches, and only at
 * acquire time: EC2 attaches only profiles of the instance's own account. Say so before a job does.
 */
export function checkRuleProfiles(config: Config, partition: string, account: string): CheckResult {
  const { foreign, instanceProfileArns } = profilesFromRules(config.credentials, partition, account);
  if (foreign.length === 0)
    return {
      id: 'instance profiles',
      status: 'pass',
      detail: `${instanceProfileArns.length} profile(s) named by [credentials], all in account ${account}`,
    };
  return {
    id: 'instance profiles',
    status: 'fail',
    detail: `${foreign.join(', ')}: another account's profile; EC2 attaches only profiles of account ${account}`,
    fix: 'name a profile of this account; to act in another account, let the job role assume a role there (docs/security.md, "IAM from the rules, and other accounts")',
  };
}

async function awsChecks(
  config: Config,
  aws: AwsConfig,
  o: DoctorOptions,
  add: (r: CheckResult) => CheckResult,
  progress: (m: string) => void,
): Promise<void> {
  const cc = clientConfig(config, o.aws ?? {}, aws.region);
  const sts = new STSClient(cc);
  const ec2 = new EC2Client(cc);
  const asg = new AutoScalingClient(cc);
  const ssm = new SSMClient(cc);
  try {
    progress('asking AWS who we are (sts:GetCallerIdentity)');
    let account: string | undefined;
    try {
      const me = await sts.send(new GetCallerIdentityCommand({}));
      account = me.Account;
      add({
        id: 'aws identity',
        status: 'pass',
        detail: `${me.Arn} in account ${me.Account}, region ${aws.region}`,
      });
      if (me.Account) add(checkRuleProfiles(config, me.Arn?.split(':')[1] || 'aws', me.Account));
    } catch (error) {
      add({
        id: 'aws identity',
        status: 'fail',
        detail: `no usable AWS credentials: ${awsErrorText(error)}`,
        fix: 'attach the manager instance profile to this instance (or set AWS_PROFILE for a manual run)',
      });
      for (const id of ['launch template', 'permissions', 'ami'])
        add({ id, status: 'skip', detail: 'needs AWS credentials' });
      return;
    }

    // Group (asg mode) and its launch template.
    let template: TemplateRef | undefined;
    if (aws.mode === 'asg') {
      progress(`reading Auto Scaling group ${aws.asg_name}`);
      const group = await describeGroup(asg, aws.asg_name ?? '').catch((error: unknown) => error as Error);
      if (group instanceof Error || group === undefined) {
        add({
          id: 'auto scaling group',
          status: 'fail',
          detail: group
            ? `cannot read group ${aws.asg_name}: ${awsErrorText(group)}`
            : `group ${aws.asg_name} does not exist in ${aws.region}`,
          fix: group
            ? `allow autoscaling:DescribeAutoScalingGroups; ${IAM_FIX}`
            : 'check [aws] asg_name and region (the fleet stack prints the name)',
        });
      } else {
        add({
          id: 'auto scaling group',
          status: 'pass',
          detail: `${group.AutoScalingGroupName}: desired ${group.DesiredCapacity}, max ${group.MaxSize}`,
        });
        // Above MaxSize, SetDesiredCapacity fails: jobs would wait for instances that never come.
        const maxSize = group.MaxSize ?? 0;
        const wanted = config.pool.max_instances;
        add(
          maxSize >= wanted
            ? {
                id: 'group size',
                status: 'pass',
                detail: `MaxSize ${maxSize} ≥ [pool] max_instances ${wanted}`,
              }
            : {
                id: 'group size',
                status: 'fail',
                detail: `MaxSize ${maxSize} < [pool] max_instances ${wanted}: the fleet could never launch more than ${maxSize} instances, and jobs beyond that would wait`,
                fix: `aws autoscaling update-auto-scaling-group --auto-scaling-group-name ${group.AutoScalingGroupName} --max-size ${wanted} (or lower [pool] max_instances)`,
              },
        );
        const suspended = (group.SuspendedProcesses ?? []).some((p) => p.ProcessName === 'AZRebalance');
        add(
          suspended
            ? {
                id: 'az rebalance',
                status: 'pass',
                detail:
                  'AZRebalance is suspended: Auto Scaling will not terminate busy instances to even out zones',
              }
            : {
                id: 'az rebalance',
                status: 'fail',
                detail:
                  'AZRebalance is active: Auto Scaling may terminate an instance in the middle of a job to balance zones',
                fix: `aws autoscaling suspend-processes --auto-scaling-group-name ${group.AutoScalingGroupName} --scaling-processes AZRebalance`,
              },
        );
        const spec =
          group.LaunchTemplate ?? group.MixedInstancesPolicy?.LaunchTemplate?.LaunchTemplateSpecification;
        if (spec)
          template = {
            id: spec.LaunchTemplateId,
            name: spec.LaunchTemplateName,
            version: spec.Version ?? '$Default',
          };
      }
    } else if (aws.launch_template) {
      const isId = /^lt-[0-9a-f]+$/.test(aws.launch_template);
      template = {
        ...(isId ? { id: aws.launch_template } : { name: aws.launch_template }),
        version: aws.launch_template_version,
      };
    }

    let imageId: string | undefined;
    let templateId: string | undefined;
    if (!template) {
      add({
        id: 'launch template',
        status: 'fail',
        detail: 'no launch template to check',
        fix: aws.mode === 'asg' ? 'give the group a launch template' : 'set [aws] launch_template',
      });
    } else {
      progress(`reading launch template ${template.name ?? template.id} version ${template.version}`);
      const r = await checkTemplate(ec2, template);
      for (const c of r.checks) add(c);
      imageId = r.imageId;
      templateId = r.templateId;
    }

    progress('probing the manager permissions with DryRun calls');
    for (const c of await checkPermissions(ec2, config, aws, account ?? '000000000000', templateId)) add(c);

    if (imageId) {
      progress(`reading the AMI manifest of ${imageId}`);
      const ami = await checkAmi(ssm, config, imageId, o.gitlabRunnerVersion ?? localGitlabRunnerVersion);
      const { manifest, ...amiResult } = ami;
      add(amiResult);
      if (manifest) {
        add(checkAmiDocker(imageId, manifest));
        add(checkAmiDirs(config, aws, imageId, manifest));
      } else add({ id: 'ami directories', status: 'skip', detail: 'no usable AMI manifest' });
    } else {
      add({ id: 'ami', status: 'skip', detail: 'no image id found in the launch template' });
      add({ id: 'ami directories', status: 'skip', detail: 'no image id found in the launch template' });
    }
  } finally {
    sts.destroy();
    ec2.destroy();
    asg.destroy();
    ssm.destroy();
  }
}

async function describeGroup(asg: AutoScalingClient, name: string): Promise<AutoScalingGroup | undefined> {
  const out = await asg.send(new DescribeAutoScalingGroupsCommand({ AutoScalingGroupNames: [name] }));
  return out.AutoScalingGroups?.[0];
}

async function checkTemplate(
  ec2: EC2Client,
  t: TemplateRef,
): Promise<{ checks: CheckResult[]; imageId?: string; templateId?: string }> {
  const label = `${t.name ?? t.id} (${t.version})`;
  let version: LaunchTemplateVersion | undefined;
  try {
    const out = await ec2.send(
      new DescribeLaunchTemplateVersionsCommand({
        ...(t.id ? { LaunchTemplateId: t.id } : { LaunchTemplateName: t.name }),
        Versions: [t.version],
      }),
    );
    version = out.LaunchTemplateVersions?.[0];
  } catch (error) {
    const code = awsErrorCode(error);
    return {
      checks: [
        {
          id: 'launch template',
          status: 'fail',
          detail: `cannot read launch template ${label}: ${awsErrorText(error)}`,
          fix:
            code === 'UnauthorizedOperation'
              ? `allow ec2:DescribeLaunchTemplateVersions; ${IAM_FIX}`
              : 'check [aws] launch_template (id lt-… or name) and launch_template_version',
        },
      ],
    };
  }
  const d = version?.LaunchTemplateData;
  if (!version || !d)
    return {
      checks: [
        {
          id: 'launch template',
          status: 'fail',
          detail: `launch template ${label} not found`,
          fix: 'check [aws] launch_template',
        },
      ],
    };
  const checks: CheckResult[] = [
    {
      id: 'launch template',
      status: 'pass',
      detail: `${version.LaunchTemplateName} version ${version.VersionNumber}, image ${d.ImageId ?? '(none)'}`,
    },
  ];
  const versionFix =
    'create a new template version with it and make it the default (the fleet stack sets both)';
  checks.push(
    d.MetadataOptions?.HttpTokens === 'required'
      ? { id: 'imdsv2', status: 'pass', detail: 'HttpTokens = required' }
      : {
          id: 'imdsv2',
          status: 'fail',
          detail: `HttpTokens = ${d.MetadataOptions?.HttpTokens ?? 'optional (unset)'}: a job could read the instance role's credentials through IMDSv1 (SSRF)`,
          fix: `MetadataOptions.HttpTokens = "required": ${versionFix}`,
        },
  );
  checks.push(
    d.InstanceInitiatedShutdownBehavior === 'terminate'
      ? {
          id: 'shutdown behavior',
          status: 'pass',
          detail: 'InstanceInitiatedShutdownBehavior = terminate (dead-man switch works)',
        }
      : {
          id: 'shutdown behavior',
          status: 'fail',
          detail: `InstanceInitiatedShutdownBehavior = ${d.InstanceInitiatedShutdownBehavior ?? 'stop (unset)'}: an instance whose manager is gone stops instead of terminating, and keeps its disk`,
          fix: `InstanceInitiatedShutdownBehavior = "terminate": ${versionFix}`,
        },
  );
  return { checks, imageId: d.ImageId, templateId: version.LaunchTemplateId };
}

/**
 * One check per EC2 action of the manager's policy (from `managerPolicyDocument`, the same source
 * the CDK stack and `iam-policy` use), probed with DryRun: AWS answers DryRunOperation when the
 * call would be allowed and UnauthorizedOperation when not. Actions AWS cannot dry-run are listed
 * as skipped, so the operator sees the whole policy.
 */
async function checkPermissions(
  ec2: EC2Client,
  config: Config,
  aws: AwsConfig & { subnets?: string[] },
  account: string,
  templateId: string | undefined,
): Promise<CheckResult[]> {
  const policy = managerPolicyDocument({
    region: aws.region,
    account,
    fleetName: config.fleet_name,
    mode: aws.mode,
    autoScalingGroupName: aws.asg_name ?? (aws.mode === 'asg' ? 'unset' : undefined),
    instanceProfileArns: [],
    jobRoleArns: [],
    ...(templateId ? { launchTemplateId: templateId } : {}),
    ...(config.gitlab.runner_token_parameter
      ? { runnerTokenParameterName: config.gitlab.runner_token_parameter }
      : {}),
    ...(config.cache.bucket ? { cacheBucketName: config.cache.bucket } : {}),
    amiManifestParameterPrefix: config.image.manifest_parameter_prefix,
  });
  const actions = [...new Set(policy.Statement.flatMap((s) => s.Action))];
  // An instance of this fleet, for the tag-scoped calls: on any other instance a correct policy denies.
  let ownInstance: string | undefined;
  try {
    const out = await ec2.send(
      new DescribeInstancesCommand({
        Filters: [
          { Name: `tag:${TAG.fleet}`, Values: [config.fleet_name] },
          { Name: 'instance-state-name', Values: ['pending', 'running'] },
        ],
        MaxResults: 5,
      }),
    );
    ownInstance = out.Reservations?.flatMap((r) => r.Instances ?? [])[0]?.InstanceId;
  } catch {
    // The DescribeInstances probe below reports the reason.
  }
  const launchTemplate = templateId
    ? { LaunchTemplateId: templateId, Version: aws.launch_template_version }
    : undefined;
  const fleetTag = [{ Key: TAG.fleet, Value: config.fleet_name }];
  const probes: Record<string, (() => Promise<unknown>) | string> = {
    'ec2:DescribeInstances': () => ec2.send(new DescribeInstancesCommand({ DryRun: true, MaxResults: 5 })),
    'ec2:DescribeInstanceStatus': () =>
      ec2.send(new DescribeInstanceStatusCommand({ DryRun: true, MaxResults: 5 })),
    'ec2:DescribeLaunchTemplateVersions': () =>
      templateId
        ? ec2.send(new DescribeLaunchTemplateVersionsCommand({ DryRun: true, LaunchTemplateId: templateId }))
        : Promise.reject(new Error('no launch template')),
    'ec2:DescribeImages': () =>
      ec2.send(new DescribeImagesCommand({ DryRun: true, Owners: ['self'], MaxResults: 5 })),
    'ec2:DescribeIamInstanceProfileAssociations': () =>
      ec2.send(new DescribeIamInstanceProfileAssociationsCommand({ MaxResults: 5 })),
    'ec2:RunInstances': launchTemplate
      ? () =>
          ec2.send(
            new RunInstancesCommand({
              DryRun: true,
              MinCount: 1,
              MaxCount: 1,
              LaunchTemplate: launchTemplate,
              ...(aws.subnets?.[0] ? { SubnetId: aws.subnets[0] } : {}),
              TagSpecifications: [{ ResourceType: 'instance', Tags: fleetTag }],
            }),
          )
      : 'no launch template to launch from',
    'ec2:CreateFleet': launchTemplate
      ? () =>
          ec2.send(
            new CreateFleetCommand({
              DryRun: true,
              Type: 'instant',
              LaunchTemplateConfigs: [{ LaunchTemplateSpecification: launchTemplate }],
              TargetCapacitySpecification: { TotalTargetCapacity: 1, DefaultTargetCapacityType: 'on-demand' },
              TagSpecifications: [{ ResourceType: 'instance', Tags: fleetTag }],
            }),
          )
      : 'no launch template to launch from',
    'ec2:TerminateInstances': ownInstance
      ? () => ec2.send(new TerminateInstancesCommand({ DryRun: true, InstanceIds: [ownInstance as string] }))
      : 'no running instance of this fleet to try it on (tag-scoped); checked again once one runs',
    'ec2:CreateTags': ownInstance
      ? () =>
          ec2.send(
            new CreateTagsCommand({
              DryRun: true,
              Resources: [ownInstance as string],
              Tags: [{ Key: TAG.state, Value: 'idle' }],
            }),
          )
      : 'no running instance of this fleet to try it on (tag-scoped); checked again once one runs',
  };
  const results: CheckResult[] = [];
  for (const action of actions) {
    const probe = probes[action];
    const id = `permission ${action}`;
    if (action === 'sts:GetCallerIdentity') continue; // the identity check above is this call
    if (action === 'ssm:GetParameter') {
      results.push({ id, status: 'skip', detail: 'tested by reading the runner token below' });
      continue;
    }
    if (action === 's3:ListBucket') {
      results.push({ id, status: 'skip', detail: 'tested by HeadBucket on the cache bucket below' });
      continue;
    }
    if (action === 'autoscaling:DescribeAutoScalingGroups') {
      results.push({ id, status: 'skip', detail: 'tested by reading the group above' });
      continue;
    }
    if (probe === undefined) {
      results.push({
        id,
        status: 'skip',
        detail: 'AWS has no dry run for it; compare the role with `runner-fleet iam-policy`',
      });
      continue;
    }
    if (typeof probe === 'string') {
      results.push({ id, status: 'skip', detail: probe });
      continue;
    }
    try {
      await probe();
      results.push({ id, status: 'pass', detail: 'allowed' });
    } catch (error) {
      const code = awsErrorCode(error);
      if (code === 'DryRunOperation') results.push({ id, status: 'pass', detail: 'allowed (dry run)' });
      else if (
        code === 'UnauthorizedOperation' ||
        code === 'AccessDenied' ||
        code === 'AccessDeniedException'
      )
        results.push({
          id,
          status: 'fail',
          detail: 'denied for the manager role',
          fix: `add ${action}; ${IAM_FIX}`,
        });
      else results.push({ id, status: 'warn', detail: `could not be tested: ${awsErrorText(error)}` });
    }
  }
  return results;
}

export interface AmiManifest {
  packages?: Record<string, unknown>;
  /** The login user the image build prepared (optional). */
  ssh_user?: unknown;
  /** Directories the image build created writable by ssh_user (optional). */
  writable_dirs?: unknown;
}

export function localGitlabRunnerVersion(): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile('gitlab-runner', ['--version'], { timeout: 10_000 }, (error, stdout) => {
      if (error) return resolve(undefined);
      resolve(/Version:\s*(\S+)/.exec(stdout)?.[1] ?? stdout.split('\n')[0]?.trim());
    });
  });
}

const major = (v: string) => /^v?(\d+)\./.exec(v)?.[1];

/**
 * Jobs with `image:` run in Docker on the instance (docs/containers.md): the manifest must name
 * docker; the ECR credential helper is needed only for images from ECR.
 */
export function checkAmiDocker(imageId: string, manifest: AmiManifest): CheckResult {
  const packages = manifest.packages ?? {};
  const docker = packages.docker;
  if (typeof docker !== 'string' || docker === '')
    return {
      id: 'ami docker',
      status: 'fail',
      detail: `${imageId} has no docker in its manifest: jobs with image: or services: would end as system failures`,
      fix: 'bake Docker (and docker-credential-ecr-login for ECR images) into the AMI and add "docker" to the manifest\'s packages',
    };
  const ecr = packages['docker-credential-ecr-login'];
  return {
    id: 'ami docker',
    status: 'pass',
    detail: `${imageId}: docker ${docker}${typeof ecr === 'string' && ecr ? `, docker-credential-ecr-login ${ecr}` : ' (no docker-credential-ecr-login: ECR images need credentials in DOCKER_AUTH_CONFIG)'}`,
  };
}

async function checkAmi(
  ssm: SSMClient,
  config: Config,
  imageId: string,
  managerVersion: () => Promise<string | undefined>,
): Promise<CheckResult & { manifest?: AmiManifest }> {
  const name = `${config.image.manifest_parameter_prefix.replace(/\/+$/, '')}/${imageId}`;
  const publish = `publish it from the image build: aws ssm put-parameter --name ${name} --type String --value '{"packages":{"git":"…","git-lfs":"…","gitlab-runner":"…"}}'`;
  let manifest: AmiManifest;
  try {
    const out = await ssm.send(new GetParameterCommand({ Name: name }));
    manifest = parseAmiManifest(out.Parameter?.Value ?? '');
  } catch (error) {
    const code = awsErrorCode(error);
    if (code === 'ParameterNotFound')
      return {
        id: 'ami',
        status: 'fail',
        detail: `no package manifest for ${imageId} at SSM ${name}: cannot tell whether git, git-lfs and gitlab-runner are on it`,
        fix: publish,
      };
    if (code === 'AccessDeniedException')
      return {
        id: 'ami',
        status: 'fail',
        detail: `not allowed to read SSM ${name}`,
        fix: `allow ssm:GetParameter on ${config.image.manifest_parameter_prefix}/* or run doctor with your own credentials`,
      };
    if (error instanceof SyntaxError)
      return { id: 'ami', status: 'fail', detail: `SSM ${name} is not JSON`, fix: publish };
    return {
      id: 'ami',
      status: 'fail',
      detail: `cannot read SSM ${name}: ${awsErrorText(error)}`,
      fix: publish,
    };
  }
  const result = checkAmiPackages(imageId, manifest, await managerVersion());
  return result.status === 'pass' ? { ...result, manifest } : result;
}

/**
 * The manifest as doctor reads it from SSM (the image pipeline's test phase writes it:
 * infra/ami/job-image-component.ts). Throws SyntaxError when the text is not a JSON object.
 */
export function parseAmiManifest(text: string): AmiManifest {
  const value: unknown = JSON.parse(text);
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw new SyntaxError('the AMI manifest is not a JSON object');
  return value as AmiManifest;
}

/** git, git-lfs and gitlab-runner named, gitlab-runner of the manager's major version (when known). */
export function checkAmiPackages(
  imageId: string,
  manifest: AmiManifest,
  here: string | undefined,
): CheckResult {
  const packages = manifest.packages ?? {};
  const missing = ['git', 'git-lfs', 'gitlab-runner'].filter(
    (p) => typeof packages[p] !== 'string' || packages[p] === '',
  );
  if (missing.length > 0)
    return {
      id: 'ami',
      status: 'fail',
      detail: `${imageId} lacks ${missing.join(', ')}: ${missing.includes('gitlab-runner') ? 'caches and artifacts would be skipped' : 'jobs cannot fetch their sources'}`,
      fix: 'bake them into the AMI (recommended) or set [aws] install_tools = true',
    };
  const onImage = packages['gitlab-runner'] as string;
  if (here && major(here) && major(onImage) && major(here) !== major(onImage))
    return {
      id: 'ami',
      status: 'fail',
      detail: `gitlab-runner ${onImage} on ${imageId}, ${here} on the manager: the helper must match the runner's major version`,
      fix: `rebuild the AMI with gitlab-runner ${major(here)}.x`,
    };
  return {
    id: 'ami',
    status: 'pass',
    detail: `${imageId}: git ${packages.git}, git-lfs ${packages['git-lfs']}, gitlab-runner ${onImage}${here ? ` (manager ${here})` : ''}`,
  };
}

/**
 * builds_dir and cache_dir must exist on the image and be writable by ssh_user: every stage runs
 * there as that user, and nothing at boot creates them. Checked against what the image build
 * published in the manifest (`ssh_user`, `writable_dirs`), since doctor launches nothing.
 */
export function checkAmiDirs(
  config: Config,
  aws: AwsConfig,
  imageId: string,
  manifest: AmiManifest,
): CheckResult {
  const needed = [config.executor.builds_dir, config.executor.cache_dir];
  const publish = `have the image build create ${needed.join(' and ')} owned by ${aws.ssh_user} and add "ssh_user":"${aws.ssh_user}","writable_dirs":${JSON.stringify(needed)} to the manifest`;
  const dirs = Array.isArray(manifest.writable_dirs)
    ? manifest.writable_dirs.filter((d): d is string => typeof d === 'string')
    : undefined;
  if (dirs === undefined || typeof manifest.ssh_user !== 'string')
    return {
      id: 'ami directories',
      status: 'warn',
      detail: `the manifest of ${imageId} does not say whether ${needed.join(' and ')} exist writable by ${aws.ssh_user}`,
      fix: publish,
    };
  if (manifest.ssh_user !== aws.ssh_user)
    return {
      id: 'ami directories',
      status: 'fail',
      detail: `${imageId} prepared its directories for user ${manifest.ssh_user}, but [aws] ssh_user is ${aws.ssh_user}`,
      fix: `set [aws] ssh_user = "${manifest.ssh_user}" or rebuild the image for ${aws.ssh_user}`,
    };
  const covered = (path: string) =>
    dirs.some((d) => path === d || path.startsWith(`${d.replace(/\/+$/, '')}/`));
  const missing = needed.filter((path) => !covered(path));
  if (missing.length > 0)
    return {
      id: 'ami directories',
      status: 'fail',
      detail: `${missing.join(' and ')} not writable by ${aws.ssh_user} on ${imageId} (manifest lists ${dirs.join(', ') || 'none'}): every stage would fail`,
      fix: publish,
    };
  return {
    id: 'ami directories',
    status: 'pass',
    detail: `${needed.join(' and ')} writable by ${aws.ssh_user} on ${imageId}`,
  };
}

async function checkCacheBucket(
  config: Config,
  overrides: AwsClientOverrides,
  progress: (m: string) => void,
): Promise<CheckResult> {
  const bucket = config.cache.bucket;
  if (!bucket)
    return {
      id: 'cache bucket',
      status: 'skip',
      detail: 'no [cache] bucket: jobs run without a distributed cache',
    };
  const region = config.cache.region ?? awsSection(config)?.region;
  if (!region)
    return {
      id: 'cache bucket',
      status: 'fail',
      detail: 'the cache bucket has no region',
      fix: 'set [cache] region (or [aws] region)',
    };
  progress(`checking cache bucket ${bucket} (s3:HeadBucket)`);
  const s3 = new S3Client({ ...clientConfig(config, overrides, region), forcePathStyle: true });
  try {
    await s3.send(new HeadBucketCommand({ Bucket: bucket }));
    return { id: 'cache bucket', status: 'pass', detail: `s3://${bucket} reachable in ${region}` };
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 404)
      return {
        id: 'cache bucket',
        status: 'fail',
        detail: `s3://${bucket} does not exist`,
        fix: 'check [cache] bucket (the fleet stack outputs it) or create the bucket',
      };
    if (status === 403)
      return {
        id: 'cache bucket',
        status: 'fail',
        detail: `no access to s3://${bucket}`,
        fix: `allow s3:ListBucket and object access on it; ${IAM_FIX}`,
      };
    if (status === 301)
      return {
        id: 'cache bucket',
        status: 'fail',
        detail: `s3://${bucket} is in another region than ${region}`,
        fix: "set [cache] region to the bucket's region",
      };
    return {
      id: 'cache bucket',
      status: 'fail',
      detail: `cannot reach s3://${bucket}: ${awsErrorText(error)}`,
      fix: 'check network access to S3 (VPC endpoint or NAT)',
    };
  } finally {
    s3.destroy();
  }
}

async function checkRunnerToken(
  config: Config,
  overrides: AwsClientOverrides,
  progress: (m: string) => void,
): Promise<CheckResult[]> {
  const source = tokenSource(config);
  if (!source)
    return [
      {
        id: 'runner token',
        status: 'fail',
        detail: 'no runner token source configured',
        fix: 'set [gitlab] runner_token_parameter (SSM SecureString) or runner_token_file, then `runner-fleet register`',
      },
    ];
  progress(`reading the runner token from the ${describeSource(source)}`);
  let token: string;
  try {
    token = await readRunnerToken(config, overrides);
  } catch (error) {
    if (!(error instanceof TokenError)) throw error;
    return [
      {
        id: 'runner token',
        status: 'fail',
        detail: error.message,
        fix: 'runner-fleet register --gitlab-url URL --runner-type … < pat.txt',
      },
    ];
  }
  const results: CheckResult[] = [
    { id: 'runner token', status: 'pass', detail: `read from the ${describeSource(source)}` },
  ];
  if (!config.gitlab.url) {
    results.push({
      id: 'gitlab accepts token',
      status: 'fail',
      detail: 'no [gitlab] url',
      fix: 'set [gitlab] url to the GitLab root URL',
    });
    return results;
  }
  progress(`asking GitLab at ${config.gitlab.url} whether it accepts the token`);
  try {
    const v = await verifyRunnerToken(config.gitlab.url, token);
    results.push(
      v.ok
        ? {
            id: 'gitlab accepts token',
            status: 'pass',
            detail: `${config.gitlab.url} accepts it${v.id !== undefined ? ` (runner ${v.id})` : ''}${v.tokenExpiresAt ? `, expires ${v.tokenExpiresAt}` : ''}`,
          }
        : {
            id: 'gitlab accepts token',
            status: 'fail',
            detail: v.reason ?? 'rejected',
            fix: 'create a new runner with `runner-fleet register`, then `runner-fleet runner-config --write`',
          },
    );
  } catch (error) {
    results.push({
      id: 'gitlab accepts token',
      status: 'fail',
      detail: (error as Error).message,
      fix: 'check [gitlab] url and that this host can reach GitLab (security group, proxy)',
    });
  }
  return results;
}

export function renderReport(results: CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.id.length));
  const lines: string[] = [];
  for (const r of results) {
    lines.push(`${r.status.toUpperCase().padEnd(4)}  ${r.id.padEnd(width)}  ${r.detail}`);
    if (r.fix && (r.status === 'fail' || r.status === 'warn'))
      lines.push(`${' '.repeat(width + 8)}fix: ${r.fix}`);
  }
  const failed = results.filter((r) => r.status === 'fail').length;
  lines.push('', failed === 0 ? 'all checks passed' : `${failed} check(s) failed`);
  return `${lines.join('\n')}\n`;
}
