/**
 * The 3k size, synthesized once as a Dev stage with `size=3k` (the GitLab stack and the fleet on
 * its VPC): template assertions for the reference architecture's layout, cdk-nag, CloudFormation
 * validation and cfn-lint on the written template.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Template } from 'aws-cdk-lib/assertions';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataStores } from '../../infra/gitlab/data-stores.js';
import { GitlabPocStack } from '../../infra/gitlab/gitlab-stack.js';
import { GITALY_VOLUME_TAG, GitlabHaStack } from '../../infra/gitlab/ha/ha-stack.js';
import { ROLE_TAG } from '../../infra/gitlab/ha/node-group.js';
import { HA_3K } from '../../infra/gitlab/ha/sizes.js';
import { GitlabLoadBalancer } from '../../infra/gitlab/load-balancer.js';
import { Network } from '../../infra/gitlab/network.js';
import { ObjectStorage } from '../../infra/gitlab/object-storage.js';
import type { RunnerFleetStage } from '../../infra/stage.js';
import { devStageWith } from './cdk-context.js';
import { assemblyTemplates, scanTemplate } from './secret-scan.js';
import {
  acknowledgements,
  asList,
  type Json,
  policyStatements,
  SYNTH_TIMEOUT_MS,
  Synthesized,
} from './synth.js';

let synth: Synthesized;
let stage: RunnerFleetStage;
let t: Template;
let json: Json;

beforeAll(() => {
  const dev = devStageWith({ size: '3k', smtpSecretName: 'ses-smtp' });
  stage = dev.stage;
  synth = new Synthesized(dev.app);
  t = synth.template(stage.gitlab);
  json = t.toJSON();
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

type Resource = { Type: string; Properties: Record<string, Json>; [k: string]: Json };
const resources = (type: string) => Object.entries(t.findResources(type)) as [string, Resource][];
const roleOf = (r: Resource) =>
  asList(r.Properties.Tags as { Key: string; Value: string }[]).find((tag) => tag.Key === ROLE_TAG)?.Value;
const groupsOf = (role: string) =>
  resources('AWS::AutoScaling::AutoScalingGroup').filter(([, r]) => roleOf(r) === role);
const launchTemplateOf = (group: Resource) =>
  json.Resources[group.Properties.LaunchTemplate.LaunchTemplateId.Ref] as Resource;
const userDataOf = (group: Resource) =>
  JSON.stringify(launchTemplateOf(group).Properties.LaunchTemplateData.UserData);
const sgId = (prefix: string) =>
  Object.keys(t.findResources('AWS::EC2::SecurityGroup')).find((id) => id.startsWith(prefix))!;
const ingressTo = (groupId: string) =>
  resources('AWS::EC2::SecurityGroupIngress')
    .map(([, r]) => r.Properties)
    .filter((p) => JSON.stringify(p.GroupId) === JSON.stringify({ 'Fn::GetAtt': [groupId, 'GroupId'] }));

describe('size 3k: the stage', () => {
  it('builds the HA stack for size=3k and runs the fleet on its VPC', () => {
    expect(stage.gitlab).toBeInstanceOf(GitlabHaStack);
    expect(stage.fleet.dependencies).toContain(stage.gitlab);
  });

  it("is a size, not a fork: the POC's network, load balancer, data store and bucket constructs serve it", () => {
    const poc = devStageWith({}).stage;
    expect(poc.gitlab).toBeInstanceOf(GitlabPocStack);
    for (const [id, type] of [
      ['Network', Network],
      ['LoadBalancer', GitlabLoadBalancer],
      ['Data', DataStores],
      ['ObjectStorage', ObjectStorage],
    ] as const) {
      expect(poc.gitlab.node.findChild(id), `POC ${id}`).toBeInstanceOf(type);
      expect(stage.gitlab.node.findChild(id), `3k ${id}`).toBeInstanceOf(type);
    }
    // The job AMI and fleet stacks are the same classes on either size's VPC.
    expect(poc.fleet.constructor).toBe(stage.fleet.constructor);
    expect(poc.jobAmi.constructor).toBe(stage.jobAmi.constructor);
  });
});

describe('size 3k: nodes', () => {
  it('has the reference architecture node counts and AWS instance types', () => {
    const expected = {
      rails: [3, 'c5.2xlarge'],
      sidekiq: [2, 'm5.xlarge'],
      praefect: [3, 'c5.large'],
    } as const;
    for (const [role, [count, type]] of Object.entries(expected)) {
      const groups = groupsOf(role);
      expect(groups, role).toHaveLength(1);
      const [, group] = groups[0]!;
      expect([group.Properties.MinSize, group.Properties.MaxSize], role).toEqual([
        String(count),
        String(count),
      ]);
      expect(launchTemplateOf(group).Properties.LaunchTemplateData.InstanceType, role).toBe(type);
      // Spread over the three private subnets (one per AZ).
      expect(group.Properties.VPCZoneIdentifier, role).toHaveLength(3);
    }
    const gitaly = groupsOf('gitaly');
    expect(gitaly).toHaveLength(3);
    const subnets = gitaly.map(([, g]) => {
      expect([g.Properties.MinSize, g.Properties.MaxSize]).toEqual(['1', '1']);
      expect(launchTemplateOf(g).Properties.LaunchTemplateData.InstanceType).toBe('m5.xlarge');
      expect(g.Properties.VPCZoneIdentifier).toHaveLength(1);
      return JSON.stringify(g.Properties.VPCZoneIdentifier[0]);
    });
    expect(new Set(subnets).size).toBe(3);
  });

  it('runs every node with IMDSv2 only and an encrypted root volume', () => {
    const templates = resources('AWS::EC2::LaunchTemplate');
    expect(templates).toHaveLength(6);
    for (const [id, lt] of templates) {
      const data = lt.Properties.LaunchTemplateData;
      expect(data.MetadataOptions.HttpTokens, id).toBe('required');
      expect(data.BlockDeviceMappings[0].Ebs.Encrypted, id).toBe(true);
    }
  });

  it('updates Rails, Sidekiq, Praefect and Gitaly one node at a time, waiting for each node to signal', () => {
    for (const [id, group] of resources('AWS::AutoScaling::AutoScalingGroup').filter(([, g]) => roleOf(g))) {
      const size = Number(group.Properties.MinSize);
      const rolling = group.UpdatePolicy.AutoScalingRollingUpdate;
      expect(rolling.MaxBatchSize, id).toBe(1);
      expect(rolling.MinInstancesInService, id).toBe(size - 1);
      expect(rolling.WaitOnResourceSignals, id).toBe(true);
      expect(group.CreationPolicy.ResourceSignal.Count, id).toBe(size);
      // The boot script signals exactly this group.
      expect(userDataOf(group), id).toContain(`--resource '${id}'`);
    }
    // The Gitaly groups are chained, so an update never replaces two Gitaly nodes at once.
    const gitaly = groupsOf('gitaly');
    for (const [i, [, group]] of gitaly.entries()) {
      if (i > 0) expect(asList(group.DependsOn)).toContain(gitaly[i - 1]![0]);
    }
    const [, praefect] = groupsOf('praefect')[0]!;
    for (const [id] of gitaly) expect(asList(praefect.DependsOn)).toContain(id);
  });
});

describe('size 3k: load balancers', () => {
  it('puts Rails behind the external NLB (TLS 443 with ACM, git over SSH) health-checked on /-/readiness', () => {
    const [, rails] = groupsOf('rails')[0]!;
    const targetGroups = asList(rails.Properties.TargetGroupARNs).map((r: Json) => r.Ref as string);
    expect(targetGroups).toHaveLength(4);
    const web = json.Resources[targetGroups.find((id) => id.startsWith('LoadBalancerWeb'))!];
    expect(web.Properties).toMatchObject({
      Port: 80,
      HealthCheckPath: '/-/readiness',
      HealthCheckProtocol: 'HTTP',
    });
    const external = resources('AWS::ElasticLoadBalancingV2::LoadBalancer').find(
      ([, lb]) => lb.Properties.Scheme === 'internet-facing',
    )!;
    const listeners = resources('AWS::ElasticLoadBalancingV2::Listener').filter(
      ([, l]) => l.Properties.LoadBalancerArn.Ref === external[0],
    );
    expect(listeners.map(([, l]) => [l.Properties.Port, l.Properties.Protocol]).sort()).toEqual([
      [22, 'TCP'],
      [443, 'TLS'],
      [80, 'TCP'],
    ]);
  });

  it('terminates TLS on 443 with the stage certificate from ACM', () => {
    const [certId] = resources('AWS::CertificateManager::Certificate').map(([id]) => id);
    expect(certId).toBeDefined();
    const tls = resources('AWS::ElasticLoadBalancingV2::Listener').filter(
      ([, l]) => l.Properties.Port === 443,
    );
    expect(tls).toHaveLength(1);
    expect(tls[0]![1].Properties).toMatchObject({
      Protocol: 'TLS',
      Certificates: [{ CertificateArn: { Ref: certId } }],
    });
  });

  it('puts Praefect behind an internal NLB that only Rails, Sidekiq and Gitaly reach', () => {
    const internal = resources('AWS::ElasticLoadBalancingV2::LoadBalancer').filter(
      ([, lb]) => lb.Properties.Scheme === 'internal',
    );
    expect(internal).toHaveLength(1);
    const [lbId] = internal[0]!;
    const listener = resources('AWS::ElasticLoadBalancingV2::Listener').find(
      ([, l]) => l.Properties.LoadBalancerArn.Ref === lbId && l.Properties.Port === 2305,
    )!;
    const targetGroup = listener[1].Properties.DefaultActions[0].TargetGroupArn.Ref as string;
    const [, praefect] = groupsOf('praefect')[0]!;
    expect(praefect.Properties.TargetGroupARNs).toEqual([{ Ref: targetGroup }]);
    // Only the Praefect group is in that target group.
    for (const [, group] of resources('AWS::AutoScaling::AutoScalingGroup').filter(
      ([, g]) => roleOf(g) !== 'praefect',
    ))
      expect(JSON.stringify(group.Properties.TargetGroupARNs ?? [])).not.toContain(targetGroup);
    const internalSg = sgId('InternalLoadBalancerSecurityGroup');
    const sources = ingressTo(internalSg)
      .filter((p) => p.FromPort === 2305)
      .map((p) => p.SourceSecurityGroupId['Fn::GetAtt'][0] as string)
      .sort();
    expect(sources).toEqual(
      [sgId('GitalySecurityGroup'), sgId('RailsSecurityGroup'), sgId('SidekiqSecurityGroup')].sort(),
    );
    // Clients point at the internal NLB's name, never at a node.
    expect(userDataOf(groupsOf('rails')[0]![1])).toContain(
      `tcp://",{"Fn::GetAtt":["${lbId}","DNSName"]},":2305`,
    );
    expect(
      ingressTo(sgId('PraefectSecurityGroup')).map((p) => p.SourceSecurityGroupId['Fn::GetAtt'][0]),
    ).toEqual([internalSg]);
  });

  it('gives Praefect every Gitaly node by its own name and a replication factor of 3', () => {
    const praefect = userDataOf(groupsOf('praefect')[0]![1]);
    expect(praefect).toContain('default_replication_factor: 3,');
    for (const i of [1, 2, 3])
      expect(praefect).toContain(
        `storage: 'gitaly-${i}',\\n          address: 'tcp://gitaly-${i}.gitaly.gitlab.internal:8075'`,
      );
  });
});

describe('size 3k: Gitaly storage', () => {
  it('gives each Gitaly node its own encrypted gp3 volume in its own zone, kept as a snapshot on deletion', () => {
    const volumes = resources('AWS::EC2::Volume');
    expect(volumes).toHaveLength(3);
    const tagValues = volumes.map(([id, v]) => {
      expect(v.Properties).toMatchObject({ Encrypted: true, VolumeType: 'gp3', Size: 500, Iops: 8000 });
      expect(v.DeletionPolicy, id).toBe('Snapshot');
      // A change that replaces the volume keeps a snapshot of the old one too.
      expect(v.UpdateReplacePolicy, id).toBe('Snapshot');
      return JSON.stringify(v.Properties.Tags.find((tag: Json) => tag.Key === GITALY_VOLUME_TAG).Value);
    });
    expect(new Set(tagValues).size).toBe(3);
    // Each volume's zone is the zone of the subnet its node's group is pinned to.
    const subnetAz = (subnet: Json) => JSON.stringify(json.Resources[subnet.Ref].Properties.AvailabilityZone);
    const groupAzs = groupsOf('gitaly')
      .map(([, g]) => subnetAz(g.Properties.VPCZoneIdentifier[0]))
      .sort();
    expect(volumes.map(([, v]) => JSON.stringify(v.Properties.AvailabilityZone)).sort()).toEqual(groupAzs);
    // Each node's boot script looks up exactly its own volume by tag.
    const scripts = groupsOf('gitaly').map(([, g]) => userDataOf(g));
    for (const [i, script] of scripts.entries()) expect(script).toContain(`gitaly-${i + 1}`);
    expect(scripts.every((s) => s.includes(`Name=tag:${GITALY_VOLUME_TAG},Values=`))).toBe(true);
  });

  it('lets Gitaly nodes attach only Gitaly-tagged volumes to Gitaly-tagged instances', () => {
    const attach = policyStatements(t).filter((s) =>
      asList(s.Action as string[]).includes('ec2:AttachVolume'),
    );
    expect(attach).toHaveLength(1);
    expect(attach[0]!.Condition).toEqual({ StringEquals: { [`aws:ResourceTag/${ROLE_TAG}`]: 'gitaly' } });
  });

  it('lets Gitaly write server-side repository backups to the backup bucket and to no other bucket', () => {
    const gitalyPolicies = resources('AWS::IAM::Policy').filter(([, p]) =>
      JSON.stringify(p.Properties.Roles).includes('GitalyInstanceRole'),
    );
    const s3 = gitalyPolicies.flatMap(([, p]) =>
      (p.Properties.PolicyDocument.Statement as Json[]).filter((st) =>
        asList(st.Action).some((a: string) => a.startsWith('s3:')),
      ),
    );
    expect(s3).toHaveLength(1);
    const buckets = JSON.stringify(s3[0].Resource).match(/ObjectStorage[A-Za-z]+[0-9A-F]{8}/g);
    expect(new Set(buckets)).toEqual(new Set([expect.stringMatching(/^ObjectStorageBackups/)]));
  });

  it('gitaly port 8075 is open to Praefect and the other Gitaly nodes only', () => {
    const sources = ingressTo(sgId('GitalySecurityGroup')).map(
      (p) => p.SourceSecurityGroupId['Fn::GetAtt'][0],
    );
    expect(sources.sort()).toEqual([sgId('GitalySecurityGroup'), sgId('PraefectSecurityGroup')].sort());
  });
});

describe('size 3k: data stores', () => {
  it('has GitLab and Praefect PostgreSQL as separate Multi-AZ RDS instances', () => {
    const dbs = resources('AWS::RDS::DBInstance').map(([, r]) => r.Properties);
    expect(dbs.map((p) => p.DBName).sort()).toEqual(['gitlabhq_production', 'praefect_production']);
    for (const p of dbs) {
      expect(p).toMatchObject({
        MultiAZ: true,
        StorageEncrypted: true,
        PubliclyAccessible: false,
        DeletionProtection: true,
      });
    }
    expect(dbs.find((p) => p.DBName === 'gitlabhq_production')!.DBInstanceClass).toBe('db.m5.large');
    const praefectDbSg = sgId('PraefectDatabaseSecurityGroup');
    expect(ingressTo(praefectDbSg).map((p) => p.SourceSecurityGroupId['Fn::GetAtt'][0])).toEqual([
      sgId('PraefectSecurityGroup'),
    ]);
  });

  it('has Redis with a primary and two replicas across zones and automatic failover', () => {
    t.hasResourceProperties('AWS::ElastiCache::ReplicationGroup', {
      NumCacheClusters: 3,
      AutomaticFailoverEnabled: true,
      MultiAZEnabled: true,
      CacheNodeType: 'cache.m5.large',
      TransitEncryptionEnabled: true,
    });
  });

  it('has one S3 bucket per object type and alarms in place of the monitoring node', () => {
    const buckets = Object.keys(t.findResources('AWS::S3::Bucket')).filter((id) =>
      id.startsWith('ObjectStorage'),
    );
    expect(buckets).toHaveLength(10);
    const alarms = resources('AWS::CloudWatch::Alarm');
    expect(alarms.length).toBeGreaterThanOrEqual(10);
    for (const [, a] of alarms) expect(a.Properties.AlarmActions).toHaveLength(1);
  });

  it('alarms on every NLB target group, both databases (CPU, storage, connections) and Redis memory', () => {
    const count = (namespace: string, metric: string) =>
      resources('AWS::CloudWatch::Alarm').filter(
        ([, a]) => a.Properties.Namespace === namespace && a.Properties.MetricName === metric,
      ).length;
    // Web, Praefect and the internal API: one unhealthy target (redundancy lost) and none healthy.
    expect(count('AWS/NetworkELB', 'UnHealthyHostCount')).toBe(3);
    expect(count('AWS/NetworkELB', 'HealthyHostCount')).toBe(3);
    for (const metric of ['CPUUtilization', 'FreeStorageSpace', 'DatabaseConnections'])
      expect(count('AWS/RDS', metric), metric).toBe(2);
    expect(count('AWS/ElastiCache', 'DatabaseMemoryUsagePercentage')).toBe(1);
    expect(Object.keys(t.findResources('AWS::SNS::Topic'))).toHaveLength(1);
  });
});

describe('size 3k: email through SES', () => {
  it('lets only the Rails and Sidekiq roles read the SMTP secret', () => {
    const readers = Object.entries(t.findResources('AWS::IAM::Policy'))
      .filter(([, p]) => JSON.stringify(p).includes('secret:ses-smtp-??????'))
      .flatMap(([, p]) => asList((p as Resource).Properties.Roles as Json[]).map((r) => JSON.stringify(r)));
    expect(readers).toHaveLength(2);
    expect(readers.join(' ')).toMatch(/RailsInstanceRole/);
    expect(readers.join(' ')).toMatch(/SidekiqInstanceRole/);
  });
});

describe('size 3k: secrets', () => {
  it('generates every secret in Secrets Manager; the only literal values are the `{}` placeholders', () => {
    const secrets = resources('AWS::SecretsManager::Secret');
    expect(secrets.length).toBeGreaterThanOrEqual(8);
    for (const [id, s] of secrets) {
      if (s.Properties.SecretString !== undefined) expect(s.Properties.SecretString, id).toBe('{}');
      else expect(s.Properties.GenerateSecretString, id).toBeDefined();
    }
  });

  it('has no secret in any template: dynamic references only where AWS services take a password', () => {
    for (const stack of [stage.gitlab, stage.fleet]) {
      const template = synth.template(stack).toJSON();
      for (const [id, r] of Object.entries(template.Resources) as [string, Resource][]) {
        const text = JSON.stringify(r.Properties ?? {});
        const uses = text.match(/resolve:secretsmanager/g)?.length ?? 0;
        if (r.Type === 'AWS::RDS::DBInstance') expect(uses, id).toBe(1);
        else if (r.Type === 'AWS::ElastiCache::ReplicationGroup') expect(uses, id).toBe(1);
        else expect(uses, id).toBe(0);
      }
    }
    for (const [id, lt] of resources('AWS::EC2::LaunchTemplate')) {
      const userData = JSON.stringify(lt.Properties.LaunchTemplateData.UserData);
      expect(userData, id).toContain('aws secretsmanager get-secret-value');
      expect(userData, id).not.toMatch(/(token|password)\\?['"]?\]? ?(=>|=|:) ?\\?['"][A-Za-z0-9]{16,}/);
    }
  });

  it('has no secret-looking value in any template of the 3k stage (GitLab, JobAmi, Fleet)', () => {
    const templates = assemblyTemplates(synth.assembly);
    expect(templates.map(([name]) => name).sort()).toEqual(['Dev-Fleet', 'Dev-GitLab', 'Dev-JobAmi']);
    expect(templates.flatMap(([name, template]) => scanTemplate(name, template))).toEqual([]);
  });

  it('lets each role read only its own secrets; only Rails may write the shared ones', () => {
    const readers = (secretPrefix: string) => {
      const roles = new Set<string>();
      for (const [, policy] of resources('AWS::IAM::Policy')) {
        for (const s of policy.Properties.PolicyDocument.Statement as Json[]) {
          if (JSON.stringify(s.Resource).includes(secretPrefix)) {
            for (const role of policy.Properties.Roles)
              roles.add((role.Ref as string).replace(/InstanceRole.*/, ''));
          }
        }
      }
      return [...roles].sort();
    };
    expect(readers('SecretsPraefectInternalToken')).toEqual(['Gitaly', 'Praefect']);
    expect(readers('SecretsPraefectExternalToken')).toEqual(['Praefect', 'Rails', 'Sidekiq']);
    expect(readers('SecretsGitlabShellSecret')).toEqual(['Gitaly', 'Rails', 'Sidekiq']);
    expect(readers('DataPostgresSecret')).toEqual(['Rails', 'Sidekiq']);
    expect(readers('PraefectPostgresSecret')).toEqual(['Praefect']);
    expect(readers('SecretsGitlabSecretsJson')).toEqual(['Rails', 'Sidekiq']);
    const writers: string[] = [];
    for (const [, policy] of resources('AWS::IAM::Policy')) {
      for (const s of policy.Properties.PolicyDocument.Statement as Json[]) {
        if (!asList(s.Action).includes('secretsmanager:PutSecretValue')) continue;
        expect(policy.Properties.Roles).toEqual([{ Ref: expect.stringMatching(/^RailsInstanceRole/) }]);
        writers.push(...asList(s.Resource).map((r: Json) => r.Ref));
      }
    }
    expect(writers.sort()).toEqual([
      expect.stringMatching(/^SecretsGitlabSecretsJson/),
      expect.stringMatching(/^SecretsRailsSshHostKeys/),
    ]);
  });
});

