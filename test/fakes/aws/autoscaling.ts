// Auto Scaling over the `awsQuery` protocol: form-encoded requests with `.member.N` lists, answers
// as `<XxxResponse><XxxResult>…</XxxResult><ResponseMetadata>` with `<member>` lists, errors as
// `<ErrorResponse><Error><Type>Sender</Type><Code>…`.

import { randomUUID } from 'node:crypto';
import { AwsError } from './errors.js';
import { bool, list, num, type QObject, str, strList } from './query.js';
import type { AsgActivity, AutoScalingGroup, World } from './world.js';
import { el, esc, memberList, wrap, XML_DECL } from './xml.js';

export const ASG_XMLNS = 'http://autoscaling.amazonaws.com/doc/2011-01-01/';

export function queryResponse(
  xmlns: string,
  action: string,
  requestId: string,
  result: string | undefined,
): string {
  const body = result === undefined ? '' : `<${action}Result>${result}</${action}Result>`;
  return `${XML_DECL}<${action}Response xmlns="${xmlns}">${body}<ResponseMetadata><RequestId>${requestId}</RequestId></ResponseMetadata></${action}Response>`;
}

export function queryErrorBody(xmlns: string, err: AwsError, requestId: string): string {
  return `${XML_DECL}<ErrorResponse xmlns="${xmlns}"><Error><Type>${err.faultType}</Type><Code>${esc(err.code)}</Code><Message>${esc(err.message)}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`;
}

/** Returns the inner `<XxxResult>` XML, or undefined for actions whose answer has no result element. */
type Handler = (world: World, p: QObject) => string | undefined;

export const asgActions: Record<string, Handler> = {
  DescribeAutoScalingGroups: describeAutoScalingGroups,
  SetDesiredCapacity: setDesiredCapacity,
  TerminateInstanceInAutoScalingGroup: terminateInstanceInAutoScalingGroup,
  SetInstanceProtection: setInstanceProtection,
  SuspendProcesses: (w, p) => suspendResume(w, p, true),
  ResumeProcesses: (w, p) => suspendResume(w, p, false),
  DescribeScalingActivities: describeScalingActivities,
};

export const SCALING_PROCESSES = [
  'Launch',
  'Terminate',
  'AddToLoadBalancer',
  'AlarmNotification',
  'AZRebalance',
  'HealthCheck',
  'InstanceRefresh',
  'ReplaceUnhealthy',
  'ScheduledActions',
];

function requireGroup(world: World, name: string | undefined): AutoScalingGroup {
  if (!name) throw new AwsError('ValidationError', 'AutoScalingGroupName is required');
  const g = world.groups.get(name);
  if (!g)
    throw new AwsError(
      'ValidationError',
      `AutoScalingGroup name not found - AutoScalingGroup '${name}' not found`,
    );
  return g;
}

function lifecycleState(world: World, instanceId: string): string {
  const state = world.instances.get(instanceId)?.State;
  switch (state) {
    case 'pending':
      return 'Pending';
    case 'running':
      return 'InService';
    case 'shutting-down':
      return 'Terminating';
    default:
      return 'Terminated';
  }
}

function renderLt(lt: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string }): string {
  return (
    el('LaunchTemplateId', lt.LaunchTemplateId) +
    el('LaunchTemplateName', lt.LaunchTemplateName) +
    el('Version', lt.Version)
  );
}

