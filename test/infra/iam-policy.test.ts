import { describe, expect, it } from 'vitest';
import {
  type ManagerPolicyOptions,
  managerPolicyDocument,
  type PolicyStatementJson,
} from '../../manager/providers/aws/iam-policy.js';
import { TAG } from '../../manager/providers/tags.js';

const base: ManagerPolicyOptions = {
  region: 'eu-west-1',
  account: '111111111111',
  fleetName: 'ci-fleet',
  mode: 'fleet',
  instanceProfileArns: [
    'arn:aws:iam::111111111111:instance-profile/job-default',
    'arn:aws:iam::111111111111:instance-profile/job-deploy-dev',
  ],
  jobRoleArns: [
    'arn:aws:iam::111111111111:role/job-default',
    'arn:aws:iam::111111111111:role/job-deploy-dev',
  ],
  launchTemplateId: 'lt-0123456789abcdef0',
  runnerTokenParameterName: '/runner-fleet/ci-fleet/runner-token',
  cacheBucketName: 'ci-fleet-cache',
};

const asList = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
const withAction = (statements: PolicyStatementJson[], action: string) =>
  statements.filter((s) => s.Action.includes(action));
const allActions = (statements: PolicyStatementJson[]) => new Set(statements.flatMap((s) => s.Action));