describe('size 3k: checks', () => {
  it('passes cdk-nag AwsSolutions with every acknowledgement explained (and so do JobAmi and Fleet on its VPC)', () => {
    expect(synth.nagViolations(stage.gitlab)).toEqual([]);
    expect(synth.nagViolations(stage.jobAmi)).toEqual([]);
    expect(synth.nagViolations(stage.fleet)).toEqual([]);
    for (const a of acknowledgements(stage.gitlab))
      expect(a.reason.length, `${a.id} at ${a.path}`).toBeGreaterThan(40);
  });

  it('synthesizes without CloudFormation-validate findings', () => {
    expect(synth.validationViolations()).toEqual([]);
  });

  it(
    'passes cfn-lint: every template of the 3k stage (GitLab, and the JobAmi and Fleet stacks on its VPC)',
    async () => {
      const dir = synth.assembly.getNestedAssembly('assembly-Dev').directory;
      const files = [stage.gitlab, stage.jobAmi, stage.fleet].map((s) => join(dir, s.templateFile));
      const run = promisify(execFile);
      const result = await run('cfn-lint', ['--format', 'parseable', ...files]).then(
        (r) => ({ code: 0, out: r.stdout }),
        (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
      );
      expect(result.out).toBe('');
      expect(result.code).toBe(0);
    },
    SYNTH_TIMEOUT_MS,
  );

  it('keeps the reference sizes unless overridden', () => {
    expect(HA_3K.rails.count).toBe(3);
  });
});

describe('3k size: PostgreSQL major and sizeOverrides', () => {
  it(
    'both databases (GitLab and Praefect) run the configured major; overridden node counts and types reach the template',
    () => {
      const overridden = Template.fromStack(
        devStageWith({
          size: '3k',
          postgresMajor: 17,
          sizeOverrides: {
            rails: { count: 4, instanceType: 'c6i.2xlarge' },
            gitaly: { dataVolumeGiB: 1000 },
          },
        }).stage.gitlab,
      );
      const railsGroup = Object.values(overridden.findResources('AWS::AutoScaling::AutoScalingGroup')).find(
        (g) => roleOf(g as Resource) === 'rails',
      ) as Resource;
      expect([railsGroup.Properties.MinSize, railsGroup.Properties.MaxSize]).toEqual(['4', '4']);
      const lt = overridden.toJSON().Resources[railsGroup.Properties.LaunchTemplate.LaunchTemplateId.Ref];
      expect(lt.Properties.LaunchTemplateData.InstanceType).toBe('c6i.2xlarge');
      for (const v of Object.values(overridden.findResources('AWS::EC2::Volume')))
        expect((v as Resource).Properties.Size).toBe(1000);
      const on17 = Object.values(overridden.findResources('AWS::RDS::DBInstance')).map((r) =>
        String((r as Resource).Properties.EngineVersion),
      );
      expect(on17).toHaveLength(2);
      for (const v of on17) expect(v).toMatch(/^17\./);
      // The default stays on 16, as in the synthesized stage above.
      for (const v of asList(resources('AWS::RDS::DBInstance')).map(([, r]) =>
        String(r.Properties.EngineVersion),
      ))
        expect(v).toMatch(/^16\./);
    },
    SYNTH_TIMEOUT_MS,
  );
});
