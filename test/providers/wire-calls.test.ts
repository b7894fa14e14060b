/**
 * AWS calls per job on the wire (issue #14): the real Fleet and AwsProvider against the fake, a
 * burst of 100 jobs and a steady stream, in both modes. Invariants only (≤ 3 calls per job, the
 * IAM policy covers every call made, the simulator counts the same within 10 %), never speeds;
 * `npm run bench` prints the figures.
 */
import { describe, expect, it } from 'vitest';
import { managerPolicyDocument } from '../../manager/providers/aws/iam-policy.js';
import { BURST, type CallCount, STEADY, simulatedCalls, wireCalls, wireTiming } from './wire-calls.js';

/** Actions the policy grants that these runs do not exercise, and why (flagged, not failed). */
const EXPECTED_EXTRAS: Record<string, string> = {
  'ec2:DescribeInstanceStatus': 'doctor',
  'ec2:DescribeImages': 'doctor',
  'ec2:DescribeIamInstanceProfileAssociations': 'a lease wanting another instance profile',
  'ec2:ModifyInstanceMetadataOptions': 'a credential class with another hop limit',
  'ec2:CreateTags': 'reuse (max_use_count > 1) and orphan marks',
  'ec2:DeleteTags': 'reuse (max_use_count > 1) and orphan marks',
  'ec2:DeleteLaunchTemplateVersions': 'the second key window',
  'ec2:TerminateInstances': 'instances that are not (or no longer) group members',
  'autoscaling:DescribeScalingActivities': 'a raise the group does not answer in time',
  'autoscaling:SetInstanceProtection': 'a group that does not protect new instances itself',
  'sts:GetCallerIdentity': 'iam-policy and doctor',
};

/** Calls per job, unrounded. */
const perJob = (r: CallCount) => r.total / r.jobs;

describe.each(['fleet', 'asg'] as const)('AWS calls per job on the wire (%s mode)', (mode) => {
  it('≤ 3 for a burst of 100 jobs and for a steady stream, listing included; the simulator counts the same within 10 %; the IAM policy covers every call', async () => {
    const results = [];
    for (const scenario of [BURST, STEADY]) {
      const r = await wireCalls(mode, scenario);
      results.push(r);
      expect(r.jobs).toBeGreaterThanOrEqual(scenario === BURST ? 100 : 60);
      expect(r.perJob, JSON.stringify(r)).toBeLessThanOrEqual(3);
      // The periodic listing is in the count.
      expect(r.byAction.DescribeInstances ?? 0).toBeGreaterThan(0);
      // The same job stream, at the wire run's pace, through the simulator: its figure is the
      // provider's, counted where the simulated cloud answers.
      const sim = await simulatedCalls(mode, scenario, wireTiming(r));
      const off = Math.abs(perJob(sim) - perJob(r)) / perJob(r);
      const show = (c: CallCount) => `${c.perJob} (${JSON.stringify(c.byAction)})`;
      expect(off, `${scenario.name}: wire ${show(r)}, simulator ${show(sim)}`).toBeLessThanOrEqual(0.1);
    }
    const policy = managerPolicyDocument({
      region: 'eu-west-1',
      account: '111111111111',
      fleetName: 'calls',
      mode,
      ...(mode === 'asg' ? { autoScalingGroupName: 'runner-fleet-jobs' } : {}),
      instanceProfileArns: [],
      jobRoleArns: [],
    });
    const granted = new Set(policy.Statement.flatMap((s) => s.Action));
    const made = new Set(results.flatMap((r) => r.iamActions));
    // Nothing the provider did is missing from `runner-fleet iam-policy`.
    expect([...made].filter((a) => !granted.has(a))).toEqual([]);
    // What the policy grants beyond these runs is known and explained.
    const extras = [...granted].filter((a) => !made.has(a)).sort();
    expect(extras.filter((a) => !(a in EXPECTED_EXTRAS))).toEqual([]);
  }, 300_000);
});
