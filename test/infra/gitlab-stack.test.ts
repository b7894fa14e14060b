import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATA_VOLUME_TAG, GITLAB_INSTANCE_TAG } from '../../infra/gitlab/data-volume.js';
import { GitlabPocStack, type GitlabPocStackProps } from '../../infra/gitlab/gitlab-stack.js';
import { SIZINGS } from '../../infra/sizing.js';
import { appWithContext } from './cdk-context.js';
import { evaluateGitlabRb } from './gitlab-rb-ruby.js';
import {
  acknowledgements,
  asList,
  type Json,
  policyStatements,
  SYNTH_TIMEOUT_MS,
  Synthesized,
} from './synth.js';
import { bashSyntaxCheck, heredoc, resolveIntrinsics, userDataOf } from './user-data.js';

const env = { account: '222222222222', region: 'eu-west-1' };
const base: GitlabPocStackProps = {
  env,
  domainName: 'gitlab.example.com',
  natGateways: 1,
  sizing: SIZINGS['1k'],
  multiAz: false,
  allowedCidr: '0.0.0.0/0',
  edition: 'gitlab-ee',
  version: '18.2.1',
};

let synth: Synthesized;
let poc: GitlabPocStack;
let t: Template;
/** The other preset: 2k users, Multi-AZ, two NAT gateways, imported certificate and a hosted zone. */
let ha: Template;

beforeAll(() => {
  const app = appWithContext();
  poc = new GitlabPocStack(app, 'Poc', base);
  const haStack = new GitlabPocStack(app, 'PocHa', {
    ...base,
    sizing: SIZINGS['2k'],
    multiAz: true,
    natGateways: 2,
    version: '18.5.0',
    deployedVersion: '18.2.1',
    certificateArn: 'arn:aws:acm:eu-west-1:222222222222:certificate/00000000-0000-0000-0000-000000000000',
    hostedZone: { id: 'Z0123456789ABCDEFGHIJ', name: 'example.com' },
  });
  synth = new Synthesized(app);
  t = synth.template(poc);
  ha = synth.template(haStack);
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

/** One more stack, synthesized on its own (an App synthesizes every stack it holds). */
const synthOne = (stack: GitlabPocStack) =>
  Template.fromStack(stack, { skipCyclicalDependenciesCheck: true });

const resourcesOf = (template: Template, type: string) =>
  Object.values(template.findResources(type)) as { Properties: Record<string, Json> }[];
const ref = (template: Template, type: string) => ({ Ref: Object.keys(template.findResources(type))[0] });

describe('GitLab POC stack: network', () => {
  it('has public, private and isolated subnets in two AZs, one NAT gateway (or two)', () => {
    t.resourceCountIs('AWS::EC2::VPC', 1);
    t.resourceCountIs('AWS::EC2::Subnet', 6);
    t.resourceCountIs('AWS::EC2::NatGateway', 1);
    ha.resourceCountIs('AWS::EC2::NatGateway', 2);
    const zones = resourcesOf(t, 'AWS::EC2::Subnet').map((s) =>
      JSON.stringify(s.Properties.AvailabilityZone),
    );
    expect(new Set(zones).size).toBe(2);
    // Zones come from Fn::GetAZs at deploy time: no AZ lookup, no hard-coded zone.
    expect(zones.every((z) => z.includes('Fn::GetAZs'))).toBe(true);
  });

  it('has an S3 gateway endpoint and the Session Manager interface endpoints', () => {
    t.hasResourceProperties('AWS::EC2::VPCEndpoint', {
      VpcEndpointType: 'Gateway',
      ServiceName: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['.s3'])]) }),
    });
    for (const service of ['ssm', 'ssmmessages', 'ec2messages']) {
      t.hasResourceProperties('AWS::EC2::VPCEndpoint', {
        VpcEndpointType: 'Interface',
        ServiceName: `com.amazonaws.eu-west-1.${service}`,
        PrivateDnsEnabled: true,
      });
    }
  });

  it('logs VPC flows to S3', () => {
    t.hasResourceProperties('AWS::EC2::FlowLog', { LogDestinationType: 's3', TrafficType: 'ALL' });
  });
});

