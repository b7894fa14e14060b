/**
 * One node role of the 3k layout as a self-healing Auto Scaling group: a launch template (Amazon
 * Linux 2023 from the public SSM parameter, IMDSv2 only, encrypted root volume, the boot script as
 * user data) and a group that CloudFormation creates and updates one node at a time, waiting for
 * each node's success signal (boot-scripts.ts) before the next: a rolling update never takes more
 * than one node of a role out of service.
 */
import { Duration, Lazy, Stack, Tags } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { acknowledge } from '../../shared/nag.js';
import type { NodeRole } from './sizes.js';

/** Tag on every node (and so its instances): the role, which IAM conditions also check. */
export const ROLE_TAG = 'runner-fleet:gitlab-role';

export interface NodeGroupProps {
  vpc: ec2.IVpc;
  /** Tag value and description, e.g. `rails` or `gitaly`. */
  role: string;
  subnets: ec2.ISubnet[];
  size: NodeRole;
  securityGroups: ec2.ISecurityGroup[];
  instanceRole: iam.IRole;
  /** The boot script, given the signal target (this group's stack and logical id). */
  userData: (signal: { stackName: string; logicalId: string }) => string;
  /** How long one node may take from launch to its success signal. */
  bootTimeout?: Duration;
}

export class NodeGroup extends Construct {
  readonly group: autoscaling.AutoScalingGroup;

  constructor(scope: Construct, id: string, props: NodeGroupProps) {
    super(scope, id);
    const [primaryGroup, ...otherGroups] = props.securityGroups;
    const timeout = props.bootTimeout ?? Duration.minutes(60);
    let logicalId = '';
    const launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
      instanceType: new ec2.InstanceType(props.size.instanceType),
      role: props.instanceRole,
      securityGroup: primaryGroup,
      // The group's logical id is known only once the group exists, below.
      userData: ec2.UserData.custom(
        Lazy.string({
          produce: () => props.userData({ stackName: Stack.of(this).stackName, logicalId }),
        }),
      ),
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      detailedMonitoring: true,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(props.size.rootVolumeGiB, {
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            encrypted: true,
            deleteOnTermination: true,
          }),
        },
      ],
    });
    for (const group of otherGroups) launchTemplate.connections.addSecurityGroup(group);

    const count = props.size.count;
    this.group = new autoscaling.AutoScalingGroup(this, 'Group', {
      vpc: props.vpc,
      vpcSubnets: { subnets: props.subnets },
      launchTemplate,
      minCapacity: count,
      maxCapacity: count,
      // EC2 status checks, not readiness: a database failover makes every node unready for a
      // minute, which must not get them all replaced. The load balancers route around unready nodes.
      healthChecks: autoscaling.HealthChecks.ec2({ gracePeriod: Duration.minutes(30) }),
      signals: autoscaling.Signals.waitForAll({ timeout }),
      updatePolicy: autoscaling.UpdatePolicy.rollingUpdate({
        maxBatchSize: 1,
        // A group of one (a Gitaly node) must let go of its volume before the new node takes it.
        minInstancesInService: count - 1,
        pauseTime: timeout,
        suspendProcesses: [
          autoscaling.ScalingProcess.HEALTH_CHECK,
          autoscaling.ScalingProcess.REPLACE_UNHEALTHY,
          autoscaling.ScalingProcess.AZ_REBALANCE,
          autoscaling.ScalingProcess.ALARM_NOTIFICATION,
          autoscaling.ScalingProcess.SCHEDULED_ACTIONS,
        ],
      }),
    });
    logicalId = Stack.of(this).getLogicalId(this.group.node.defaultChild as autoscaling.CfnAutoScalingGroup);
    Tags.of(this.group).add(ROLE_TAG, props.role);

    acknowledge(this.group, [
      {
        id: 'AwsSolutions-AS3',
        reason:
          'A fixed-size group; replacements show in the Auto Scaling activity history and EventBridge, and the CloudWatch alarms of the 3k stack watch the load balancer targets.',
      },
    ]);
  }
}
