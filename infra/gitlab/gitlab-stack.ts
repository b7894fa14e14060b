/**
 * The POC GitLab ("Installing a GitLab POC on AWS", scaled down): one GitLab instance in a
 * self-healing Auto Scaling group behind an NLB, with RDS PostgreSQL, ElastiCache Redis and S3.
 */
import { createHash } from 'node:crypto';
import { Duration, Fn, SecretValue, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import type { Construct } from 'constructs';
import type { DeployStage } from '../pipeline/names.js';
import { AlarmTopic } from '../shared/alarms.js';
import { accessLogBucket } from '../shared/buckets.js';
import { HealthCheck } from '../shared/health-check.js';
import { acknowledge, bucketObjectsFinding, wildcardResourceFinding } from '../shared/nag.js';
import type { Sizing } from '../sizing.js';
import { applicationSettings } from './application-settings.js';
import {
  EMPTY_GITLAB_SECRETS,
  renderGitlabApplyScript,
  renderGitlabBootScript,
  renderSsmApplyCommand,
} from './boot-script.js';
import { DataStores, type PostgresMajor } from './data-stores.js';
import { DataVolume, GITLAB_INSTANCE_TAG, renderAttachDataVolumeScript } from './data-volume.js';
import { renderGitlabRb } from './gitlab-rb.js';
import { GitlabLoadBalancer, INSTANCE_PORTS } from './load-balancer.js';
import { Network } from './network.js';
import { ObjectStorage } from './object-storage.js';
import { grantSmtpSecret, type SmtpSettings } from './smtp.js';
import { checkPostgres, checkUpgrade } from './versions.js';

export interface GitlabPocStackProps extends StackProps {
  domainName: string;
  certificateArn?: string;
  hostedZone?: { id: string; name: string };
  /** The deploy stage: names the smoke test's readiness check (none without it). */
  stageName?: DeployStage;
  natGateways: 1 | 2;
  sizing: Sizing;
  multiAz: boolean;
  allowedCidr: string;
  edition: 'gitlab-ee' | 'gitlab-ce';
  /** Exact GitLab version, e.g. 18.2.1. */
  version: string;
  /** The version this stage runs now; synth refuses a jump over a required upgrade stop from it. */
  deployedVersion?: string;
  /** PostgreSQL major of RDS; synth refuses one the GitLab version does not support. */
  postgresMajor?: PostgresMajor;
  /** Subscribed to the alarm topic by email (optional). */
  alarmEmail?: string;
  /** Outgoing email through SES SMTP (smtp.ts); unset: none. */
  smtp?: SmtpSettings;
}

/** Instance root volume: the OS and the GitLab package; GitLab's data is on the data volume. */
const ROOT_VOLUME_GIB = 30;

export class GitlabPocStack extends Stack {
  readonly vpc: ec2.Vpc;

  constructor(scope: Construct, id: string, props: GitlabPocStackProps) {
    super(scope, id, props);
    // Versions first: a bad bump fails here, before any resource is defined.
    checkPostgres(props.version, props.postgresMajor ?? 16);
    if (props.deployedVersion) checkUpgrade(props.deployedVersion, props.version);
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
      stageName: props.stageName,
      allowedCidr: props.allowedCidr,
      accessLogs: logs,
    });
    // The runner manager, job instances and pipeline jobs in this VPC reach GitLab's public name
    // through the NAT gateways: their addresses must stay allowed however narrow allowedCidr is.
    if (props.allowedCidr !== '0.0.0.0/0') {
      for (const [i, subnet] of this.vpc.publicSubnets.entries()) {
        const eip = subnet.node.tryFindChild('EIP') as ec2.CfnEIP | undefined;
        if (!eip) continue;
        const nat = ec2.Peer.ipv4(Fn.join('', [eip.ref, '/32']));
        lb.securityGroup.addIngressRule(
          nat,
          ec2.Port.tcp(443),
          `HTTPS from NAT gateway ${i + 1} (runners, pipeline)`,
        );
        lb.securityGroup.addIngressRule(nat, ec2.Port.tcp(22), `git over SSH from NAT gateway ${i + 1}`);
      }
    }

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
      postgresMajor: props.postgresMajor,
    });
    // The instance always runs in the data volume's AZ (an EBS volume cannot leave its AZ).
    const gitlabSubnet = this.vpc.privateSubnets[0]!;
    const dataVolume = new DataVolume(this, 'DataVolume', {
      subnet: gitlabSubnet,
      sizeGiB: props.sizing.gitlabRootVolumeGiB,
      snapshotEveryHours: 4,
      snapshotsKept: 18,
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
    // Filled by the first instance likewise: git clients must not see a new host key after a replacement.
    const sshHostKeys = new secretsmanager.Secret(this, 'SshHostKeys', {
      description: "The GitLab instance's SSH host keys, so a replacement instance keeps them",
      secretStringValue: SecretValue.unsafePlainText(EMPTY_GITLAB_SECRETS),
    });

    const role = new iam.Role(this, 'GitlabInstanceRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'GitLab POC instance: its buckets, its secrets, Session Manager',
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore')],
    });
    storage.grantTo(role);
    for (const secret of [
      data.databaseSecret,
      data.redisAuthToken,
      rootPassword,
      gitlabSecretsJson,
      sshHostKeys,
    ]) {
      secret.grantRead(role);
    }
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'StoreGitlabKeys',
        actions: ['secretsmanager:PutSecretValue'],
        resources: [gitlabSecretsJson.secretArn, sshHostKeys.secretArn],
      }),
    );
    dataVolume.grantAttach(role);

    const gitlabRb = renderGitlabRb({
      ...applicationSettings({ domainName: props.domainName, region: this.region, data, storage }),
      smtp: props.smtp,
    });
    if (props.smtp) grantSmtpSecret(this, props.smtp, [role]);
    const applyScript = renderGitlabApplyScript({
      region: this.region,
      gitlabRb,
      edition: props.edition,
      version: props.version,
      secrets: {
        databaseSecretArn: data.databaseSecret.secretArn,
        redisAuthTokenSecretArn: data.redisAuthToken.secretArn,
        rootPasswordSecretArn: rootPassword.secretArn,
      },
      smtpSecretId: props.smtp?.secretId,
    });
    const userData = ec2.UserData.custom(
      renderGitlabBootScript({
        region: this.region,
        attachScript: renderAttachDataVolumeScript({
          volumeId: dataVolume.volume.volumeId,
          region: this.region,
        }),
        applyScript,
        secrets: {
          gitlabSecretsJsonSecretArn: gitlabSecretsJson.secretArn,
          sshHostKeysSecretArn: sshHostKeys.secretArn,
        },
        backupBucket: storage.backups.bucketName,
      }),
    );
    this.inPlaceUpdate(renderSsmApplyCommand(applyScript));
    this.alarms(props, lb, data);

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
          volume: ec2.BlockDeviceVolume.ebs(ROOT_VOLUME_GIB, {
            volumeType: ec2.EbsDeviceVolumeType.GP3,
            encrypted: true,
            deleteOnTermination: true,
          }),
        },
      ],
    });

    const group = new autoscaling.AutoScalingGroup(this, 'GitlabGroup', {
      vpc: this.vpc,
      vpcSubnets: { subnets: [gitlabSubnet] },
      launchTemplate,
      minCapacity: 1,
      maxCapacity: 1,
      // EC2 status checks, not the NLB's readiness probe: an upgrade or a slow reconfigure must
      // not get the only GitLab instance replaced.
      healthChecks: autoscaling.HealthChecks.ec2({ gracePeriod: Duration.minutes(30) }),
    });
    for (const targetGroup of lb.targetGroups) group.attachToNetworkTargetGroup(targetGroup);
    // Names the instance for the data volume's attach permission and the SSM association.
    Tags.of(group).add(GITLAB_INSTANCE_TAG, this.stackName, { applyToLaunchedInstances: true });
    if (props.stageName) {
      // The pipeline's smoke test: GitLab's own readiness answer, which lists every component.
      new HealthCheck(this, 'Readiness', {
        stage: props.stageName,
        target: 'gitlab',
        url: 'http://127.0.0.1/-/readiness',
        group,
      });
    }

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
    for (const keys of [gitlabSecretsJson, sshHostKeys]) {
      acknowledge(keys, [
        {
          id: 'AwsSolutions-SMG4',
          reason: "GitLab's own key material: written by the instance, never rotated by AWS.",
        },
      ]);
    }
    acknowledge(role, [
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: 'ec2:DescribeVolumes supports no resource-level permissions; it only reads volume state.',
      },
      {
        id: wildcardResourceFinding(
          this,
          this.formatArn({ service: 'ec2', resource: 'instance', resourceName: '*' }),
        ),
        reason:
          'ec2:AttachVolume names the instance too; the statement is conditioned on the tag of this stack’s GitLab instance.',
      },
    ]);
  }

  /** One target: unhealthy is the outage (no redundancy to lose). Thresholds: shared/alarms.ts. */
  private alarms(props: GitlabPocStackProps, lb: GitlabLoadBalancer, data: DataStores): void {
    const alarms = new AlarmTopic(this, 'Alarms', {
      description: 'GitLab POC alarms',
      email: props.alarmEmail,
    });
    const [web, , ssh] = lb.targetGroups;
    alarms.targetGroup('web', web!, false);
    alarms.targetGroup('gitSsh', ssh!, false);
    alarms.database('GitLab', data.database, {
      instanceType: props.sizing.databaseInstanceType,
      allocatedStorageGiB: props.sizing.databaseStorageGiB,
    });
    alarms.redis(data.redis);
  }

  /**
   * Configuration changes reach the running instance through State Manager, not a replacement:
   * the association targets the instance by tag and runs the apply script. Its document changes
   * whenever the rendered configuration does, and a changed association runs at once.
   *
   * Why SSM and not cfn-hup: the SSM agent already runs (Session Manager), needs no polling
   * daemon or cfn-init metadata on the launch template, runs on a replacement instance too, and
   * keeps every run's output and exit status in the console (`aws ssm list-command-invocations`).
   */
  private inPlaceUpdate(command: string): void {
    const content = {
      schemaVersion: '2.2',
      description: 'Apply the rendered GitLab configuration and run gitlab-ctl reconfigure',
      parameters: {
        configHash: { type: 'String', default: '', description: 'Changes with the configuration' },
      },
      mainSteps: [
        {
          action: 'aws:runShellScript',
          name: 'applyGitlabConfiguration',
          inputs: { runCommand: command.split('\n'), timeoutSeconds: '3600' },
        },
      ],
    };
    const configHash = createHash('sha256')
      .update(JSON.stringify(this.resolve(content)))
      .digest('hex')
      .slice(0, 16);
    const document = new ssm.CfnDocument(this, 'ApplyConfiguration', {
      documentType: 'Command',
      content,
    });
    new ssm.CfnAssociation(this, 'ApplyConfigurationAssociation', {
      name: document.ref,
      targets: [{ key: `tag:${GITLAB_INSTANCE_TAG}`, values: [this.stackName] }],
      parameters: { configHash: [configHash] },
      applyOnlyAtCronInterval: false,
      maxConcurrency: '1',
      maxErrors: '0',
    });
  }

  /**
   * The first two AZs of the region, resolved by CloudFormation (Fn::GetAZs) at deploy time: with
   * a concrete account CDK would otherwise look the zones up at synth, which needs credentials.
   */
  override get availabilityZones(): string[] {
    return [0, 1].map((i) => Fn.select(i, Fn.getAzs()));
  }
}
