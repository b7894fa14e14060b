/**
 * What the manager's IAM policy needs from the credential rules. Every instance profile a rule (or
 * default_profile) names must be attachable (ec2:AssociateIamInstanceProfile conditioned on
 * ec2:NewInstanceProfile) and its role passable (iam:PassRole).
 *
 * From a profile *name* we can derive its ARN in the manager's account (path "/"). We cannot derive
 * the role inside it: an instance profile's role is IAM data (iam:GetInstanceProfile), not part of
 * its name or ARN. We assume the usual convention, role name = profile name, and `--job-roles`
 * adds any other. A profile ARN in another account can never be attached: EC2 attaches only
 * profiles of the instance's own account.
 */
import type { CredentialsConfig } from './schema.js';

export interface RuleProfiles {
  /** Profile ARNs of this account, for ec2:NewInstanceProfile. */
  readonly instanceProfileArns: string[];
  /** Role ARNs by the role = profile name convention, for iam:PassRole. */
  readonly roleArns: string[];
  /** Profile ARNs of another account: EC2 cannot attach them. */
  readonly foreign: string[];
}

const PROFILE_ARN = /^arn:([a-z-]+):iam::(\d{12}):instance-profile\/(?:.*\/)?([\w+=,.@-]+)$/;

export function profilesFromRules(
  credentials: Pick<CredentialsConfig, 'rules' | 'defaultProfile'>,
  partition: string,
  account: string,
): RuleProfiles {
  const named = [
    ...(credentials.defaultProfile ? [credentials.defaultProfile] : []),
    ...credentials.rules.map((r) => r.instanceProfile),
  ];
  const profiles = new Set<string>();
  const roles = new Set<string>();
  const foreign = new Set<string>();
  for (const profile of named) {
    const arn = PROFILE_ARN.exec(profile);
    if (arn) {
      if (arn[2] !== account) {
        foreign.add(profile);
        continue;
      }
      profiles.add(profile);
      roles.add(`arn:${arn[1]}:iam::${account}:role/${arn[3]}`);
    } else {
      profiles.add(`arn:${partition}:iam::${account}:instance-profile/${profile}`);
      roles.add(`arn:${partition}:iam::${account}:role/${profile}`);
    }
  }
  return { instanceProfileArns: [...profiles], roleArns: [...roles], foreign: [...foreign] };
}
