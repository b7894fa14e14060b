/**
 * Alarms of the POC GitLab and the runner fleet, synthesized once as a Dev stage with an alarm
 * email (the 3k stack's alarms are asserted in ha-stack.test.ts on its own synthesis): which
 * metric each alarm watches, its threshold from infra/shared/alarms.ts, the encrypted topic and
 * its email subscription, and the manager's health timer in user data with its IAM permission.
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readInfraConfig } from '../../infra/config.js';
import { HEALTH_SCRIPT_PATH, HEALTH_UNIT } from '../../infra/fleet/health-metrics.js';
import {
  ALARM_THRESHOLDS,
  FLEET_METRICS_NAMESPACE,
  freeStorageThresholdGiB,
  postgresMaxConnections,
} from '../../infra/shared/alarms.js';
import { SIZINGS } from '../../infra/sizing.js';
import type { RunnerFleetStage } from '../../infra/stage.js';
import { devStageWith } from './cdk-context.js';
import { type Json, policyStatements, SYNTH_TIMEOUT_MS, Synthesized } from './synth.js';
import { bashSyntaxCheck, heredoc, userDataOf } from './user-data.js';

const EMAIL = 'oncall@example.com';
let synth: Synthesized;
let stage: RunnerFleetStage;
let gitlab: Template;
let fleet: Template;

beforeAll(() => {
  const dev = devStageWith({ alarmEmail: EMAIL, smtpSecretName: 'ses-smtp' });
  stage = dev.stage;
  synth = new Synthesized(dev.app);
  gitlab = synth.template(stage.gitlab);
  fleet = synth.template(stage.fleet);
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

type Alarm = { Properties: Record<string, Json> };
const alarms = (t: Template) => Object.values(t.findResources('AWS::CloudWatch::Alarm')) as Alarm[];
const byMetric = (t: Template, namespace: string, metricName: string) =>
  alarms(t).filter((a) => a.Properties.Namespace === namespace && a.Properties.MetricName === metricName);

function expectTopicWiring(t: Template): void {
  const topics = Object.entries(t.findResources('AWS::SNS::Topic'));
  expect(topics).toHaveLength(1);
  const [topicId, topic] = topics[0]! as [string, { Properties: Record<string, Json> }];
  expect(topic.Properties.KmsMasterKeyId).toBeDefined();
  t.hasResourceProperties('AWS::SNS::Subscription', {
    Protocol: 'email',
    Endpoint: EMAIL,
    TopicArn: { Ref: topicId },
  });
  for (const a of alarms(t)) {
    expect(a.Properties.AlarmActions).toEqual([{ Ref: topicId }]);
    expect(a.Properties.OKActions).toEqual([{ Ref: topicId }]);
  }
}

describe('POC GitLab alarms', () => {
  it('publish every alarm and its recovery to one encrypted topic with the email subscription', () => {
    expectTopicWiring(gitlab);
  });

  it('watch both NLB target groups: one unhealthy target is the outage here', () => {
    const unhealthy = byMetric(gitlab, 'AWS/NetworkELB', 'UnHealthyHostCount');
    expect(unhealthy).toHaveLength(2);
    for (const a of unhealthy) {
      expect(a.Properties).toMatchObject({
        Threshold: ALARM_THRESHOLDS.targetUnhealthy.hosts,
        EvaluationPeriods: ALARM_THRESHOLDS.targetUnhealthy.periods,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        Period: 60,
      });
    }
  });

  it('watch RDS CPU, free storage and connections with thresholds from the database size', () => {
    const size = SIZINGS['1k'];
    const [cpu] = byMetric(gitlab, 'AWS/RDS', 'CPUUtilization');
    expect(cpu?.Properties).toMatchObject({ Threshold: 80, ComparisonOperator: 'GreaterThanThreshold' });
    const [storage] = byMetric(gitlab, 'AWS/RDS', 'FreeStorageSpace');
    expect(storage?.Properties).toMatchObject({
      Threshold: freeStorageThresholdGiB(size.databaseStorageGiB) * 1024 ** 3,
      ComparisonOperator: 'LessThanThreshold',
    });
    expect(freeStorageThresholdGiB(size.databaseStorageGiB)).toBe(10);
    const [connections] = byMetric(gitlab, 'AWS/RDS', 'DatabaseConnections');
    // db.m6i.large: 8 GiB → LEAST(8 GiB / 9531392, 5000) = 901; 80 % of it.
    expect(postgresMaxConnections(size.databaseInstanceType)).toBe(901);
    expect(connections?.Properties).toMatchObject({
      Threshold: 720,
      ComparisonOperator: 'GreaterThanThreshold',
    });
    for (const a of [cpu, storage, connections])
      expect(a?.Properties.Dimensions).toEqual([
        { Name: 'DBInstanceIdentifier', Value: { Ref: expect.stringMatching(/^DataPostgres/) } },
      ]);
  });

  it('watch Redis memory of the replication group', () => {
    const [redis] = byMetric(gitlab, 'AWS/ElastiCache', 'DatabaseMemoryUsagePercentage');
    expect(redis?.Properties).toMatchObject({
      Threshold: ALARM_THRESHOLDS.redisMemoryPercent.above,
      Dimensions: [{ Name: 'ReplicationGroupId', Value: { Ref: expect.stringMatching(/^DataRedis/) } }],
    });
  });
});

describe('runner fleet alarms', () => {
  it('publish to one encrypted topic with the email subscription', () => {
    expectTopicWiring(fleet);
  });

  it('alarm on the manager health, counting no report at all as unhealthy', () => {
    const [healthy] = byMetric(fleet, FLEET_METRICS_NAMESPACE, 'ManagerHealthy');
    expect(healthy?.Properties).toMatchObject({
      Dimensions: [{ Name: 'Fleet', Value: 'ci-dev' }],
      Statistic: 'Minimum',
      Threshold: 1,
      ComparisonOperator: 'LessThanThreshold',
      EvaluationPeriods: ALARM_THRESHOLDS.managerUnhealthy.periods,
      TreatMissingData: 'breaching',
    });
  });

  it('alarm on foreign (leaked) and stuck instances', () => {
    for (const name of ['ForeignInstances', 'StuckInstances']) {
      const [a] = byMetric(fleet, FLEET_METRICS_NAMESPACE, name);
      expect(a?.Properties, name).toMatchObject({
        Dimensions: [{ Name: 'Fleet', Value: 'ci-dev' }],
        Threshold: 0,
        ComparisonOperator: 'GreaterThanThreshold',
        TreatMissingData: 'notBreaching',
      });
    }
  });

  it('install the health timer on the manager, allowed to put metrics in its namespace only', () => {
    const userData = userDataOf(fleet, 'ManagerLaunchTemplate', {
      region: 'eu-west-1',
      account: '222222222222',
    });
    const script = heredoc(userData, HEALTH_SCRIPT_PATH);
    bashSyntaxCheck(script);
    expect(script).toContain("--namespace 'RunnerFleet'");
    expect(script).toContain('"Value":"ci-dev"');
    expect(script).toContain("base='http://127.0.0.1:9402'");
    expect(userData).toContain(`systemctl enable --now ${HEALTH_UNIT}.timer`);
    expect(heredoc(userData, `/etc/systemd/system/${HEALTH_UNIT}.timer`)).toContain('OnUnitActiveSec=1min');
    const put = policyStatements(fleet).filter((s) =>
      JSON.stringify(s.Action).includes('cloudwatch:PutMetricData'),
    );
    expect(put).toEqual([
      expect.objectContaining({
        Action: 'cloudwatch:PutMetricData',
        Resource: '*',
        Condition: { StringEquals: { 'cloudwatch:namespace': FLEET_METRICS_NAMESPACE } },
      }),
    ]);
  });
});

describe('POC GitLab email through SES', () => {
  it('fetches the SMTP secret at apply time and configures gitlab.rb, with no credential in the template', () => {
    const userData = userDataOf(gitlab, 'GitlabLaunchTemplate', {
      region: 'eu-west-1',
      account: '222222222222',
    });
    const apply = heredoc(userData, '/usr/local/sbin/gitlab-apply-config');
    expect(apply).toContain("secret 'ses-smtp' | jq -er .username > /etc/gitlab/secrets/smtp-username");
    const rb = heredoc(apply, '/etc/gitlab/gitlab.rb');
    expect(rb).toContain("gitlab_rails['smtp_address'] = 'email-smtp.eu-west-1.amazonaws.com'");
    expect(rb).toContain("gitlab_rails['gitlab_email_from'] = 'gitlab@gitlab.dev.example.com'");
    expect(rb).toContain(
      "gitlab_rails['smtp_password'] = File.read('/etc/gitlab/secrets/smtp-password').strip",
    );
  });

  it('lets the instance role read exactly that secret', () => {
    const read = policyStatements(gitlab).filter((s) =>
      JSON.stringify(s.Resource ?? '').includes('secret:ses-smtp'),
    );
    expect(read).toHaveLength(1);
    expect(JSON.stringify(read[0]!.Resource)).toContain('secret:ses-smtp-??????');
    expect([...(read[0]!.Action as string[])].sort()).toEqual([
      'secretsmanager:DescribeSecret',
      'secretsmanager:GetSecretValue',
    ]);
  });

  it('passes cdk-nag with alarms and SMTP on (both stacks)', () => {
    expect(synth.nagViolations(stage.gitlab)).toEqual([]);
    expect(synth.nagViolations(stage.fleet)).toEqual([]);
  });
});

describe('config', () => {
  it('refuses an alarm email that is not an address', () => {
    expect(() => readInfraConfig((k) => (k === 'alarmEmail' ? 'oncall' : undefined))).toThrow(
      /context alarmEmail must be an email address, got "oncall"/,
    );
  });
  it('refuses a database class whose memory it cannot tell, naming it', () => {
    expect(() => postgresMaxConnections('db.z9.huge')).toThrow(/db\.z9\.huge/);
    expect(postgresMaxConnections('db.r6g.xlarge')).toBe(3604);
    expect(postgresMaxConnections('db.t4g.medium')).toBe(450);
  });
});