describe('GitLab POC stack: load balancer', () => {
  it('is an internet-facing NLB with its own security group and access logs', () => {
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', {
      Type: 'network',
      Scheme: 'internet-facing',
      SecurityGroups: Match.anyValue(),
      LoadBalancerAttributes: Match.arrayWith([{ Key: 'access_logs.s3.enabled', Value: 'true' }]),
    });
  });

  it('listens on TLS 443 with the ACM certificate, TCP 80 and TCP 22', () => {
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 443,
      Protocol: 'TLS',
      Certificates: [{ CertificateArn: ref(t, 'AWS::CertificateManager::Certificate') }],
      SslPolicy: Match.stringLikeRegexp('TLS'),
    });
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', { Port: 80, Protocol: 'TCP' });
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', { Port: 22, Protocol: 'TCP' });
    t.resourceCountIs('AWS::ElasticLoadBalancingV2::Listener', 3);
  });

  it('requests a DNS-validated certificate, or uses the imported one', () => {
    t.hasResourceProperties('AWS::CertificateManager::Certificate', {
      DomainName: 'gitlab.example.com',
      ValidationMethod: 'DNS',
    });
    ha.resourceCountIs('AWS::CertificateManager::Certificate', 0);
    ha.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 443,
      Certificates: [{ CertificateArn: Match.stringLikeRegexp('^arn:aws:acm:') }],
    });
    ha.hasResourceProperties('AWS::Route53::RecordSet', { Name: 'gitlab.example.com.', Type: 'A' });
  });

  it('health-checks /-/readiness over HTTP', () => {
    t.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
      Protocol: 'TCP',
      Port: 80,
      HealthCheckProtocol: 'HTTP',
      HealthCheckPath: '/-/readiness',
    });
  });
});

describe('GitLab POC stack: GitLab instance', () => {
  it('runs from a launch template with IMDSv2 required and encrypted volumes', () => {
    t.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({
        MetadataOptions: Match.objectLike({ HttpTokens: 'required', HttpPutResponseHopLimit: 1 }),
        BlockDeviceMappings: [
          Match.objectLike({ Ebs: Match.objectLike({ Encrypted: true, VolumeType: 'gp3' }) }),
        ],
        IamInstanceProfile: Match.anyValue(),
        InstanceType: 'c6i.2xlarge',
      }),
    });
    ha.hasResourceProperties('AWS::EC2::LaunchTemplate', {
      LaunchTemplateData: Match.objectLike({ InstanceType: 'm6i.4xlarge' }),
    });
  });

  it('takes its AMI from a public SSM parameter at deploy time', () => {
    const params = Object.values(t.toJSON().Parameters ?? {}) as { Type: string; Default: string }[];
    expect(
      params.some((p) => p.Type.includes('AWS::SSM::Parameter::Value') && p.Default.includes('al2023')),
    ).toBe(true);
  });

  it('is a self-healing group of one behind all three target groups', () => {
    t.hasResourceProperties('AWS::AutoScaling::AutoScalingGroup', {
      MinSize: '1',
      MaxSize: '1',
      LaunchTemplate: Match.anyValue(),
    });
    const [group] = resourcesOf(t, 'AWS::AutoScaling::AutoScalingGroup');
    expect(group!.Properties.TargetGroupARNs).toHaveLength(3);
  });

  it('has Session Manager and S3 access to exactly the GitLab buckets', () => {
    t.hasResourceProperties('AWS::IAM::Role', {
      ManagedPolicyArns: [
        Match.objectLike({
          'Fn::Join': Match.arrayWith([Match.arrayWith([':iam::aws:policy/AmazonSSMManagedInstanceCore'])]),
        }),
      ],
    });
    const statements = policyStatements(t);
    const s3 = statements.filter((s) =>
      asList(s.Action as string | string[]).some((a) => a.startsWith('s3:')),
    );
    const bucketIds = Object.keys(t.findResources('AWS::S3::Bucket')).filter((id) =>
      id.startsWith('ObjectStorage'),
    );
    expect(bucketIds).toHaveLength(10);
    for (const s of s3) {
      const resources = JSON.stringify(s.Resource);
      expect(resources).not.toContain('"*"');
      for (const id of bucketIds) expect(resources).toContain(id);
      expect(resources).not.toContain('Logs');
    }
    // The one unscoped action reads volume state (DescribeVolumes has no resource-level permissions).
    const unscoped = statements.filter((s) => s.Resource === '*');
    expect(unscoped.map((s) => s.Action)).toEqual(['ec2:DescribeVolumes']);
  });

  it('boots with a script that names secrets but holds none', () => {
    const [template] = resourcesOf(t, 'AWS::EC2::LaunchTemplate');
    const userData = JSON.stringify(template!.Properties.LaunchTemplateData.UserData);
    expect(userData).toContain('aws secretsmanager get-secret-value');
    expect(userData).toContain('use_iam_profile');
    expect(userData).not.toMatch(/resolve:secretsmanager|SecretString\\":|MasterUserPassword/);
  });
});

