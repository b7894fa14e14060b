/**
 * The AWS-native stand-in for the reference architecture's monitoring node: CloudWatch alarms on
 * what tells an operator that the 3k layout lost redundancy (a target out of a load balancer) or
 * is about to fail (database CPU, storage and connections, Redis memory), all sent to one
 * encrypted SNS topic (infra/shared/alarms.ts holds the thresholds). Node metrics beyond these
 * stay available on each node's exporters for a Prometheus scraper (docs/infrastructure.md).
 */
import type * as elasticache from 'aws-cdk-lib/aws-elasticache';
import type * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type * as rds from 'aws-cdk-lib/aws-rds';
import { Construct } from 'constructs';
import { AlarmTopic } from '../../shared/alarms.js';

export interface HaMonitoringProps {
  targetGroups: Record<'web' | 'praefect' | 'internalApi', elbv2.NetworkTargetGroup>;
  databases: { name: string; db: rds.DatabaseInstance; instanceType: string; allocatedStorageGiB: number }[];
  redis: elasticache.CfnReplicationGroup;
  /** Subscribed to the alarm topic by email (optional). */
  alarmEmail?: string;
}

export class HaMonitoring extends Construct {
  readonly alarms: AlarmTopic;

  constructor(scope: Construct, id: string, props: HaMonitoringProps) {
    super(scope, id);
    this.alarms = new AlarmTopic(this, 'Alarms', {
      description: 'GitLab 3k alarms',
      email: props.alarmEmail,
    });
    for (const [name, group] of Object.entries(props.targetGroups))
      this.alarms.targetGroup(name, group, true);
    for (const d of props.databases) this.alarms.database(d.name, d.db, d);
    this.alarms.redis(props.redis);
  }
}
