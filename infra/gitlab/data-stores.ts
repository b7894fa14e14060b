/**
 * GitLab's external state services: RDS PostgreSQL and ElastiCache Redis, both in the isolated
 * subnets, encrypted, reachable only from the GitLab instance's security group, and with their
 * credentials generated into Secrets Manager (never into the template or user data).
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as elasticache from 'aws-cdk-lib/aws-elasticache';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { acknowledge } from '../shared/nag.js';
import type { Sizing } from '../sizing.js';

export interface DataStoresProps {
  vpc: ec2.IVpc;
  sizing: Pick<Sizing, 'databaseInstanceType' | 'databaseStorageGiB' | 'redisNodeType'>;
  multiAz: boolean;
  /** Redis nodes (a primary and replicas); default 2 with multiAz, else 1. */
  redisNodes?: number;
  /** The only security group allowed to connect. */
  clients: ec2.ISecurityGroup;
  /** PostgreSQL major version; checked against the GitLab version's requirements (versions.ts). */
  postgresMajor?: PostgresMajor;
}

export type PostgresMajor = 16 | 17;
/**
 * Full engine versions per major: a bare major ("16") is flagged by cfn-lint as deprecated for new
 * instances. Minor upgrades are applied by changing this and deploying.
 */
export const POSTGRES_ENGINES: Record<PostgresMajor, rds.PostgresEngineVersion> = {
  16: rds.PostgresEngineVersion.VER_16_13,
  17: rds.PostgresEngineVersion.VER_17_9,
};
export const POSTGRES_VERSION = POSTGRES_ENGINES[16];

export const DATABASE_NAME = 'gitlabhq_production';
export const DATABASE_USER = 'gitlab';

export interface PostgresInstanceProps {
  vpc: ec2.IVpc;
  /** The instance's only security group: the caller opens 5432 to its clients. */
  securityGroup: ec2.ISecurityGroup;
  postgresMajor: PostgresMajor;
  instanceType: string;
  storageGiB: number;
  /** Ceiling of storage autoscaling. */
  maxStorageGiB: number;
  multiAz: boolean;
  databaseName: string;
  /** Master user; its password is generated into Secrets Manager. */
  user: string;
}

/**
 * A PostgreSQL on RDS as every database of ours is run (GitLab's, Praefect's): isolated subnets,
 * encrypted, TLS only, a week of backups, deletion protection and a snapshot when removed.
 */
export function postgresInstance(
  scope: Construct,
  id: string,
  p: PostgresInstanceProps,
): rds.DatabaseInstance {
  return new rds.DatabaseInstance(scope, id, {
    engine: rds.DatabaseInstanceEngine.postgres({ version: POSTGRES_ENGINES[p.postgresMajor] }),
    // postgresMajor 16 -> 17 upgrades in place (synth checks the GitLab version first); without
    // this flag CloudFormation refuses the engine version change.
    allowMajorVersionUpgrade: true,
    instanceType: new ec2.InstanceType(p.instanceType),
    vpc: p.vpc,
    vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    securityGroups: [p.securityGroup],
    databaseName: p.databaseName,
    credentials: rds.Credentials.fromGeneratedSecret(p.user),
    storageEncrypted: true,
    storageType: rds.StorageType.GP3,
    allocatedStorage: p.storageGiB,
    maxAllocatedStorage: p.maxStorageGiB,
    multiAz: p.multiAz,
    publiclyAccessible: false,
    backupRetention: Duration.days(7),
    deletionProtection: true,
    removalPolicy: RemovalPolicy.SNAPSHOT,
    cloudwatchLogsExports: ['postgresql'],
    // rds.force_ssl: GitLab and Praefect connect with sslmode=require, so refuse anything weaker.
    parameters: { 'rds.force_ssl': '1' },
  });
}

export class DataStores extends Construct {
  readonly database: rds.DatabaseInstance;
  readonly databaseSecret: secretsmanager.ISecret;
  readonly redis: elasticache.CfnReplicationGroup;
  readonly redisAuthToken: secretsmanager.Secret;

  constructor(scope: Construct, id: string, props: DataStoresProps) {
    super(scope, id);
    const isolated = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };

    const databaseSecurityGroup = new ec2.SecurityGroup(this, 'DatabaseSecurityGroup', {
      vpc: props.vpc,
      description: 'PostgreSQL: only from the GitLab instance',
      allowAllOutbound: false,
    });
    databaseSecurityGroup.addIngressRule(props.clients, ec2.Port.tcp(5432), 'PostgreSQL from GitLab');

    this.database = postgresInstance(this, 'Postgres', {
      vpc: props.vpc,
      securityGroup: databaseSecurityGroup,
      postgresMajor: props.postgresMajor ?? 16,
      instanceType: props.sizing.databaseInstanceType,
      storageGiB: props.sizing.databaseStorageGiB,
      maxStorageGiB: props.sizing.databaseStorageGiB * 2,
      multiAz: props.multiAz,
      databaseName: DATABASE_NAME,
      user: DATABASE_USER,
    });
    this.databaseSecret = this.database.secret!;

    const redisSecurityGroup = new ec2.SecurityGroup(this, 'RedisSecurityGroup', {
      vpc: props.vpc,
      description: 'Redis: only from the GitLab instance',
      allowAllOutbound: false,
    });
    redisSecurityGroup.addIngressRule(props.clients, ec2.Port.tcp(6379), 'Redis from GitLab');

    // ElastiCache AUTH tokens allow printable ASCII except @, " and /; plain alphanumerics are
    // simplest to pass through shell and Ruby unharmed.
    this.redisAuthToken = new secretsmanager.Secret(this, 'RedisAuthToken', {
      description: 'ElastiCache AUTH token for GitLab',
      generateSecretString: { passwordLength: 48, excludePunctuation: true },
    });
    const subnetGroup = new elasticache.CfnSubnetGroup(this, 'RedisSubnets', {
      description: 'GitLab Redis: isolated data subnets',
      subnetIds: props.vpc.selectSubnets(isolated).subnetIds,
    });
    this.redis = new elasticache.CfnReplicationGroup(this, 'Redis', {
      replicationGroupDescription: 'GitLab Redis (cluster mode disabled)',
      engine: 'redis',
      engineVersion: '7.1',
      cacheNodeType: props.sizing.redisNodeType,
      // Cluster mode disabled: one shard, optionally with a replica in the other AZ.
      numCacheClusters: props.redisNodes ?? (props.multiAz ? 2 : 1),
      automaticFailoverEnabled: props.multiAz,
      multiAzEnabled: props.multiAz,
      cacheSubnetGroupName: subnetGroup.ref,
      securityGroupIds: [redisSecurityGroup.securityGroupId],
      atRestEncryptionEnabled: true,
      transitEncryptionEnabled: true,
      // A dynamic reference: CloudFormation resolves it at deploy time, the template holds none.
      authToken: this.redisAuthToken.secretValue.unsafeUnwrap(),
      snapshotRetentionLimit: 3,
    });

    const reason = {
      rotation:
        'GitLab reads this credential from gitlab.rb at reconfigure; unattended rotation would ' +
        'break it. Rotate it by hand with a reconfigure (docs/infrastructure.md).',
      port: 'GitLab default port; reachable only from the GitLab security group in isolated subnets.',
      iamAuth: 'The GitLab Linux package authenticates to PostgreSQL with a password only.',
      singleAz: 'Multi-AZ is a cost/availability choice of the POC: context multiAz=true turns it on.',
    };
    acknowledge(this.redisAuthToken, [{ id: 'AwsSolutions-SMG4', reason: reason.rotation }]);
    acknowledge(this.database, [
      { id: 'AwsSolutions-SMG4', reason: reason.rotation },
      { id: 'AwsSolutions-RDS11', reason: reason.port },
      { id: 'AwsSolutions-RDS6', reason: reason.iamAuth },
      ...(props.multiAz ? [] : [{ id: 'AwsSolutions-RDS3', reason: reason.singleAz }]),
    ]);
    acknowledge(this.redis, [
      { id: 'AwsSolutions-AEC5', reason: reason.port },
      ...(props.multiAz ? [] : [{ id: 'AwsSolutions-AEC4', reason: reason.singleAz }]),
    ]);
  }
}