describe('GitLab POC stack: the rendered gitlab.rb and boot script', () => {
  it('the boot script, with deploy-time values, is valid bash', () => {
    bashSyntaxCheck(userDataOf(t, 'GitlabLaunchTemplate', env));
  });

  it('the gitlab.rb it writes evaluates in Ruby to the stack’s endpoints and buckets', () => {
    const g = evaluateGitlabRb(heredoc(userDataOf(t, 'GitlabLaunchTemplate', env), '/etc/gitlab/gitlab.rb'));
    expect(g.external_url).toBe('https://gitlab.example.com');
    expect(g.gitlab_rails.db_host).toMatch(/\.rds\.amazonaws\.com$/);
    expect(g.gitlab_rails.db_port).toBe('5432');
    expect(g.gitlab_rails.redis_host).toMatch(/\.cache\.amazonaws\.com$/);
    expect(g.gitlab_rails.object_store.connection.region).toBe('eu-west-1');
    const buckets = Object.values(g.gitlab_rails.object_store.objects).map((o) => (o as Json).bucket);
    expect(new Set(buckets).size).toBe(buckets.length);
    expect(g.gitlab_rails.backup_upload_remote_directory).toMatch(/^stack-/);
  });
});

describe('GitLab POC stack: runners keep reaching GitLab when allowedCidr is narrowed', () => {
  it('admits the NAT gateways’ addresses on 443 and 22 besides the allowed range', () => {
    const app = appWithContext();
    const narrow = synthOne(new GitlabPocStack(app, 'Narrow', { ...base, allowedCidr: '203.0.113.0/24' }));
    const [sg] = Object.entries(narrow.findResources('AWS::EC2::SecurityGroup')).filter(([id]) =>
      id.startsWith('LoadBalancerSecurityGroup'),
    ) as [string, Json][];
    const ingress = sg![1].Properties.SecurityGroupIngress as Json[];
    const fromNat = ingress.filter((r) => JSON.stringify(r.CidrIp).includes('EIP'));
    expect(fromNat.map((r) => r.FromPort).sort()).toEqual([22, 443]);
    expect(fromNat[0].CidrIp).toEqual({ 'Fn::Join': ['', [{ Ref: expect.stringMatching(/EIP/) }, '/32']] });
    expect(ingress.filter((r) => r.CidrIp === '203.0.113.0/24')).toHaveLength(3);
    // Open to all: nothing to add.
    const open = resourcesOf(t, 'AWS::EC2::SecurityGroup').flatMap(
      (g) => g.Properties.SecurityGroupIngress ?? [],
    );
    expect(JSON.stringify(open)).not.toContain('EIP');
  });
});

