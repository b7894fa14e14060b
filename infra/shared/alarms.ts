/**
 * CloudWatch alarms of every stack (POC GitLab, 3k GitLab, runner fleet), sent to one encrypted
 * SNS topic per stack. Every threshold is in ALARM_THRESHOLDS below, and docs/infrastructure.md
 * ("Alarms") is the table of them: change one here, and the docs with it.
 *
 * Each alarm also sends OK, so a mail thread shows when the condition cleared.
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
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

/** `period` in minutes; an alarm fires after `periods` consecutive breaching periods. */
export const ALARM_THRESHOLDS = {
  /** A load balancer target failing its health check (3k: one of several, redundancy reduced). */
  targetUnhealthy: { hosts: 1, period: 1, periods: 10 },
  /** No healthy target at all behind a 3k load balancer (the POC's one target: targetUnhealthy). */
  targetsDown: { healthyBelow: 1, period: 1, periods: 2 },
  databaseCpuPercent: { above: 80, period: 5, periods: 3 },
  /** Free storage below this share of the allocated storage, and never below `minGiB`. */
  databaseFreeStorage: { belowPercent: 10, minGiB: 2, period: 5, periods: 1 },
  /** Connections above this share of the class's max_connections (RDS PostgreSQL's default formula). */
  databaseConnectionsPercent: { above: 80, period: 5, periods: 3 },
  redisMemoryPercent: { above: 80, period: 5, periods: 3 },
  /** The manager's /healthz not 200, or no report at all (instance, timer or daemon gone). */
  managerUnhealthy: { period: 1, periods: 5 },
  /** Instances with the fleet's tags that the manager did not launch: a human must look. */
  foreignInstances: { above: 0, period: 5, periods: 3 },
  /** Instances in a state 10 minutes past the fleet's deadline (runner_fleet_stuck_instances). */
  stuckInstances: { above: 0, period: 5, periods: 2 },
} as const;

/** Where the manager's health timer puts its metrics (infra/fleet/health-metrics.ts). */
export const FLEET_METRICS_NAMESPACE = 'RunnerFleet';
export const FLEET_METRICS = {
  healthy: 'ManagerHealthy',
  foreign: 'ForeignInstances',
  stuck: 'StuckInstances',
} as const;

const minutes = (n: number) => Duration.minutes(n);

export interface AlarmTopicProps {
  /** Subscribed by email (the address confirms the subscription from the first mail). */
  email?: string;
  description: string;
}

