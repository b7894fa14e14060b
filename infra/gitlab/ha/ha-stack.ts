/**
 * GitLab's 3k reference architecture on AWS (size `3k`): Rails ×3 behind the external NLB,
 * Sidekiq ×2, Gitaly ×3 (each with its own data volume), Praefect ×3 behind an internal NLB with
 * its own RDS database, GitLab's PostgreSQL on RDS Multi-AZ, Redis on ElastiCache with automatic
 * failover, S3 for every object type, CloudWatch instead of the monitoring node. The network,
 * buckets, certificate, external load balancer and data stores are the POC's constructs.
 */
import { Duration, Fn, RemovalPolicy, Size, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as rds from 'aws-cdk-lib/aws-rds';
import * as route53 from 'aws-cdk-lib/aws-route53';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import type { DeployStage } from '../../pipeline/names.js';
import { accessLogBucket } from '../../shared/buckets.js';
import { HealthCheck } from '../../shared/health-check.js';
import { acknowledge, bucketObjectsFinding, wildcardResourceFinding } from '../../shared/nag.js';
import { applicationSettings } from '../application-settings.js';
import { DataStores, type PostgresMajor, postgresInstance } from '../data-stores.js';
import { GitlabLoadBalancer, INSTANCE_PORTS } from '../load-balancer.js';
import { Network } from '../network.js';
import { ObjectStorage } from '../object-storage.js';
import { grantSmtpSecret, type SmtpSettings } from '../smtp.js';
import { renderHaBootScript, type SecretRef } from './boot-scripts.js';
import { INTERNAL_API_PORT, InternalLoadBalancer } from './internal-load-balancer.js';
import { HaMonitoring } from './monitoring.js';
import { NodeGroup, ROLE_TAG } from './node-group.js';
import {
  GITALY_DATA_DIR,
  type HaRole,
  type HaSecretFile,
  PORTS,
  ROLE_SECRETS,
  type RoleOptions,
  renderRoleGitlabRb,
} from './role-gitlab-rb.js';
import { HaSecrets } from './secrets.js';
import { type HaSize, replicationFactor } from './sizes.js';

export interface GitlabHaStackProps extends StackProps {
  domainName: string;
  certificateArn?: string;
  hostedZone?: { id: string; name: string };
  /** The deploy stage: names the smoke test's readiness check (none without it). */
  stageName?: DeployStage;
  size: HaSize;
  allowedCidr: string;
  edition: 'gitlab-ee' | 'gitlab-ce';
  version?: string;
  /** PostgreSQL major of both databases (GitLab's and Praefect's); checked against `version` in config. */
  postgresMajor?: PostgresMajor;
  /** Subscribed to the alarm topic by email (optional). */
  alarmEmail?: string;
  /** Outgoing email through SES SMTP (../smtp.ts), from the Rails and Sidekiq nodes; unset: none. */
  smtp?: SmtpSettings;
}

export const PRAEFECT_DATABASE = { name: 'praefect_production', user: 'praefect' } as const;
/** Private zone in which each Gitaly node keeps its own name (gitaly-N.<zone>) pointed at itself. */
export const GITALY_ZONE = 'gitaly.gitlab.internal';
/** Tag whose value names a Gitaly node's data volume: `<stack name>/gitaly-N`. */
export const GITALY_VOLUME_TAG = 'runner-fleet:gitaly-storage';

export class GitlabHaStack extends Stack {
  readonly vpc: ec2.Vpc;
  readonly zones: number;

  constructor(scope: Construct, id: string, props: GitlabHaStackProps) {
    super(scope, id, props);
    const size = props.size;
    this.zones = size.zones;
    const logs = accessLogBucket(this, 'Logs');
    // One NAT gateway per zone: egress (package installs, AWS APIs) survives the loss of a zone.
    this.vpc = new Network(this, 'Network', {
      natGateways: size.zones,
      zones: size.zones,
      flowLogs: logs,
    }).vpc;
    const privateSubnets = this.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }).subnets;

    const lb = new GitlabLoadBalancer(this, 'LoadBalancer', {
      vpc: this.vpc,
      domainName: props.domainName,
      certificateArn: props.certificateArn,
      hostedZone: props.hostedZone,
      stageName: props.stageName,
      allowedCidr: props.allowedCidr,
      accessLogs: logs,
    });
    const internal = new InternalLoadBalancer(this, 'InternalLoadBalancer', {
      vpc: this.vpc,
      accessLogs: logs,
    });

    // One security group per tier; each admits only the tier in front of it.
    const group = (name: string, description: string) =>
      new ec2.SecurityGroup(this, name, { vpc: this.vpc, description, allowAllOutbound: true });
    const rails = group(
      'RailsSecurityGroup',
      'GitLab Rails: web, redirect and git over SSH from the NLBs only',
    );
    const sidekiq = group('SidekiqSecurityGroup', 'GitLab Sidekiq: no inbound traffic');
    const gitaly = group('GitalySecurityGroup', 'Gitaly: from Praefect and the other Gitaly nodes only');
    const praefect = group('PraefectSecurityGroup', 'Praefect: from the internal load balancer only');
    // Rails and Sidekiq both reach PostgreSQL and Redis: one client group for the data stores.
    const dataClients = group(
      'DataClientsSecurityGroup',
      'Clients of GitLab PostgreSQL and Redis (Rails, Sidekiq)',
    );

    for (const port of Object.values(INSTANCE_PORTS)) {
      rails.addIngressRule(lb.securityGroup, ec2.Port.tcp(port), `port ${port} from the external NLB`);
      lb.securityGroup.addEgressRule(rails, ec2.Port.tcp(port), `to Rails port ${port}`);
    }
    rails.addIngressRule(
      internal.securityGroup,
      ec2.Port.tcp(INTERNAL_API_PORT),
      'internal API from the internal NLB',
    );
    praefect.addIngressRule(
      internal.securityGroup,
      ec2.Port.tcp(PORTS.praefect),
      'Praefect from the internal NLB',
    );
    internal.securityGroup.addEgressRule(rails, ec2.Port.tcp(INTERNAL_API_PORT), 'to the Rails internal API');
    internal.securityGroup.addEgressRule(praefect, ec2.Port.tcp(PORTS.praefect), 'to Praefect');
    for (const [client, what] of [
      [rails, 'Rails'],
      [sidekiq, 'Sidekiq'],
      [gitaly, 'Gitaly'],
    ] as const) {
      internal.securityGroup.addIngressRule(client, ec2.Port.tcp(PORTS.praefect), `Praefect for ${what}`);
    }
    for (const [client, what] of [
      [gitaly, 'Gitaly'],
      [praefect, 'Praefect'],
    ] as const) {
      internal.securityGroup.addIngressRule(
        client,
        ec2.Port.tcp(INTERNAL_API_PORT),
        `internal API for ${what}`,
      );
    }
    gitaly.addIngressRule(praefect, ec2.Port.tcp(PORTS.gitaly), 'Gitaly from Praefect');
    // Replication: the target Gitaly node fetches from the source node.
    gitaly.addIngressRule(gitaly, ec2.Port.tcp(PORTS.gitaly), 'Gitaly replication between nodes');

    const data = new DataStores(this, 'Data', {
      vpc: this.vpc,
      sizing: {
        databaseInstanceType: size.database.instanceType,
        databaseStorageGiB: size.database.storageGiB,
        redisNodeType: size.redis.nodeType,
      },
      multiAz: true,
      redisNodes: size.redis.nodes,
      clients: dataClients,
      postgresMajor: props.postgresMajor ?? 16,
    });
    const praefectDb = this.praefectDatabase(size, praefect, props.postgresMajor ?? 16);
    const storage = new ObjectStorage(this, 'ObjectStorage', { accessLogs: logs });
    const secrets = new HaSecrets(this, 'Secrets');

    const gitalyZone = new route53.PrivateHostedZone(this, 'GitalyZone', {
      zoneName: GITALY_ZONE,
      vpc: this.vpc,
    });
    const gitalyNodes = Array.from({ length: size.gitaly.count }, (_, i) => ({
      storage: `gitaly-${i + 1}`,
      host: `gitaly-${i + 1}.${GITALY_ZONE}`,
      subnet: privateSubnets[i % privateSubnets.length]!,
    }));

    const secretRefs: Record<HaSecretFile, SecretRef> = {
      dbPassword: { arn: data.databaseSecret.secretArn, jsonKey: 'password' },
      redisPassword: { arn: data.redisAuthToken.secretArn },
      rootPassword: { arn: secrets.rootPassword.secretArn },
      praefectExternalToken: { arn: secrets.praefectExternalToken.secretArn },
      praefectInternalToken: { arn: secrets.praefectInternalToken.secretArn },
      praefectDbPassword: { arn: praefectDb.secret!.secretArn, jsonKey: 'password' },
      shellSecret: { arn: secrets.shellSecret.secretArn },
    };
    const secretObjects: Record<HaSecretFile, secretsmanager.ISecret> = {
      dbPassword: data.databaseSecret,
      redisPassword: data.redisAuthToken,
      rootPassword: secrets.rootPassword,
      praefectExternalToken: secrets.praefectExternalToken,
      praefectInternalToken: secrets.praefectInternalToken,
      praefectDbPassword: praefectDb.secret!,
      shellSecret: secrets.shellSecret,
    };

    const application = {
      ...applicationSettings({ domainName: props.domainName, region: this.region, data, storage }),
      internalApiUrl: internal.internalApiUrl,
      praefectAddress: internal.praefectAddress,
      smtp: props.smtp,
    };
    const common = { externalUrl: application.externalUrl, internalApiUrl: application.internalApiUrl };

    const roles = {} as Record<HaRole, iam.Role>;
    for (const role of ['rails', 'sidekiq', 'gitaly', 'praefect'] as const) {
      roles[role] = this.instanceRole(role, secretObjects);
    }
    storage.grantTo(roles.rails);
    storage.grantTo(roles.sidekiq);
    if (props.smtp) grantSmtpSecret(this, props.smtp, [roles.rails, roles.sidekiq]);
    for (const secret of [secrets.gitlabSecretsJson, secrets.sshHostKeys]) {
      secret.grantRead(roles.rails);
      roles.rails.addToPrincipalPolicy(
        new iam.PolicyStatement({
          actions: ['secretsmanager:PutSecretValue'],
          resources: [secret.secretArn],
        }),
      );
    }
    secrets.gitlabSecretsJson.grantRead(roles.sidekiq);
    this.gitalyPermissions(roles.gitaly, gitalyZone);
    // Server-side repository backups: Gitaly writes (and restores from) the backup bucket only.
    roles.gitaly.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'RepositoryBackups',
        actions: [
          's3:ListBucket',
          's3:GetObject',
          's3:PutObject',
          's3:AbortMultipartUpload',
          's3:ListMultipartUploadParts',
        ],
        resources: [storage.backups.bucketArn, storage.backups.arnForObjects('*')],
      }),
    );
    // The nightly backup runs on one Rails node: the in-service one with the lowest instance id.
    roles.rails.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'FindBackupNode',
        actions: ['autoscaling:DescribeAutoScalingInstances', 'autoscaling:DescribeAutoScalingGroups'],
        resources: ['*'],
      }),
    );
    acknowledge(roles.rails, [
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'Auto Scaling Describe* calls have no resource-level permissions; the Rails node reads its group to pick the one node that runs the nightly backup.',
      },
    ]);

    const boot =
      (role: HaRole, rb: RoleOptions, extra: Partial<Parameters<typeof renderHaBootScript>[0]> = {}) =>
      (signal: { stackName: string; logicalId: string }) =>
        renderHaBootScript({
          role,
          region: this.region,
          gitlabRb: renderRoleGitlabRb(rb),
          edition: props.edition,
          version: props.version,
          secrets: secretRefs,
          // Rails and Sidekiq send mail; only they read the SMTP secret.
          smtpSecretId: role === 'rails' || role === 'sidekiq' ? props.smtp?.secretId : undefined,
          signal,
          shared: {
            gitlabSecretsJsonArn: secrets.gitlabSecretsJson.secretArn,
            sshHostKeysArn: secrets.sshHostKeys.secretArn,
          },
          ...extra,
        });

    const railsNodes = new NodeGroup(this, 'Rails', {
      vpc: this.vpc,
      role: 'rails',
      subnets: privateSubnets,
      size: size.rails,
      securityGroups: [rails, dataClients],
      instanceRole: roles.rails,
      userData: boot('rails', { role: 'rails', options: application }),
      bootTimeout: Duration.minutes(90),
    });
    for (const targetGroup of lb.targetGroups) railsNodes.group.attachToNetworkTargetGroup(targetGroup);
    railsNodes.group.attachToNetworkTargetGroup(internal.internalApi);
    if (props.stageName) {
      // The pipeline's smoke test runs GitLab's readiness check on every Rails node.
      new HealthCheck(this, 'Readiness', {
        stage: props.stageName,
        target: 'gitlab',
        url: 'http://127.0.0.1/-/readiness',
        group: railsNodes.group,
      });
    }

    const sidekiqNodes = new NodeGroup(this, 'Sidekiq', {
      vpc: this.vpc,
      role: 'sidekiq',
      subnets: privateSubnets,
      size: size.sidekiq,
      securityGroups: [sidekiq, dataClients],
      instanceRole: roles.sidekiq,
      userData: boot('sidekiq', { role: 'sidekiq', options: application }),
      bootTimeout: Duration.minutes(120),
    });

    const praefectNodes = new NodeGroup(this, 'Praefect', {
      vpc: this.vpc,
      role: 'praefect',
      subnets: privateSubnets,
      size: size.praefect,
      securityGroups: [praefect],
      instanceRole: roles.praefect,
      userData: boot('praefect', {
        role: 'praefect',
        options: {
          ...common,
          database: {
            host: praefectDb.dbInstanceEndpointAddress,
            port: praefectDb.dbInstanceEndpointPort,
            name: PRAEFECT_DATABASE.name,
            username: PRAEFECT_DATABASE.user,
          },
          gitalyNodes: gitalyNodes.map((n) => ({
            storage: n.storage,
            address: `tcp://${n.host}:${PORTS.gitaly}`,
          })),
          replicationFactor: replicationFactor(size),
        },
      }),
    });
    praefectNodes.group.attachToNetworkTargetGroup(internal.praefect);

    const gitalyGroups = gitalyNodes.map((node, i) => {
      const volume = new ec2.Volume(this, `GitalyData${i + 1}`, {
        availabilityZone: node.subnet.availabilityZone,
        size: Size.gibibytes(size.gitaly.dataVolumeGiB),
        volumeType: ec2.EbsDeviceVolumeType.GP3,
        iops: size.gitaly.dataVolumeIops,
        throughput: size.gitaly.dataVolumeThroughputMiBps,
        encrypted: true,
        // The repositories outlive the stack: a deletion leaves a snapshot behind.
        removalPolicy: RemovalPolicy.SNAPSHOT,
      });
      const tagValue = `${this.stackName}/${node.storage}`;
      Tags.of(volume).add(GITALY_VOLUME_TAG, tagValue);
      Tags.of(volume).add(ROLE_TAG, 'gitaly');
      return new NodeGroup(this, `Gitaly${i + 1}`, {
        vpc: this.vpc,
        role: 'gitaly',
        // One zone per node: an EBS volume lives in exactly one zone.
        subnets: [node.subnet],
        size: { ...size.gitaly, count: 1 },
        securityGroups: [gitaly],
        instanceRole: roles.gitaly,
        userData: boot(
          'gitaly',
          {
            role: 'gitaly',
            options: {
              ...common,
              storageName: node.storage,
              region: this.region,
              backupBucket: storage.backups.bucketName,
            },
          },
          {
            shared: undefined,
            gitaly: {
              volumeTag: { key: GITALY_VOLUME_TAG, value: tagValue },
              mountPoint: GITALY_DATA_DIR,
              hostedZoneId: gitalyZone.hostedZoneId,
              recordName: node.host,
            },
          },
        ),
      });
    });

    // Order of creation and of updates: the data stores and Praefect's database first (implicit),
    // then Gitaly, Praefect, Rails (which sets up the database), Sidekiq.
    // Gitaly nodes are separate groups: chain them so that an update replaces one at a time and
    // the other two keep serving every repository.
    gitalyGroups.forEach((g, i) => {
      if (i > 0) g.group.node.addDependency(gitalyGroups[i - 1]!.group);
    });
    for (const g of gitalyGroups) praefectNodes.group.node.addDependency(g.group);
    railsNodes.group.node.addDependency(praefectNodes.group);
    sidekiqNodes.group.node.addDependency(railsNodes.group);

    new HaMonitoring(this, 'Monitoring', {
      targetGroups: {
        web: lb.targetGroups[0]!,
        praefect: internal.praefect,
        internalApi: internal.internalApi,
      },
      databases: [
        {
          name: 'GitLab',
          db: data.database,
          instanceType: size.database.instanceType,
          allocatedStorageGiB: size.database.storageGiB,
        },
        {
          name: 'Praefect',
          db: praefectDb,
          instanceType: size.praefectDatabase.instanceType,
          allocatedStorageGiB: size.praefectDatabase.storageGiB,
        },
      ],
      redis: data.redis,
      alarmEmail: props.alarmEmail,
    });

    acknowledge(this, [
      ...[...Object.values(storage.buckets), storage.backups].map((bucket) => ({
        id: bucketObjectsFinding(bucket),
        reason: 'Object-level S3 actions need <bucket>/*; the resource names one GitLab bucket exactly.',
      })),
    ]);
  }

  /** Praefect's own PostgreSQL: separate from GitLab's, Multi-AZ, reachable from Praefect only. */
  private praefectDatabase(
    size: HaSize,
    clients: ec2.ISecurityGroup,
    postgresMajor: PostgresMajor,
  ): rds.DatabaseInstance {
    const sg = new ec2.SecurityGroup(this, 'PraefectDatabaseSecurityGroup', {
      vpc: this.vpc,
      description: 'Praefect PostgreSQL: only from the Praefect nodes',
      allowAllOutbound: false,
    });
    sg.addIngressRule(clients, ec2.Port.tcp(5432), 'PostgreSQL from Praefect');
    const db = postgresInstance(this, 'PraefectPostgres', {
      vpc: this.vpc,
      securityGroup: sg,
      postgresMajor,
      instanceType: size.praefectDatabase.instanceType,
      storageGiB: size.praefectDatabase.storageGiB,
      maxStorageGiB: size.praefectDatabase.storageGiB * 5,
      multiAz: true,
      databaseName: PRAEFECT_DATABASE.name,
      user: PRAEFECT_DATABASE.user,
    });
    acknowledge(db, [
      {
        id: 'AwsSolutions-SMG4',
        reason:
          'Praefect reads this password from gitlab.rb at reconfigure; unattended rotation would break it. Rotate by hand with a rolling update of Praefect (docs/infrastructure.md).',
      },
      {
        id: 'AwsSolutions-RDS11',
        reason:
          'PostgreSQL default port; reachable only from the Praefect security group in isolated subnets.',
      },
      {
        id: 'AwsSolutions-RDS6',
        reason: 'Praefect authenticates to PostgreSQL with a password only (no IAM database authentication).',
      },
    ]);
    return db;
  }

  /** A node role: Session Manager, signalling CloudFormation, and exactly the secrets it reads. */
  private instanceRole(role: HaRole, secrets: Record<HaSecretFile, secretsmanager.ISecret>): iam.Role {
    const name = role[0]!.toUpperCase() + role.slice(1);
    const r = new iam.Role(this, `${name}InstanceRole`, {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `GitLab 3k ${role} node: its secrets, Session Manager, CloudFormation signal`,
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore')],
    });
    for (const file of ROLE_SECRETS[role]) secrets[file].grantRead(r);
    r.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['cloudformation:SignalResource'], resources: [this.stackId] }),
    );
    acknowledge(r, [
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
        reason: 'The AWS-maintained minimum for Session Manager, which replaces bastion hosts.',
      },
    ]);
    return r;
  }

  /** Attach only Gitaly-tagged volumes to Gitaly-tagged instances; update only gitaly-* names. */
  private gitalyPermissions(role: iam.Role, zone: route53.IHostedZone): void {
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'FindOwnVolume', actions: ['ec2:DescribeVolumes'], resources: ['*'] }),
    );
    const volumes = this.formatArn({ service: 'ec2', resource: 'volume', resourceName: '*' });
    const instances = this.formatArn({ service: 'ec2', resource: 'instance', resourceName: '*' });
    const gitalyTagged = { StringEquals: { [`aws:ResourceTag/${ROLE_TAG}`]: 'gitaly' } };
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'AttachGitalyVolume',
        actions: ['ec2:AttachVolume'],
        resources: [volumes, instances],
        conditions: gitalyTagged,
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'OwnGitalyRecord',
        actions: ['route53:ChangeResourceRecordSets'],
        resources: [zone.hostedZoneArn],
        conditions: {
          'ForAllValues:StringLike': {
            'route53:ChangeResourceRecordSetsNormalizedRecordNames': [`gitaly-*.${GITALY_ZONE}`],
          },
          'ForAllValues:StringEquals': { 'route53:ChangeResourceRecordSetsRecordTypes': ['A'] },
        },
      }),
    );
    const reason =
      'DescribeVolumes has no resource-level permissions; AttachVolume is limited by tag to Gitaly volumes and Gitaly instances (ids are unknown until launch).';
    acknowledge(role, [
      { id: 'AwsSolutions-IAM5[Resource::*]', reason },
      { id: wildcardResourceFinding(this, volumes), reason },
      { id: wildcardResourceFinding(this, instances), reason },
    ]);
  }

  /** The first `zones` AZs of the region, resolved by CloudFormation (no lookup at synth). */
  override get availabilityZones(): string[] {
    return Array.from({ length: this.zones ?? 3 }, (_, i) => Fn.select(i, Fn.getAzs()));
  }
}