describe('managerPolicyDocument', () => {
  const fleet = managerPolicyDocument(base).Statement;
  const asg = managerPolicyDocument({
    ...base,
    mode: 'asg',
    autoScalingGroupName: 'ci-fleet-jobs',
  }).Statement;

  it('is a valid, uniquely identified policy document', () => {
    const doc = managerPolicyDocument(base);
    expect(doc.Version).toBe('2012-10-17');
    const sids = doc.Statement.map((s) => s.Sid);
    expect(new Set(sids).size).toBe(sids.length);
    for (const s of doc.Statement) expect(s.Sid).toMatch(/^[A-Za-z0-9]+$/);
    expect(() => JSON.parse(JSON.stringify(doc))).not.toThrow();
  });

  it('allows `*` only for read-only calls that cannot be resource-scoped', () => {
    for (const s of [...fleet, ...asg]) {
      if (!asList(s.Resource).includes('*')) continue;
      for (const action of s.Action) {
        expect(action).toMatch(/^(ec2:Describe|autoscaling:Describe|sts:GetCallerIdentity$)/);
      }
    }
  });

  it('never grants an unconditioned wildcard on a terminate action', () => {
    for (const statements of [fleet, asg]) {
      const terminating = statements.filter((s) => s.Action.some((a) => /Terminate/.test(a)));
      expect(terminating.length).toBeGreaterThan(0);
      for (const s of terminating) {
        expect(asList(s.Resource)).not.toContain('*');
        if (s.Action.includes('ec2:TerminateInstances')) {
          expect(s.Condition?.StringEquals?.[`aws:ResourceTag/${TAG.fleet}`]).toBe('ci-fleet');
        } else {
          expect(asList(s.Resource)).toEqual([
            'arn:aws:autoscaling:eu-west-1:111111111111:autoScalingGroup:*:autoScalingGroupName/ci-fleet-jobs',
          ]);
        }
      }
    }
  });

  it('tags only at launch or on instances already tagged with this fleet', () => {
    for (const s of withAction(fleet, 'ec2:CreateTags')) {
      const onLaunch = s.Condition?.StringEquals?.['ec2:CreateAction'];
      const ownTag = s.Condition?.StringEquals?.[`aws:ResourceTag/${TAG.fleet}`];
      expect(onLaunch ?? ownTag).toBeDefined();
      if (onLaunch) expect(asList(onLaunch)).toEqual(['ec2:RunInstances']);
      if (ownTag) expect(ownTag).toBe('ci-fleet');
    }
  });

  it('launches instances only with the fleet tag, from the job launch template', () => {
    const instanceLaunch = fleet.filter(
      (s) =>
        s.Action.includes('ec2:RunInstances') && asList(s.Resource).some((r) => r.includes(':instance/')),
    );
    expect(instanceLaunch).toHaveLength(1);
    expect(instanceLaunch[0]?.Condition).toEqual({
      StringEquals: { [`aws:RequestTag/${TAG.fleet}`]: 'ci-fleet' },
    });
    const supporting = withAction(fleet, 'ec2:RunInstances').flatMap((s) => asList(s.Resource));
    expect(supporting).toContain('arn:aws:ec2:eu-west-1:111111111111:launch-template/lt-0123456789abcdef0');
    expect(supporting.filter((r) => r.includes('launch-template/'))).toHaveLength(1);
  });

  it('switches instance profiles only on own instances and only to job profiles', () => {
    const [s] = withAction(fleet, 'ec2:ReplaceIamInstanceProfileAssociation');
    expect(s?.Action).toContain('ec2:AssociateIamInstanceProfile');
    expect(s?.Condition?.StringEquals?.[`aws:ResourceTag/${TAG.fleet}`]).toBe('ci-fleet');
    expect(s?.Condition?.ArnEquals?.['ec2:NewInstanceProfile']).toEqual(base.instanceProfileArns);
  });

  it('passes only the job roles, and only to EC2', () => {
    const passRole = withAction(fleet, 'iam:PassRole');
    expect(passRole).toHaveLength(1);
    expect(passRole[0]?.Resource).toEqual(base.jobRoleArns);
    expect(passRole[0]?.Condition).toEqual({ StringEquals: { 'iam:PassedToService': 'ec2.amazonaws.com' } });
  });

  it('reads exactly the runner token parameter and uses exactly the cache bucket', () => {
    expect(withAction(fleet, 'ssm:GetParameter')[0]?.Resource).toBe(
      'arn:aws:ssm:eu-west-1:111111111111:parameter/runner-fleet/ci-fleet/runner-token',
    );
    const s3 = fleet
      .filter((s) => s.Action.some((a) => a.startsWith('s3:')))
      .flatMap((s) => asList(s.Resource));
    expect(s3.sort()).toEqual(['arn:aws:s3:::ci-fleet-cache', 'arn:aws:s3:::ci-fleet-cache/*']);
  });

  it('gives each mode only the calls it makes', () => {
    const fleetActions = allActions(fleet);
    const asgActions = allActions(asg);
    expect(fleetActions.has('ec2:RunInstances')).toBe(true);
    // One RunInstances per instance carries its user data: no CreateFleet, no template versions.
    expect(fleetActions.has('ec2:CreateFleet')).toBe(false);
    expect(fleetActions.has('ec2:CreateLaunchTemplateVersion')).toBe(false);
    expect([...fleetActions].some((a) => a.startsWith('autoscaling:'))).toBe(false);
    expect(asgActions.has('ec2:RunInstances')).toBe(false);
    for (const a of [
      'autoscaling:DescribeAutoScalingGroups',
      'autoscaling:SetDesiredCapacity',
      'autoscaling:TerminateInstanceInAutoScalingGroup',
      'autoscaling:SetInstanceProtection',
      'ec2:TerminateInstances',
      'ec2:DescribeInstances',
      'ec2:DescribeInstanceStatus',
      'ec2:DescribeLaunchTemplateVersions',
      'ec2:DescribeImages',
      'ec2:DescribeIamInstanceProfileAssociations',
      'sts:GetCallerIdentity',
    ]) {
      expect(asgActions.has(a), a).toBe(true);
    }
  });

  it('honours the partition and drops statements for options left out', () => {
    const doc = managerPolicyDocument({
      ...base,
      partition: 'aws-cn',
      instanceProfileArns: [],
      jobRoleArns: [],
      runnerTokenParameterName: undefined,
      cacheBucketName: undefined,
    });
    const resources = doc.Statement.flatMap((s) => asList(s.Resource)).filter((r) => r !== '*');
    for (const r of resources) expect(r.startsWith('arn:aws-cn:')).toBe(true);
    const actions = allActions(doc.Statement);
    for (const a of ['iam:PassRole', 'ssm:GetParameter', 's3:GetObject', 'ec2:AssociateIamInstanceProfile']) {
      expect(actions.has(a), a).toBe(false);
    }
  });

  it('refuses asg mode without a group name', () => {
    expect(() => managerPolicyDocument({ ...base, mode: 'asg' })).toThrow(/autoScalingGroupName/);
  });
});