/** One KMS-encrypted SNS topic and the alarms that publish to it. */
export class AlarmTopic extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  private readonly action: actions.SnsAction;

  constructor(scope: Construct, id: string, props: AlarmTopicProps) {
    super(scope, id);
    const key = new kms.Key(this, 'Key', {
      description: `Encrypts the alarm topic: ${props.description}`,
      enableKeyRotation: true,
    });
    // CloudWatch publishes to the topic, so it must be able to use the key.
    key.grantEncryptDecrypt(new iam.ServicePrincipal('cloudwatch.amazonaws.com'));
    this.topic = new sns.Topic(this, 'Topic', {
      displayName: props.description,
      masterKey: key,
      enforceSSL: true,
    });
    if (props.email) this.topic.addSubscription(new subscriptions.EmailSubscription(props.email));
    this.action = new actions.SnsAction(this.topic);
  }

  add(id: string, description: string, props: cloudwatch.AlarmProps): cloudwatch.Alarm {
    const alarm = new cloudwatch.Alarm(this, id, { ...props, alarmDescription: description });
    alarm.addAlarmAction(this.action);
    alarm.addOkAction(this.action);
    this.alarms.push(alarm);
    return alarm;
  }

  /**
   * A load balancer's target group. `redundant`: several targets, so one unhealthy target is a
   * warning and none healthy is the outage; the POC has one target, so unhealthy is the outage.
   */
  targetGroup(name: string, group: elbv2.NetworkTargetGroup, redundant: boolean): void {
    const title = name[0]!.toUpperCase() + name.slice(1);
    const u = ALARM_THRESHOLDS.targetUnhealthy;
    this.add(
      `${title}Unhealthy`,
      redundant
        ? `A ${name} target has failed its health check for ${u.periods} minutes: redundancy is reduced.`
        : `The ${name} target has failed its health check for ${u.periods} minutes: GitLab is down or restarting.`,
      {
        metric: group.metrics.unHealthyHostCount({ period: minutes(u.period), statistic: 'Maximum' }),
        threshold: u.hosts,
        evaluationPeriods: u.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      },
    );
    if (!redundant) return;
    const d = ALARM_THRESHOLDS.targetsDown;
    this.add(`${title}Down`, `No healthy ${name} target: this part of GitLab is down.`, {
      metric: group.metrics.healthyHostCount({ period: minutes(d.period), statistic: 'Minimum' }),
      threshold: d.healthyBelow,
      evaluationPeriods: d.periods,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
  }

  /** CPU, free storage and connections of one RDS PostgreSQL instance. */
  database(
    name: string,
    db: rds.DatabaseInstance,
    sizing: { instanceType: string; allocatedStorageGiB: number },
  ): void {
    const cpu = ALARM_THRESHOLDS.databaseCpuPercent;
    this.add(
      `${name}DatabaseCpu`,
      `${name} PostgreSQL CPU above ${cpu.above} % for ${cpu.period * cpu.periods} minutes: consider a larger class.`,
      {
        metric: db.metricCPUUtilization({ period: minutes(cpu.period), statistic: 'Average' }),
        threshold: cpu.above,
        evaluationPeriods: cpu.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      },
    );
    const storage = ALARM_THRESHOLDS.databaseFreeStorage;
    const freeGiB = freeStorageThresholdGiB(sizing.allocatedStorageGiB);
    this.add(
      `${name}DatabaseStorage`,
      `${name} PostgreSQL has less than ${freeGiB} GiB free (storage autoscaling may be at its limit).`,
      {
        metric: db.metricFreeStorageSpace({ period: minutes(storage.period), statistic: 'Minimum' }),
        threshold: freeGiB * 1024 ** 3,
        evaluationPeriods: storage.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      },
    );
    const conn = ALARM_THRESHOLDS.databaseConnectionsPercent;
    const max = postgresMaxConnections(sizing.instanceType);
    const limit = Math.floor((max * conn.above) / 100);
    this.add(
      `${name}DatabaseConnections`,
      `${name} PostgreSQL has more than ${limit} connections (${conn.above} % of about ${max} for ${sizing.instanceType}): new connections will soon be refused.`,
      {
        metric: db.metricDatabaseConnections({ period: minutes(conn.period), statistic: 'Maximum' }),
        threshold: limit,
        evaluationPeriods: conn.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      },
    );
  }

  /** ElastiCache Redis memory (of maxmemory). */
  redis(group: elasticache.CfnReplicationGroup): void {
    const r = ALARM_THRESHOLDS.redisMemoryPercent;
    this.add('RedisMemory', `Redis memory above ${r.above} %: evictions and failed jobs follow.`, {
      metric: new cloudwatch.Metric({
        namespace: 'AWS/ElastiCache',
        metricName: 'DatabaseMemoryUsagePercentage',
        dimensionsMap: { ReplicationGroupId: group.ref },
        period: minutes(r.period),
        statistic: 'Maximum',
      }),
      threshold: r.above,
      evaluationPeriods: r.periods,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
  }

  /** The manager's health and the fleet's foreign and stuck instances, as its health timer reports them. */
  fleet(fleetName: string): void {
    const metric = (metricName: string, period: number, statistic: string) =>
      new cloudwatch.Metric({
        namespace: FLEET_METRICS_NAMESPACE,
        metricName,
        dimensionsMap: { Fleet: fleetName },
        period: minutes(period),
        statistic,
      });
    const h = ALARM_THRESHOLDS.managerUnhealthy;
    this.add(
      'ManagerUnhealthy',
      `The runner-fleet manager of fleet ${fleetName} has not reported a healthy /healthz for ${h.periods} minutes (daemon failing to list instances, daemon down, or no manager instance): jobs are not served.`,
      {
        metric: metric(FLEET_METRICS.healthy, h.period, 'Minimum'),
        threshold: 1,
        evaluationPeriods: h.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        // No report at all is the worst case: the instance, its timer or the daemon is gone.
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      },
    );
    const f = ALARM_THRESHOLDS.foreignInstances;
    this.add(
      'ForeignInstances',
      `Fleet ${fleetName} has instances with its tags that its manager did not launch; they run (and cost) until someone terminates them (docs/security.md, Provenance).`,
      {
        metric: metric(FLEET_METRICS.foreign, f.period, 'Maximum'),
        threshold: f.above,
        evaluationPeriods: f.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      },
    );
    const s = ALARM_THRESHOLDS.stuckInstances;
    this.add(
      'StuckInstances',
      `Fleet ${fleetName} has instances stuck in a state (not ready, a lease past max_job_lifetime, or a terminate that keeps failing): see runner-fleet status and the daemon log.`,
      {
        metric: metric(FLEET_METRICS.stuck, s.period, 'Maximum'),
        threshold: s.above,
        evaluationPeriods: s.periods,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      },
    );
  }
}

/** GiB of free storage below which the storage alarm fires. */
export function freeStorageThresholdGiB(allocatedGiB: number): number {
  const t = ALARM_THRESHOLDS.databaseFreeStorage;
  return Math.max(t.minGiB, Math.floor((allocatedGiB * t.belowPercent) / 100));
}

const SIZE_VCPUS: Record<string, number> = {
  large: 2,
  xlarge: 4,
  '2xlarge': 8,
  '4xlarge': 16,
  '8xlarge': 32,
  '12xlarge': 48,
  '16xlarge': 64,
  '24xlarge': 96,
};
const BURSTABLE_GIB: Record<string, number> = {
  micro: 1,
  small: 2,
  medium: 4,
  large: 8,
  xlarge: 16,
  '2xlarge': 32,
};

/**
 * RDS PostgreSQL's default max_connections, LEAST(DBInstanceClassMemory / 9531392, 5000), from the
 * class's nominal memory (m: 4 GiB per vCPU, r: 8, x: 16, t: by size). DBInstanceClassMemory is a
 * little below the nominal memory, so this errs high; the alarm's 80 % leaves room for that.
 */
export function postgresMaxConnections(instanceType: string): number {
  const m = /^(?:db\.)?([a-z])(\d+)[a-z-]*\.(\w+)$/.exec(instanceType);
  const family = m?.[1];
  const size = m?.[3] ?? '';
  let gib: number | undefined;
  if (family === 't') gib = BURSTABLE_GIB[size];
  else if (family === 'm' || family === 'r' || family === 'x') {
    const perVcpu = { m: 4, r: 8, x: 16 }[family];
    gib = SIZE_VCPUS[size] !== undefined ? SIZE_VCPUS[size] * perVcpu : undefined;
  }
  if (gib === undefined)
    throw new Error(
      `database instance type ${instanceType}: unknown memory for the connections alarm (infra/shared/alarms.ts knows db.t*, db.m*, db.r*, db.x* classes)`,
    );
  return Math.min(Math.floor((gib * 1024 ** 3) / 9531392), 5000);
}
