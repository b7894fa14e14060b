/**
 * The manager's IAM policy, in one place. The CDK runner fleet stack attaches exactly this
 * document, and `runner-fleet iam-policy` prints it for ops who manage IAM by other means, so the
 * two can never drift apart.
 *
 * Shape of the grant: read-only Describe* calls everywhere (they cannot be scoped), launches only
 * when the new instance carries this fleet's tag, and every mutating call on an existing instance
 * (terminate, tag, swap instance profile) only on instances that already carry this fleet's tag.
 * In `asg` mode the Auto Scaling calls are scoped to the one job group's ARN.
 *
 * Pure data: no AWS SDK or CDK import, so the CLI can print it and the CDK stack can pass token
 * strings (e.g. `${Token[...]}`) through it unchanged.
 */
import { TAG } from '../tags.js';

export interface ManagerPolicyOptions {
  /** `aws`, `aws-cn` or `aws-us-gov`; defaults to `aws`. */
  partition?: string;
  region: string;
  account: string;
  /** Value of the `runner-fleet:fleet` tag on every instance this manager owns. */
  fleetName: string;
  /** `fleet`: the manager launches with RunInstances. `asg`: it steers an Auto Scaling group. */
  mode: 'asg' | 'fleet';
  /** Required in `asg` mode: the job group's name. */
  autoScalingGroupName?: string;
  /** Instance profiles a job may be switched to (one per credential class). */
  instanceProfileArns: string[];
  /** The roles inside those profiles: what the manager may pass to EC2. */
  jobRoleArns: string[];
  /** Scopes launches to the job launch template; any template in the account if omitted. */
  launchTemplateId?: string;
  /** SSM parameter holding the runner authentication token, with or without a leading `/`. */
  runnerTokenParameterName?: string;
  /** The gitlab-runner S3 cache: the runner presigns cache URLs with the manager's credentials. */
  cacheBucketName?: string;
  /** SSM path under which the image build publishes each AMI's package manifest (`doctor` reads it). */
  amiManifestParameterPrefix?: string;
}

export type PolicyCondition = Record<string, Record<string, string | string[]>>;

export interface PolicyStatementJson {
  Sid: string;
  Effect: 'Allow' | 'Deny';
  Action: string[];
  Resource: string | string[];
  Condition?: PolicyCondition;
}

export interface ManagerPolicyDocument {
  Version: '2012-10-17';
  Statement: PolicyStatementJson[];
}

/** The API call that creates instances, for the `ec2:CreateAction` tag-on-create condition. */
const LAUNCH_ACTIONS = ['ec2:RunInstances'];