function renderGroup(world: World, g: AutoScalingGroup): string {
  const mip = g.MixedInstancesPolicy;
  const resolveSpec = (s: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string }) => {
    // AWS describes a group's template with both id and name filled in.
    try {
      const t = world.launchTemplate(s);
      return {
        LaunchTemplateId: t.LaunchTemplateId,
        LaunchTemplateName: t.LaunchTemplateName,
        Version: s.Version ?? '$Default',
      };
    } catch {
      return s;
    }
  };
  const azs = [
    ...new Set(
      g.subnetIds.map((s) => world.subnets.find((x) => x.subnetId === s)?.availabilityZone ?? world.region),
    ),
  ];
  return [
    el('AutoScalingGroupName', g.AutoScalingGroupName),
    el('AutoScalingGroupARN', g.AutoScalingGroupARN),
    g.LaunchTemplate ? wrap('LaunchTemplate', renderLt(resolveSpec(g.LaunchTemplate))) : '',
    mip
      ? wrap(
          'MixedInstancesPolicy',
          wrap(
            'LaunchTemplate',
            wrap(
              'LaunchTemplateSpecification',
              renderLt(resolveSpec(mip.LaunchTemplate.LaunchTemplateSpecification)),
            ) +
              memberList(
                'Overrides',
                mip.LaunchTemplate.Overrides ?? [],
                (o) => el('InstanceType', o.InstanceType) + el('WeightedCapacity', o.WeightedCapacity),
              ),
          ) +
            wrap(
              'InstancesDistribution',
              el(
                'OnDemandAllocationStrategy',
                mip.InstancesDistribution?.OnDemandAllocationStrategy ?? 'prioritized',
              ) +
                el('OnDemandBaseCapacity', mip.InstancesDistribution?.OnDemandBaseCapacity ?? 0) +
                el(
                  'OnDemandPercentageAboveBaseCapacity',
                  mip.InstancesDistribution?.OnDemandPercentageAboveBaseCapacity ?? 100,
                ) +
                el(
                  'SpotAllocationStrategy',
                  mip.InstancesDistribution?.SpotAllocationStrategy ?? 'price-capacity-optimized',
                ),
            ),
        )
      : '',
    el('MinSize', g.MinSize),
    el('MaxSize', g.MaxSize),
    el('DesiredCapacity', g.DesiredCapacity),
    el('DefaultCooldown', g.DefaultCooldown),
    memberList('AvailabilityZones', azs, (z) => esc(z)),
    '<LoadBalancerNames/><TargetGroupARNs/>',
    el('HealthCheckType', g.HealthCheckType),
    el('HealthCheckGracePeriod', g.HealthCheckGracePeriod),
    memberList('Instances', g.instances, (m) => {
      const inst = world.instances.get(m.InstanceId);
      return (
        el('InstanceId', m.InstanceId) +
        el('InstanceType', inst?.InstanceType) +
        el('AvailabilityZone', inst?.AvailabilityZone) +
        el('LifecycleState', lifecycleState(world, m.InstanceId)) +
        el('HealthStatus', 'Healthy') +
        (inst?.LaunchTemplate ? wrap('LaunchTemplate', renderLt(inst.LaunchTemplate)) : '') +
        el('ProtectedFromScaleIn', m.ProtectedFromScaleIn)
      );
    }),
    el('CreatedTime', g.CreatedTime),
    memberList(
      'SuspendedProcesses',
      g.SuspendedProcesses,
      (p) => el('ProcessName', p) + el('SuspensionReason', 'User suspended'),
    ),
    el('VPCZoneIdentifier', g.subnetIds.join(',')),
    '<EnabledMetrics/>',
    memberList(
      'Tags',
      g.Tags,
      (t) =>
        el('ResourceId', g.AutoScalingGroupName) +
        el('ResourceType', 'auto-scaling-group') +
        el('Key', t.Key) +
        el('Value', t.Value) +
        el('PropagateAtLaunch', t.PropagateAtLaunch),
    ),
    memberList('TerminationPolicies', g.TerminationPolicies, (t) => esc(t)),
    el('NewInstancesProtectedFromScaleIn', g.NewInstancesProtectedFromScaleIn),
    el(
      'ServiceLinkedRoleARN',
      `arn:aws:iam::${world.accountId}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling`,
    ),
    el('CapacityRebalance', false),
  ].join('');
}

function renderActivity(a: AsgActivity): string {
  return (
    el('ActivityId', a.ActivityId) +
    el('AutoScalingGroupName', a.AutoScalingGroupName) +
    el('Description', a.Description) +
    el('Cause', a.Cause) +
    el('StartTime', a.StartTime) +
    el('EndTime', a.EndTime) +
    el('StatusCode', a.StatusCode) +
    el('StatusMessage', a.StatusMessage) +
    el('Progress', a.Progress) +
    el('Details', a.Details)
  );
}

function describeAutoScalingGroups(world: World, p: QObject): string {
  const names = strList(p, 'AutoScalingGroupNames');
  const filters = list(p, 'Filters').map((f) => ({
    name: str(f, 'Name') ?? '',
    values: strList(f, 'Values'),
  }));
  let groups = [...world.groups.values()];
  if (names.length > 0) groups = groups.filter((g) => names.includes(g.AutoScalingGroupName));
  for (const f of filters) {
    groups = groups.filter((g) => {
      if (f.name.startsWith('tag:'))
        return g.Tags.some((t) => t.Key === f.name.slice(4) && f.values.includes(t.Value));
      if (f.name === 'tag-key') return g.Tags.some((t) => f.values.includes(t.Key));
      if (f.name === 'tag-value') return g.Tags.some((t) => f.values.includes(t.Value));
      throw new AwsError('ValidationError', `Filter name '${f.name}' is not supported`);
    });
  }
  const max = num(p, 'MaxRecords') ?? 50;
  if (!Number.isInteger(max) || max < 1 || max > 100)
    throw new AwsError('ValidationError', 'MaxRecords must be between 1 and 100');
  const token = str(p, 'NextToken');
  const start = token ? Number(Buffer.from(token, 'base64url').toString()) : 0;
  if (!Number.isInteger(start) || start < 0) throw new AwsError('InvalidNextToken', 'The token is invalid');
  const page = groups.slice(start, start + max);
  const next =
    start + max < groups.length ? Buffer.from(String(start + max)).toString('base64url') : undefined;
  return memberList('AutoScalingGroups', page, (g) => renderGroup(world, g)) + el('NextToken', next);
}