describe('GitLab POC stack: data survives replacement', () => {
  it('keeps /var/opt/gitlab on its own encrypted gp3 volume, snapshotted on delete', () => {
    const volumes = Object.values(t.findResources('AWS::EC2::Volume')) as Json[];
    expect(volumes).toHaveLength(1);
    expect(volumes[0].Properties).toMatchObject({
      Encrypted: true,
      VolumeType: 'gp3',
      Size: SIZINGS['1k'].gitlabRootVolumeGiB,
    });
    expect(volumes[0].DeletionPolicy).toBe('Snapshot');
    expect(volumes[0].Properties.Tags).toContainEqual({ Key: DATA_VOLUME_TAG, Value: 'Poc' });
    // The instance's root volume is small and disposable now.
    const [lt] = resourcesOf(t, 'AWS::EC2::LaunchTemplate');
    expect(lt!.Properties.LaunchTemplateData.BlockDeviceMappings[0].Ebs).toMatchObject({
      VolumeSize: 30,
      DeleteOnTermination: true,
    });
  });

  it('runs the instance only in the volume’s AZ and attaches it at boot, with rights on that volume only', () => {
    const [group] = resourcesOf(t, 'AWS::AutoScaling::AutoScalingGroup');
    expect(group!.Properties.VPCZoneIdentifier).toHaveLength(1);
    const subnetId = group!.Properties.VPCZoneIdentifier[0].Ref;
    const subnet = (t.toJSON().Resources as Json)[subnetId];
    const [volume] = Object.values(t.findResources('AWS::EC2::Volume')) as Json[];
    expect(volume.Properties.AvailabilityZone).toEqual(subnet.Properties.AvailabilityZone);
    expect(group!.Properties.Tags).toContainEqual({
      Key: GITLAB_INSTANCE_TAG,
      Value: 'Poc',
      PropagateAtLaunch: true,
    });
    const attach = policyStatements(t).filter((s) =>
      asList(s.Action as string[]).includes('ec2:AttachVolume'),
    );
    expect(attach).toHaveLength(2);
    expect(JSON.stringify(attach[0]!.Resource)).toContain('DataVolume');
    expect(attach[1]!.Condition).toEqual({
      StringEquals: { [`aws:ResourceTag/${GITLAB_INSTANCE_TAG}`]: 'Poc' },
    });
    expect(userDataOf(t, 'GitlabLaunchTemplate', env)).toContain(
      'aws ec2 attach-volume --volume-id "$volume"',
    );
  });

  it('snapshots the volume every 4 hours with Data Lifecycle Manager, keeping 3 days', () => {
    t.hasResourceProperties('AWS::DLM::LifecyclePolicy', {
      State: 'ENABLED',
      PolicyDetails: Match.objectLike({
        ResourceTypes: ['VOLUME'],
        TargetTags: [{ Key: DATA_VOLUME_TAG, Value: 'Poc' }],
        Schedules: [
          Match.objectLike({
            CreateRule: { Interval: 4, IntervalUnit: 'HOURS', Times: ['00:00'] },
            RetainRule: { Count: 18 },
          }),
        ],
      }),
    });
  });

  it('keeps GitLab’s keys and SSH host keys in Secrets Manager for the next instance', () => {
    const descriptions = resourcesOf(t, 'AWS::SecretsManager::Secret').map((s) => s.Properties.Description);
    expect(descriptions).toContain(
      "The GitLab instance's SSH host keys, so a replacement instance keeps them",
    );
    const put = policyStatements(t).find((s) => s.Sid === 'StoreGitlabKeys')!;
    expect(JSON.stringify(put.Resource)).toMatch(/GitlabSecretsJson.*SshHostKeys/);
  });
});

