/**
 * The POC GitLab ("Installing a GitLab POC on AWS", scaled down): one GitLab instance in a
 * self-healing Auto Scaling group behind an NLB, with RDS PostgreSQL, ElastiCache Redis and S3.
 */
import { Duration, Fn, SecretValue, Stack, type StackProps } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { accessLogBucket } from '../shared/buckets.js';
import { acknowledge, bucketObjectsFinding } from '../shared/nag.js';
import type { Sizing } from '../sizing.js';
import { EMPTY_GITLAB_SECRETS, renderGitlabBootScript } from './boot-script.js';
import { DATABASE_NAME, DATABASE_USER, DataStores } from './data-stores.js';
import { OBJECT_TYPES, type ObjectType, renderGitlabRb } from './gitlab-rb.js';
import { GitlabLoadBalancer, INSTANCE_PORTS } from './load-balancer.js';
import { Network, VPC_CIDR } from './network.js';
import { ObjectStorage } from './object-storage.js';

export interface GitlabPocStackProps extends StackProps {
  domainName: string;
  certificateArn?: string;
  hostedZone?: { id: string; name: string };
  natGateways: 1 | 2;
  sizing: Sizing;
  multiAz: boolean;
  allowedCidr: string;
  edition: 'gitlab-ee' | 'gitlab-ce';
  version?: string;
}

export class GitlabPocStack extends Stack {
  readonly vpc: ec2.Vpc;