function setDesiredCapacity(world: World, p: QObject): undefined {
  const g = requireGroup(world, str(p, 'AutoScalingGroupName'));
  const desired = num(p, 'DesiredCapacity');
  if (desired === undefined || !Number.isInteger(desired) || desired < 0) {
    throw new AwsError('ValidationError', 'DesiredCapacity must be a non-negative integer');
  }
  if (desired > g.MaxSize) {
    throw new AwsError(
      'ValidationError',
      `New SetDesiredCapacity value ${desired} is above max value ${g.MaxSize} for the AutoScalingGroup.`,
    );
  }
  if (desired < g.MinSize) {
    throw new AwsError(
      'ValidationError',
      `New SetDesiredCapacity value ${desired} is below min value ${g.MinSize} for the AutoScalingGroup.`,
    );
  }
  g.DesiredCapacity = desired;
  // A new target is worth an immediate attempt, even if a retry after a failure is pending.
  g.retryScheduled = false;
  world.reconcileGroups();
  return undefined;
}

function terminateInstanceInAutoScalingGroup(world: World, p: QObject): string {
  const id = str(p, 'InstanceId');
  if (!id) throw new AwsError('ValidationError', 'InstanceId is required');
  const decrement = bool(p, 'ShouldDecrementDesiredCapacity');
  if (decrement === undefined)
    throw new AwsError('ValidationError', 'ShouldDecrementDesiredCapacity is required');
  const g = world.groupOf(id);
  const inst = world.instances.get(id);
  if (!g || !inst)
    throw new AwsError(
      'ValidationError',
      `Instance Id not found - No managed instance found for instance ID: ${id}`,
    );
  if (decrement && g.DesiredCapacity <= g.MinSize) {
    throw new AwsError(
      'ValidationError',
      `Currently, desiredSize equals minSize (${g.MinSize}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.`,
    );
  }
  const activity: AsgActivity = {
    ActivityId: randomUUID(),
    AutoScalingGroupName: g.AutoScalingGroupName,
    Description: `Terminating EC2 instance: ${id}`,
    Cause: decrement
      ? `At ${world.now().toISOString()} instance ${id} was taken out of service in response to a user request, shrinking the capacity from ${g.DesiredCapacity} to ${g.DesiredCapacity - 1}.`
      : `At ${world.now().toISOString()} instance ${id} was taken out of service in response to a user request.`,
    StartTime: world.now(),
    StatusCode: 'InProgress',
    Progress: 0,
    Details: JSON.stringify({ 'Subnet ID': inst.SubnetId, 'Availability Zone': inst.AvailabilityZone }),
  };
  g.activities.unshift(activity);
  g.activities.length = Math.min(g.activities.length, 100);
  if (decrement) g.DesiredCapacity--;
  // Scale-in protection does not stop an explicit terminate, only the group's own scale-in.
  world.terminate(inst);
  world.reconcileGroups();
  return wrap('Activity', renderActivity(activity));
}

function setInstanceProtection(world: World, p: QObject): string {
  const g = requireGroup(world, str(p, 'AutoScalingGroupName'));
  const ids = strList(p, 'InstanceIds');
  const protect = bool(p, 'ProtectedFromScaleIn');
  if (protect === undefined) throw new AwsError('ValidationError', 'ProtectedFromScaleIn is required');
  if (ids.length > 50) throw new AwsError('ValidationError', 'At most 50 instance ids per call');
  for (const id of ids) {
    if (!g.instances.some((m) => m.InstanceId === id)) {
      throw new AwsError(
        'ValidationError',
        `The instance ${id} is not part of Auto Scaling group ${g.AutoScalingGroupName}.`,
      );
    }
  }
  for (const m of g.instances) if (ids.includes(m.InstanceId)) m.ProtectedFromScaleIn = protect;
  world.reconcileGroups();
  return '';
}

function suspendResume(world: World, p: QObject, suspend: boolean): undefined {
  const g = requireGroup(world, str(p, 'AutoScalingGroupName'));
  const given = strList(p, 'ScalingProcesses');
  for (const name of given) {
    if (!SCALING_PROCESSES.includes(name))
      throw new AwsError('ValidationError', `Invalid scaling process name: ${name}`);
  }
  const procs = given.length > 0 ? given : SCALING_PROCESSES;
  if (suspend) g.SuspendedProcesses = [...new Set([...g.SuspendedProcesses, ...procs])];
  else g.SuspendedProcesses = g.SuspendedProcesses.filter((x) => !procs.includes(x));
  world.reconcileGroups();
  return undefined;
}

function describeScalingActivities(world: World, p: QObject): string {
  const name = str(p, 'AutoScalingGroupName');
  const groups = name ? [requireGroup(world, name)] : [...world.groups.values()];
  const max = num(p, 'MaxRecords') ?? 100;
  const acts = groups.flatMap((g) => g.activities).slice(0, max);
  return memberList('Activities', acts, renderActivity);
}