describe('GitLab POC stack: changes apply in place', () => {
  const association = (template: Template) => resourcesOf(template, 'AWS::SSM::Association')[0]!.Properties;

  it('runs the apply script on the tagged instance through an SSM document and association', () => {
    const [doc] = resourcesOf(t, 'AWS::SSM::Document');
    expect(doc!.Properties.DocumentType).toBe('Command');
    const command = resolveIntrinsics(
      { 'Fn::Join': ['\n', doc!.Properties.Content.mainSteps[0].inputs.runCommand] },
      t,
      env,
    );
    bashSyntaxCheck(command);
    expect(command).toContain('gitlab-ctl reconfigure');
    expect(command).toContain('dnf install -y gitlab-ee-18.2.1-ee.0');
    expect(association(t)).toMatchObject({
      Name: { Ref: expect.stringMatching(/^ApplyConfiguration/) },
      Targets: [{ Key: `tag:${GITLAB_INSTANCE_TAG}`, Values: ['Poc'] }],
      ApplyOnlyAtCronInterval: false,
    });
  });

  it('a configuration change changes the association (which runs at once), not the instance', () => {
    expect(association(t).Parameters.configHash).not.toEqual(association(ha).Parameters.configHash);
    for (const template of [t, ha]) {
      const [group] = Object.values(template.findResources('AWS::AutoScaling::AutoScalingGroup')) as Json[];
      expect(group.UpdatePolicy?.AutoScalingReplacingUpdate).toBeUndefined();
      expect(group.UpdatePolicy?.AutoScalingRollingUpdate).toBeUndefined();
    }
  });

  it('refuses at synth a version that skips a required upgrade stop or needs another PostgreSQL', () => {
    const app = appWithContext();
    expect(
      () => new GitlabPocStack(app, 'Skip', { ...base, version: '18.5.0', deployedVersion: '17.11.3' }),
    ).toThrow(/GitLab 17.11.3 → 18.5.0 skips the required upgrade stop 18.2/);
    expect(() => new GitlabPocStack(app, 'Pg', { ...base, version: '19.0.0', postgresMajor: 16 })).toThrow(
      /GitLab 19.0.0 runs on PostgreSQL 17, but postgresMajor is 16/,
    );
  });
});

describe('GitLab POC stack: data stores', () => {
  it('has an encrypted, private PostgreSQL whose password lives in Secrets Manager', () => {
    t.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      StorageEncrypted: true,
      PubliclyAccessible: false,
      MultiAZ: false,
      DeletionProtection: true,
      MasterUserPassword: Match.objectLike({
        'Fn::Join': Match.arrayWith([Match.arrayWith([Match.stringLikeRegexp('resolve:secretsmanager')])]),
      }),
    });
    ha.hasResourceProperties('AWS::RDS::DBInstance', { MultiAZ: true });
    t.hasResourceProperties('AWS::RDS::DBParameterGroup', { Parameters: { 'rds.force_ssl': '1' } });
  });

  it('has Redis with cluster mode disabled, transit and at-rest encryption and an AUTH token', () => {
    t.hasResourceProperties('AWS::ElastiCache::ReplicationGroup', {
      Engine: 'redis',
      NumCacheClusters: 1,
      TransitEncryptionEnabled: true,
      AtRestEncryptionEnabled: true,
      AuthToken: Match.objectLike({
        'Fn::Join': Match.arrayWith([Match.arrayWith([Match.stringLikeRegexp('resolve:secretsmanager')])]),
      }),
    });
    const [redis] = resourcesOf(t, 'AWS::ElastiCache::ReplicationGroup');
    expect(redis!.Properties.NumNodeGroups).toBeUndefined();
    ha.hasResourceProperties('AWS::ElastiCache::ReplicationGroup', {
      NumCacheClusters: 2,
      AutomaticFailoverEnabled: true,
      MultiAZEnabled: true,
    });
  });
});