export function managerPolicyDocument(o: ManagerPolicyOptions): ManagerPolicyDocument {
  if (o.mode === 'asg' && !o.autoScalingGroupName) {
    throw new Error('managerPolicyDocument: mode "asg" needs autoScalingGroupName');
  }
  const arn = ec2ArnBuilder(o);
  const ownInstance: PolicyCondition = { StringEquals: { [`aws:ResourceTag/${TAG.fleet}`]: o.fleetName } };
  const statements: PolicyStatementJson[] = [
    {
      Sid: 'DescribeIsNotResourceScoped',
      Effect: 'Allow',
      // These Describe* calls and GetCallerIdentity do not support resource-level permissions
      // or tag conditions: AWS only accepts `*` for them. They are read-only.
      Action: [
        'ec2:DescribeInstances',
        'ec2:DescribeInstanceStatus',
        'ec2:DescribeLaunchTemplateVersions',
        'ec2:DescribeImages',
        'ec2:DescribeIamInstanceProfileAssociations',
        ...(o.mode === 'asg'
          ? ['autoscaling:DescribeAutoScalingGroups', 'autoscaling:DescribeScalingActivities']
          : []),
        'sts:GetCallerIdentity',
      ],
      Resource: '*',
    },
  ];

  if (o.mode === 'fleet') statements.push(...launchStatements(o, arn));

  statements.push({
    Sid: 'ManageOwnInstances',
    Effect: 'Allow',
    // Life-cycle tags (reuse state, orphan mark; a cleared tag is deleted) and termination,
    // only on this fleet's instances.
    Action: ['ec2:CreateTags', 'ec2:DeleteTags', 'ec2:TerminateInstances'],
    Resource: arn('instance/*'),
    Condition: ownInstance,
  });

  if (o.mode === 'asg') {
    statements.push({
      Sid: 'KeyWindowTemplateVersions',
      Effect: 'Allow',
      // asg mode: the group launches from the template's $Latest version, so each key window adds
      // one version with its user data (shared SSH keys, dead-man switch) and tags, and deletes
      // the previous one. fleet mode passes all of that to RunInstances and needs neither.
      Action: ['ec2:CreateLaunchTemplateVersion', 'ec2:DeleteLaunchTemplateVersions'],
      Resource: arn(`launch-template/${o.launchTemplateId ?? '*'}`),
    });
  }

  statements.push({
    Sid: 'SetHopLimitPerCredentialClass',
    Effect: 'Allow',
    // A credential class may want IMDSv2 hop limit 2 (jobs that run containers): own instances only.
    Action: ['ec2:ModifyInstanceMetadataOptions'],
    Resource: arn('instance/*'),
    Condition: { ...ownInstance },
  });

  if (o.instanceProfileArns.length > 0) {
    statements.push({
      Sid: 'SwitchJobInstanceProfile',
      Effect: 'Allow',
      Action: ['ec2:AssociateIamInstanceProfile', 'ec2:ReplaceIamInstanceProfileAssociation'],
      Resource: arn('instance/*'),
      // Own instances only, and only towards one of the job profiles: never the manager's own.
      Condition: {
        ...ownInstance,
        ArnEquals: { 'ec2:NewInstanceProfile': o.instanceProfileArns },
      },
    });
  }

  if (o.jobRoleArns.length > 0) {
    statements.push({
      Sid: 'PassJobRolesToEc2',
      Effect: 'Allow',
      Action: ['iam:PassRole'],
      Resource: o.jobRoleArns,
      Condition: { StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } },
    });
  }

  if (o.mode === 'asg') {
    const partition = o.partition ?? 'aws';
    statements.push({
      Sid: 'SteerJobGroup',
      Effect: 'Allow',
      Action: [
        'autoscaling:SetDesiredCapacity',
        'autoscaling:TerminateInstanceInAutoScalingGroup',
        // Only for a group that does not protect new instances from scale-in itself.
        'autoscaling:SetInstanceProtection',
      ],
      // The group id segment is a generated UUID; the name pins it to the one job group.
      Resource: `arn:${partition}:autoscaling:${o.region}:${o.account}:autoScalingGroup:*:autoScalingGroupName/${o.autoScalingGroupName}`,
    });
  }

  if (o.runnerTokenParameterName) {
    const partition = o.partition ?? 'aws';
    const name = o.runnerTokenParameterName.replace(/^\//, '');
    statements.push({
      Sid: 'ReadRunnerToken',
      Effect: 'Allow',
      // A SecureString under the AWS-managed aws/ssm key needs no kms grant; a customer key would.
      Action: ['ssm:GetParameter'],
      Resource: `arn:${partition}:ssm:${o.region}:${o.account}:parameter/${name}`,
    });
  }

  if (o.amiManifestParameterPrefix) {
    const partition = o.partition ?? 'aws';
    const prefix = o.amiManifestParameterPrefix.replace(/^\//, '').replace(/\/$/, '');
    statements.push({
      Sid: 'ReadAmiManifests',
      Effect: 'Allow',
      // `runner-fleet doctor` checks the job AMI's git, git-lfs and gitlab-runner from here.
      Action: ['ssm:GetParameter'],
      Resource: `arn:${partition}:ssm:${o.region}:${o.account}:parameter/${prefix}/*`,
    });
  }

  if (o.cacheBucketName) {
    const partition = o.partition ?? 'aws';
    const bucket = `arn:${partition}:s3:::${o.cacheBucketName}`;
    statements.push(
      {
        Sid: 'CacheBucketList',
        Effect: 'Allow',
        Action: ['s3:ListBucket', 's3:GetBucketLocation'],
        Resource: bucket,
      },
      {
        Sid: 'CacheBucketObjects',
        Effect: 'Allow',
        // gitlab-runner presigns GET/PUT cache URLs with these credentials; jobs never hold them.
        Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'],
        Resource: `${bucket}/*`,
      },
    );
  }

  return { Version: '2012-10-17', Statement: statements };
}

/** Statements for `fleet` mode, where the manager calls RunInstances itself. */
function launchStatements(o: ManagerPolicyOptions, arn: (resource: string) => string): PolicyStatementJson[] {
  const partition = o.partition ?? 'aws';
  const launchTemplate = arn(`launch-template/${o.launchTemplateId ?? '*'}`);
  return [
    {
      Sid: 'LaunchOnlyTaggedInstances',
      Effect: 'Allow',
      Action: LAUNCH_ACTIONS,
      // The instance must be born with this fleet's tag, so every later call is tag-scoped.
      Resource: arn('instance/*'),
      Condition: { StringEquals: { [`aws:RequestTag/${TAG.fleet}`]: o.fleetName } },
    },
    {
      Sid: 'LaunchSupportingResources',
      Effect: 'Allow',
      Action: LAUNCH_ACTIONS,
      // Resources a launch creates alongside the instance (volumes, ENIs, spot requests) or only
      // references (subnet, security group, image, key pair, template).
      Resource: [
        arn('volume/*'),
        arn('network-interface/*'),
        arn('spot-instances-request/*'),
        arn('subnet/*'),
        arn('security-group/*'),
        arn('key-pair/*'),
        `arn:${partition}:ec2:${o.region}::image/*`,
        launchTemplate,
      ],
    },
    {
      Sid: 'TagOnLaunch',
      Effect: 'Allow',
      Action: ['ec2:CreateTags'],
      // Only inside a launch call, whose own statement already demands the fleet tag.
      Resource: [
        arn('instance/*'),
        arn('volume/*'),
        arn('network-interface/*'),
        arn('spot-instances-request/*'),
      ],
      Condition: { StringEquals: { 'ec2:CreateAction': LAUNCH_ACTIONS } },
    },
  ];
}

function ec2ArnBuilder(o: ManagerPolicyOptions): (resource: string) => string {
  const partition = o.partition ?? 'aws';
  return (resource) => `arn:${partition}:ec2:${o.region}:${o.account}:${resource}`;
}