  constructor(scope: Construct, id: string, props: GitlabPocStackProps) {
    super(scope, id, props);
    const logs = accessLogBucket(this, 'Logs');
    this.vpc = new Network(this, 'Network', {
      natGateways: props.natGateways,
      flowLogs: logs,
    }).vpc;

    const lb = new GitlabLoadBalancer(this, 'LoadBalancer', {
      vpc: this.vpc,
      domainName: props.domainName,
      certificateArn: props.certificateArn,
      hostedZone: props.hostedZone,
      allowedCidr: props.allowedCidr,
      accessLogs: logs,
    });

    // Never the load balancer's group on the instance: each tier admits only the tier in front.
    const instanceSecurityGroup = new ec2.SecurityGroup(this, 'GitlabSecurityGroup', {
      vpc: this.vpc,
      description: 'GitLab instance: web, redirect and git over SSH from the load balancer only',
      allowAllOutbound: true,
    });
    for (const port of Object.values(INSTANCE_PORTS)) {
      instanceSecurityGroup.addIngressRule(lb.securityGroup, ec2.Port.tcp(port), `port ${port} from the NLB`);
    }
    // With security groups on an NLB, its group must also allow the traffic out to the targets.
    for (const port of Object.values(INSTANCE_PORTS)) {
      lb.securityGroup.addEgressRule(instanceSecurityGroup, ec2.Port.tcp(port), `to GitLab port ${port}`);
    }

    const data = new DataStores(this, 'Data', {
      vpc: this.vpc,
      sizing: props.sizing,
      multiAz: props.multiAz,
      clients: instanceSecurityGroup,
    });
    const storage = new ObjectStorage(this, 'ObjectStorage', { accessLogs: logs });

    const rootPassword = new secretsmanager.Secret(this, 'RootPassword', {
      description: 'Initial password of the GitLab root user (used on first boot only)',
      generateSecretString: { passwordLength: 32, excludeCharacters: `'"\\\`$` },
    });
    // Filled by the first instance after its first reconfigure; see boot-script.ts for why.
    const gitlabSecretsJson = new secretsmanager.Secret(this, 'GitlabSecretsJson', {
      description: "GitLab's /etc/gitlab/gitlab-secrets.json, so a replacement instance keeps its keys",
      secretStringValue: SecretValue.unsafePlainText(EMPTY_GITLAB_SECRETS),
    });

    const role = new iam.Role(this, 'GitlabInstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'GitLab POC instance: its buckets, its secrets, Session Manager',
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore')],
    });
    storage.grantTo(role);
    for (const secret of [data.databaseSecret, data.redisAuthToken, rootPassword, gitlabSecretsJson]) {
      secret.grantRead(role);
    }
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'StoreGitlabSecretsJson',
        actions: ['secretsmanager:PutSecretValue'],
        resources: [gitlabSecretsJson.secretArn],
      }),
    );

    const buckets = Object.fromEntries(
      OBJECT_TYPES.map((type) => [type, storage.buckets[type].bucketName]),
    ) as Record<ObjectType, string>;
    const gitlabRb = renderGitlabRb({
      externalUrl: `https://${props.domainName}`,
      region: this.region,
      vpcCidr: VPC_CIDR,
      database: {
        host: data.database.dbInstanceEndpointAddress,
        port: data.database.dbInstanceEndpointPort,
        name: DATABASE_NAME,
        username: DATABASE_USER,
      },
      redis: { host: data.redis.attrPrimaryEndPointAddress, port: data.redis.attrPrimaryEndPointPort },
      buckets,
      backupBucket: storage.backups.bucketName,
    });
    const userData = ec2.UserData.custom(
      renderGitlabBootScript({
        region: this.region,
        gitlabRb,
        edition: props.edition,
        version: props.version,
        secrets: {
          databaseSecretArn: data.databaseSecret.secretArn,
          redisAuthTokenSecretArn: data.redisAuthToken.secretArn,
          rootPasswordSecretArn: rootPassword.secretArn,
          gitlabSecretsJsonSecretArn: gitlabSecretsJson.secretArn,
        },
        backupBucket: storage.backups.bucketName,
      }),
    );

    const launchTemplate = new ec2.LaunchTemplate(this, 'GitlabLaunchTemplate', {
      // Resolved from the public SSM parameter at deploy time: no lookup at synth.
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
      instanceType: new ec2.InstanceType(props.sizing.gitlabInstanceType),
      role,
      securityGroup: instanceSecurityGroup,
      userData,
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      detailedMonitoring: true,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(props.sizing.gitlabRootVolumeGiB, {
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            encrypted: true,
            deleteOnTermination: true,
          }),
        },
      ],
    });

    const group = new autoscaling.AutoScalingGroup(this, 'GitlabGroup', {
      vpc: this.vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      launchTemplate,
      minCapacity: 1,
      maxCapacity: 1,
      // EC2 status checks, not the NLB's readiness probe: an upgrade or a slow reconfigure must
      // not get the only GitLab instance replaced.
      healthChecks: autoscaling.HealthChecks.ec2({ gracePeriod: Duration.minutes(30) }),
    });
    for (const targetGroup of lb.targetGroups) group.attachToNetworkTargetGroup(targetGroup);

    acknowledge(group, [
      {
        id: 'AwsSolutions-AS3',
        reason:
          'A group of exactly one instance; replacements show in the Auto Scaling activity history and EventBridge.',
      },
    ]);
    acknowledge(role, [
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
        reason: 'The AWS-maintained minimum for Session Manager, which replaces bastion hosts.',
      },
      ...[...Object.values(storage.buckets), storage.backups].map((bucket) => ({
        id: bucketObjectsFinding(bucket),
        reason: 'Object-level S3 actions need <bucket>/*; the resource names one GitLab bucket exactly.',
      })),
    ]);
    const secretRotation =
      'Read by gitlab.rb at reconfigure (root password: first boot only); unattended rotation would ' +
      'break GitLab. Rotation is a manual step with a reconfigure (docs/infrastructure.md).';
    acknowledge(rootPassword, [{ id: 'AwsSolutions-SMG4', reason: secretRotation }]);
    acknowledge(gitlabSecretsJson, [
      {
        id: 'AwsSolutions-SMG4',
        reason: "GitLab's own key material: written by the instance, never rotated by AWS.",
      },
    ]);
  }

  /**
   * The first two AZs of the region, resolved by CloudFormation (Fn::GetAZs) at deploy time: with
   * a concrete account CDK would otherwise look the zones up at synth, which needs credentials.
   */
  override get availabilityZones(): string[] {
    return [0, 1].map((i) => Fn.select(i, Fn.getAzs()));
  }
}