describe('GitLab POC stack: buckets', () => {
  it('has one bucket per object type, backups and logs: all private, encrypted, TLS-only', () => {
    const buckets = t.findResources('AWS::S3::Bucket');
    expect(Object.keys(buckets)).toHaveLength(11);
    const policies = resourcesOf(t, 'AWS::S3::BucketPolicy');
    for (const [id, bucket] of Object.entries(buckets) as [string, { Properties: Record<string, Json> }][]) {
      expect(bucket.Properties.PublicAccessBlockConfiguration, id).toEqual({
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      });
      expect(bucket.Properties.BucketEncryption, id).toBeDefined();
      const policy = policies.find(
        (p) => JSON.stringify(p.Properties.Bucket) === JSON.stringify({ Ref: id }),
      );
      const statements = policy?.Properties.PolicyDocument.Statement as Record<string, Json>[];
      expect(
        statements.some((s) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'),
        id,
      ).toBe(true);
    }
  });

  it('versions backups and expires them with a lifecycle rule', () => {
    t.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      LifecycleConfiguration: {
        Rules: [
          Match.objectLike({
            Status: 'Enabled',
            ExpirationInDays: 30,
            NoncurrentVersionExpiration: Match.anyValue(),
          }),
        ],
      },
    });
  });
});

describe('GitLab POC stack: security groups per tier', () => {
  it('admits each tier only from the tier in front of it', () => {
    const groups = t.findResources('AWS::EC2::SecurityGroup');
    const idOf = (prefix: string) => Object.keys(groups).find((id) => id.startsWith(prefix))!;
    const lb = idOf('LoadBalancerSecurityGroup');
    const gitlab = idOf('GitlabSecurityGroup');
    const ingressFrom = (target: string) =>
      resourcesOf(t, 'AWS::EC2::SecurityGroupIngress').filter(
        (r) => JSON.stringify(r.Properties.GroupId) === JSON.stringify({ 'Fn::GetAtt': [target, 'GroupId'] }),
      );
    const gitlabIngress = ingressFrom(gitlab);
    expect(gitlabIngress.map((r) => r.Properties.FromPort).sort()).toEqual([22, 80, 8080]);
    for (const r of gitlabIngress)
      expect(r.Properties.SourceSecurityGroupId).toEqual({ 'Fn::GetAtt': [lb, 'GroupId'] });
    for (const [prefix, port] of [
      ['DataDatabaseSecurityGroup', 5432],
      ['DataRedisSecurityGroup', 6379],
    ] as const) {
      const rules = ingressFrom(idOf(prefix));
      expect(rules.map((r) => [r.Properties.FromPort, r.Properties.SourceSecurityGroupId])).toEqual([
        [port, { 'Fn::GetAtt': [gitlab, 'GroupId'] }],
      ]);
    }
    expect(
      groups[lb]!.Properties.SecurityGroupIngress.map((r: { FromPort: number }) => r.FromPort).sort(),
    ).toEqual([22, 443, 80]);
  });

  it('never puts the load balancer group on an instance', () => {
    const [template] = resourcesOf(t, 'AWS::EC2::LaunchTemplate');
    const groups = JSON.stringify(template!.Properties.LaunchTemplateData.SecurityGroupIds);
    expect(groups).toContain('GitlabSecurityGroup');
    expect(groups).not.toContain('LoadBalancer');
  });
});

describe('GitLab POC stack: checks', () => {
  it('has no IAM users or access keys', () => {
    t.resourceCountIs('AWS::IAM::User', 0);
    t.resourceCountIs('AWS::IAM::AccessKey', 0);
  });

  it('passes cdk-nag AwsSolutions with every acknowledgement explained', () => {
    expect(synth.nagViolations(poc)).toEqual([]);
    for (const a of acknowledgements(poc))
      expect(a.reason.length, `${a.id} at ${a.path}`).toBeGreaterThan(40);
  });

  it('synthesizes without CloudFormation-validate findings', () => {
    expect(synth.validationViolations()).toEqual([]);
  });
});
