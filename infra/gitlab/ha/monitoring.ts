/**
 * The AWS-native stand-in for the reference architecture's monitoring node: CloudWatch alarms on
 * what tells an operator that the 3k layout lost redundancy (a target out of a load balancer) or is about to fail (database CPU and storage), all sent to one
 * encrypted SNS topic (subscribe your on-call address to it). Node metrics beyond these stay
 * available on each node's exporters for a Prometheus scraper (docs/infrastructure.md).
 */
import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as elasticache from 'aws-cdk-lib/aws-elasticache';
import type * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as rds from 'aws-cdk-lib/aws-rds';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';

export interface HaMonitoringProps {
  targetGroups: Record<'web' | 'praefect' | 'internalApi', elbv2.NetworkTargetGroup>;
  databases: rds.DatabaseInstance[];
  redis: elasticache.CfnReplicationGroup;
}

export class HaMonitoring extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: HaMonitoringProps) {
    super(scope, id);
    const key = new kms.Key(this, 'AlarmTopicKey', {
      description: 'Encrypts the GitLab 3k alarm topic',
      enableKeyRotation: true,
    });
    // CloudWatch publishes to the topic, so it must be able to use the key.
    key.grantEncryptDecrypt(new iam.ServicePrincipal('cloudwatch.amazonaws.com'));
    this.topic = new sns.Topic(this, 'AlarmTopic', { masterKey: key, enforceSSL: true });
    const action = new actions.SnsAction(this.topic);
    const alarm = (alarmId: string, description: string, a: cloudwatch.AlarmProps) => {
      const created = new cloudwatch.Alarm(this, alarmId, { ...a, alarmDescription: description });
      created.addAlarmAction(action);
      created.addOkAction(action);
      this.alarms.push(created);
    };

    for (const [name, group] of Object.entries(props.targetGroups)) {
      const title = name[0]!.toUpperCase() + name.slice(1);
      alarm(
        `${title}Unhealthy`,
        `A ${name} target has failed its health check for 10 minutes: redundancy is reduced.`,
        {
          metric: group.metrics.unHealthyHostCount({ period: Duration.minutes(1), statistic: 'Maximum' }),
          threshold: 1,
          evaluationPeriods: 10,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        },
      );
      alarm(`${title}Down`, `No healthy ${name} target: this part of GitLab is down.`, {
        metric: group.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' }),
        threshold: 1,
        evaluationPeriods: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
    }
    props.databases.forEach((db, i) => {
      const which = i === 0 ? 'GitLab' : 'Praefect';
      alarm(
        `${which}DatabaseCpu`,
        `${which} PostgreSQL CPU above 80 % for 15 minutes: consider a larger class.`,
        {
          metric: db.metricCPUUtilization({ period: Duration.minutes(5) }),
          threshold: 80,
          evaluationPeriods: 3,
        },
      );
      alarm(
        `${which}DatabaseStorage`,
        `${which} PostgreSQL has less than 10 GiB free (storage autoscaling may be at its limit).`,
        {
          metric: db.metricFreeStorageSpace({ period: Duration.minutes(5) }),
          threshold: 10 * 1024 ** 3,
          evaluationPeriods: 1,
          comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        },
      );
    });
    alarm('RedisMemory', 'Redis memory above 80 %: evictions and failed jobs follow.', {
      metric: new cloudwatch.Metric({
        namespace: 'AWS/ElastiCache',
        metricName: 'DatabaseMemoryUsagePercentage',
        dimensionsMap: { ReplicationGroupId: props.redis.ref },
        period: Duration.minutes(5),
        statistic: 'Maximum',
      }),
      threshold: 80,
      evaluationPeriods: 3,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }
}
