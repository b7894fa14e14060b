/**
 * `runner-fleet iam-policy`: prints the manager's IAM policy (the same document the CDK stack
 * attaches, from manager/providers/aws/iam-policy.ts) filled in from the config.
 */

import { profilesFromRules } from '../credentials/profiles.js';
import { managerPolicyDocument } from '../providers/aws/iam-policy.js';
import { loadConfigOrReport } from './load-config.js';

export interface IamPolicyOptions {
  readonly config: string | undefined;
  /** 12-digit account id; asked from STS (GetCallerIdentity) when absent. */
  readonly account: string | undefined;
  readonly partition: string | undefined;
  /** Comma-separated instance profile ARNs jobs may be switched to. */
  readonly instanceProfiles: string | undefined;
  /** Comma-separated role ARNs inside those profiles (iam:PassRole). */
  readonly jobRoles: string | undefined;
  readonly launchTemplateId: string | undefined;
}

const list = (value: string | undefined) =>
  (value ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

export async function iamPolicyCommand(options: IamPolicyOptions): Promise<number> {
  const config = loadConfigOrReport(options.config);
  if (typeof config === 'number') return config;
  const aws = config.aws;
  if (!aws) {
    process.stderr.write(
      'runner-fleet iam-policy: the config has no [aws] section (see config.example.toml)\n',
    );
    return 78;
  }
  let account = options.account;
  if (account !== undefined && !/^\d{12}$/.test(account)) {
    process.stderr.write('runner-fleet iam-policy: --account must be a 12-digit AWS account id\n');
    return 64;
  }
  if (!account) {
    try {
      const { callerAccount } = await import('../providers/aws/account.js');
      account = await callerAccount(aws);
    } catch (error) {
      process.stderr.write(
        `runner-fleet iam-policy: cannot find the account id (${(error as Error).message}); pass --account\n`,
      );
      return 1;
    }
  }
  const profiles = list(options.instanceProfiles);
  if (aws.instance_profile.startsWith('arn:') && !profiles.includes(aws.instance_profile))
    profiles.push(aws.instance_profile);
  // Every profile the credential rules name, so that a rule never names a profile the manager
  // cannot attach.
  const fromRules = profilesFromRules(config.credentials, options.partition ?? 'aws', account);
  for (const arn of fromRules.instanceProfileArns) if (!profiles.includes(arn)) profiles.push(arn);
  const jobRoles = list(options.jobRoles);
  for (const arn of fromRules.roleArns) if (!jobRoles.includes(arn)) jobRoles.push(arn);
  for (const arn of fromRules.foreign)
    process.stderr.write(
      `runner-fleet iam-policy: warning: ${arn} is in another account; EC2 attaches only profiles of the instance's account (docs/security.md, cross-account roles)\n`,
    );
  const templateId =
    options.launchTemplateId ?? (aws.launch_template?.startsWith('lt-') ? aws.launch_template : undefined);
  const document = managerPolicyDocument({
    ...(options.partition ? { partition: options.partition } : {}),
    region: aws.region,
    account,
    fleetName: config.fleet_name,
    mode: aws.mode,
    ...(aws.asg_name ? { autoScalingGroupName: aws.asg_name } : {}),
    instanceProfileArns: profiles,
    jobRoleArns: jobRoles,
    ...(templateId ? { launchTemplateId: templateId } : {}),
    ...(config.gitlab.runner_token_parameter
      ? { runnerTokenParameterName: config.gitlab.runner_token_parameter }
      : {}),
    ...(config.cache.bucket ? { cacheBucketName: config.cache.bucket } : {}),
    amiManifestParameterPrefix: config.image.manifest_parameter_prefix,
  });
  process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  return 0;
}
