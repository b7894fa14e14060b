/**
 * The runner fleet: a self-healing manager instance (gitlab-runner + the runner-fleet daemon), the
 * job instances' launch template (and, in `asg` mode, their Auto Scaling group), one instance
 * profile per credential class, the S3 cache and the log group.
 */
import { type CfnResource, Duration, RemovalPolicy, Stack, type StackProps, Tags } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import * as cr from 'aws-cdk-lib/custom-resources';
import type { Construct } from 'constructs';
import { managerPolicyDocument } from '../../manager/providers/aws/iam-policy.js';
import { TAG } from '../../manager/providers/tags.js';
import type { InfraConfig, StageConfig } from '../config.js';
import type { DeployStage } from '../pipeline/names.js';
import { AlarmTopic, FLEET_METRICS_NAMESPACE } from '../shared/alarms.js';
import { accessLogBucket, privateBucket } from '../shared/buckets.js';
import { HealthCheck } from '../shared/health-check.js';
import { acknowledge, wildcardResourceFinding } from '../shared/nag.js';
import { renderJobBootScript, renderManagerBootScript } from './boot-scripts.js';
import { renderHealthMetricsScript, renderHealthMetricsUnits } from './health-metrics.js';
import { requireTarball } from './package-asset.js';
import { type CredentialClassProfile, MANAGER_METRICS_LISTEN, renderFleetConfig } from './runner-configs.js';
import { renderManagerUnit } from './systemd-unit.js';

/** A set of AWS permissions a job can be given, as an instance profile (see docs/credentials.example.toml). */
export interface CredentialClass {
  name: string;
  /** Roles a job of this class may assume, e.g. deploy roles in a target account. */
  assumableRoleArns?: string[];
}

/** The `fleet` settings of infra/config.ts, plus what the stage wires in. */
type FleetSettings = InfraConfig['fleet'] & Pick<StageConfig, 'fleetName' | 'runnerTokenParameter'>;

export interface RunnerFleetStackProps extends StackProps, FleetSettings {
  vpc: ec2.IVpc;
  gitlabUrl: string;
  /** The first class is the default: what every job gets unless a credential rule says otherwise. */
  credentialClasses: CredentialClass[];
  /**
   * SSM parameter naming the baked job AMI (infra/ami/job-ami-stack.ts), read at each deploy.
   * Unset: stock Amazon Linux 2023, and the job's user data installs the tools at every boot.
   */
  jobAmiParameter?: string;
  /** Subscribed to the alarm topic by email (optional). */
  alarmEmail?: string;
  /** The deploy stage: names the smoke test's /healthz check (none without it). */
  stageName?: DeployStage;
}

const BIN_PATH = '/usr/bin/runner-fleet';

export class RunnerFleetStack extends Stack {
  readonly jobLaunchTemplate: ec2.LaunchTemplate;
  readonly jobGroup?: autoscaling.AutoScalingGroup;
  readonly managerRole: iam.Role;

  constructor(scope: Construct, id: string, props: RunnerFleetStackProps) {
    super(scope, id, props);
    if (props.credentialClasses.length === 0) throw new Error('at least one (default) credential class');
    const privateSubnets = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };

    const logBucket = accessLogBucket(this, 'AccessLogs');
    const cache = privateBucket(this, 'Cache', {
      accessLogs: logBucket,
      // Caches are disposable; expiry keeps an abandoned branch's cache from costing forever.
      lifecycleRules: [
        {
          id: 'expire-cache',
          expiration: Duration.days(props.cacheExpiryDays),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
    });
    const logGroup = new logs.LogGroup(this, 'Logs', {
      logGroupName: `/runner-fleet/${props.fleetName}`,
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const managerSecurityGroup = new ec2.SecurityGroup(this, 'ManagerSecurityGroup', {
      vpc: props.vpc,
      description: 'runner-fleet manager: no inbound (Session Manager), outbound to GitLab, AWS and jobs',
      allowAllOutbound: true,
    });
    const jobSecurityGroup = new ec2.SecurityGroup(this, 'JobSecurityGroup', {
      vpc: props.vpc,
      description: 'runner-fleet job instances: SSH from the manager only',
      allowAllOutbound: true,
    });
    jobSecurityGroup.addIngressRule(managerSecurityGroup, ec2.Port.tcp(22), 'SSH from the manager');

    const profiles = props.credentialClasses.map((c) => this.jobProfile(c));
    const gitlabRunner = { version: props.gitlabRunnerVersion, sha256: props.gitlabRunnerSha256 };
    const defaultProfile = profiles[0]!;

    this.jobLaunchTemplate = new ec2.LaunchTemplate(this, 'JobLaunchTemplate', {
      // From the parameter, resolved by CloudFormation at each deploy of this stack: a newly
      // baked AMI reaches the fleet with the next deploy, never with a hard-coded id.
      machineImage: props.jobAmiParameter
        ? ec2.MachineImage.fromSsmParameter(props.jobAmiParameter)
        : ec2.MachineImage.latestAmazonLinux2023(),
      instanceType: new ec2.InstanceType(props.jobInstanceType),
      securityGroup: jobSecurityGroup,
      instanceProfile: defaultProfile.profile,
      userData: ec2.UserData.custom(
        renderJobBootScript({
          maxLifetimeMinutes: props.jobMaxLifetimeMinutes,
          gitlabRunner: props.jobAmiParameter ? undefined : gitlabRunner,
        }),
      ),
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      // The dead-man switch: the instance's own shutdown at maximum lifetime terminates it.
      instanceInitiatedShutdownBehavior: ec2.InstanceInitiatedShutdownBehavior.TERMINATE,
      blockDevices: [rootVolume(50)],
    });
    // Only job instances carry the fleet tag: it is what the manager may terminate and what its
    // reconciler lists, so the manager instance itself must never have it.
    Tags.of(this.jobLaunchTemplate).add(TAG.fleet, props.fleetName);

    let autoScalingGroupName: string | undefined;
    if (props.mode === 'asg') {
      autoScalingGroupName = `runner-fleet-${props.fleetName}-jobs`;
      this.jobGroup = this.jobGroupFor(props, autoScalingGroupName, privateSubnets);
    }

    this.managerRole = new iam.Role(this, 'ManagerRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `runner-fleet manager of fleet ${props.fleetName}`,
      managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore')],
    });
    logGroup.grantWrite(this.managerRole);
    const policy = new iam.Policy(this, 'ManagerPolicy', {
      document: iam.PolicyDocument.fromJson(
        managerPolicyDocument({
          partition: this.partition,
          region: this.region,
          account: this.account,
          fleetName: props.fleetName,
          mode: props.mode,
          autoScalingGroupName,
          instanceProfileArns: profiles.map((p) => p.profile.instanceProfileArn),
          jobRoleArns: profiles.map((p) => p.role.roleArn),
          launchTemplateId: this.jobLaunchTemplate.launchTemplateId,
          runnerTokenParameterName: props.runnerTokenParameter,
          cacheBucketName: cache.bucketName,
          // The manager config's [image] manifest_parameter_prefix default.
          amiManifestParameterPrefix: '/runner-fleet/ami',
        }),
      ),
    });
    policy.attachToRole(this.managerRole);

    // runner-fleet itself: this checkout's `npm pack` tarball, uploaded by `cdk deploy` as an asset.
    const packageAsset = new s3assets.Asset(this, 'RunnerFleetPackage', {
      path: requireTarball(props.packageTarball),
    });
    // Exactly this object, not the whole bootstrap bucket (grantRead would give bucket-wide reads).
    this.managerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadRunnerFleetPackage',
        actions: ['s3:GetObject'],
        resources: [`arn:${this.partition}:s3:::${packageAsset.s3BucketName}/${packageAsset.s3ObjectKey}`],
      }),
    );

    const classProfiles: CredentialClassProfile[] = profiles.map((p) => ({
      name: p.name,
      instanceProfileArn: p.profile.instanceProfileArn,
    }));
    const bootScript = renderManagerBootScript({
      region: this.region,
      packageS3Url: packageAsset.s3ObjectUrl,
      gitlabRunner,
      logGroupName: logGroup.logGroupName,
      systemdUnit: renderManagerUnit({ binPath: BIN_PATH }),
      healthMetrics: {
        script: renderHealthMetricsScript({
          fleetName: props.fleetName,
          region: this.region,
          listen: MANAGER_METRICS_LISTEN,
        }),
        ...renderHealthMetricsUnits(),
      },
      fleetConfig: renderFleetConfig({
        fleetName: props.fleetName,
        region: this.region,
        mode: props.mode,
        maxInstances: props.maxJobInstances,
        maxInstanceLifetimeMinutes: props.jobMaxLifetimeMinutes,
        launchTemplateId: this.jobLaunchTemplate.launchTemplateId!,
        autoScalingGroupName,
        subnetIds: props.vpc.selectSubnets(privateSubnets).subnetIds,
        gitlabUrl: props.gitlabUrl,
        runnerTokenParameter: props.runnerTokenParameter,
        cacheBucket: cache.bucketName,
        defaultProfile: classProfiles[0]!,
        profiles: classProfiles,
      }),
    });

    const managerLaunchTemplate = new ec2.LaunchTemplate(this, 'ManagerLaunchTemplate', {
      machineImage: ec2.MachineImage.latestAmazonLinux2023(),
      instanceType: new ec2.InstanceType(props.managerInstanceType),
      role: this.managerRole,
      securityGroup: managerSecurityGroup,
      userData: ec2.UserData.custom(bootScript),
      requireImdsv2: true,
      httpPutResponseHopLimit: 1,
      blockDevices: [rootVolume(30)],
    });
    const managerGroup = new autoscaling.AutoScalingGroup(this, 'ManagerGroup', {
      vpc: props.vpc,
      vpcSubnets: privateSubnets,
      launchTemplate: managerLaunchTemplate,
      // A group of one: a lost manager is replaced, and the new one rebuilds its state from tags.
      minCapacity: 1,
      maxCapacity: 1,
    });

    this.alarms(props);

    if (props.stageName) {
      new HealthCheck(this, 'ManagerHealth', {
        stage: props.stageName,
        target: 'manager',
        url: `http://${MANAGER_METRICS_LISTEN}/healthz`,
        group: managerGroup,
      });
    }
    acknowledge(managerGroup, [{ id: 'AwsSolutions-AS3', reason: SINGLETON_GROUP }]);
    acknowledge(this.managerRole, [{ id: SSM_CORE_FINDING, reason: SSM_CORE_REASON }]);
    acknowledge(policy, [
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'Only the Describe* calls and sts:GetCallerIdentity, which support no resource-level permissions.',
      },
      {
        id: wildcardResourceFinding(
          this,
          `arn:${this.partition}:ec2:${this.region}:${this.account}:instance/*`,
        ),
        reason:
          'Instance ids are unknown before launch; every statement on instances is conditioned on the fleet tag.',
      },
      {
        id: wildcardResourceFinding(
          this,
          `arn:${this.partition}:ssm:${this.region}:${this.account}:parameter/runner-fleet/ami/*`,
        ),
        reason:
          'ssm:GetParameter (read only) on the AMI manifests the image build publishes, one parameter per AMI id; doctor reads them.',
      },
      {
        id: wildcardResourceFinding(this, `arn:${this.partition}:s3:::${cache.bucketName}/*`),
        reason: 'Object-level S3 actions need <bucket>/*; the resource names the cache bucket.',
      },
      ...(autoScalingGroupName ? [groupArnFinding(this, autoScalingGroupName)] : []),
    ]);
  }

  /** The health timer's metrics (health-metrics.ts) and their alarms (shared/alarms.ts). */
  private alarms(props: RunnerFleetStackProps): void {
    this.managerRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PutHealthMetrics',
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringEquals: { 'cloudwatch:namespace': FLEET_METRICS_NAMESPACE } },
      }),
    );
    acknowledge(this.managerRole, [
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason: `cloudwatch:PutMetricData has no resource-level permissions; the condition limits it to the ${FLEET_METRICS_NAMESPACE} namespace.`,
      },
    ]);
    new AlarmTopic(this, 'Alarms', {
      description: `runner-fleet ${props.fleetName} alarms`,
      email: props.alarmEmail,
    }).fleet(props.fleetName);
  }

  /** An instance profile for one credential class. The role starts empty: least privilege. */
  private jobProfile(c: CredentialClass) {
    const id = c.name.replace(/(^|[-_])(\w)/g, (_m, _sep, ch: string) => ch.toUpperCase());
    const role = new iam.Role(this, `Job${id}Role`, {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `runner-fleet job instances, credential class ${c.name}`,
    });
    if (c.assumableRoleArns && c.assumableRoleArns.length > 0) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'AssumeClassRoles',
          actions: ['sts:AssumeRole', 'sts:TagSession'],
          resources: c.assumableRoleArns,
        }),
      );
      for (const arn of c.assumableRoleArns.filter((a) => a.includes('*'))) {
        acknowledge(role, [
          {
            id: `AwsSolutions-IAM5[Resource::${arn}]`,
            reason:
              'Roles under this path in the target account are the ones it delegates to this class; the path is the boundary.',
          },
        ]);
      }
    }
    const profile = new iam.InstanceProfile(this, `Job${id}Profile`, { role });
    return { name: c.name, role, profile };
  }

  private jobGroupFor(
    props: RunnerFleetStackProps,
    name: string,
    subnets: ec2.SubnetSelection,
  ): autoscaling.AutoScalingGroup {
    const group = new autoscaling.AutoScalingGroup(this, 'JobGroup', {
      autoScalingGroupName: name,
      vpc: props.vpc,
      vpcSubnets: subnets,
      launchTemplate: this.jobLaunchTemplate,
      minCapacity: 0,
      maxCapacity: props.maxJobInstances,
      // No desiredCapacity: the manager owns it, and a stack update must not reset it.
      // New instances are protected so that only the manager scales in, always by instance id.
      newInstancesProtectedFromScaleIn: true,
    });

    // AZRebalance would terminate instances, busy ones included, to even out the zones.
    // CloudFormation cannot suspend a process persistently, so one API call does it.
    const groupArn = jobGroupArn(this, name);
    const suspend: cr.AwsSdkCall = {
      service: 'AutoScaling',
      action: 'SuspendProcesses',
      parameters: { AutoScalingGroupName: name, ScalingProcesses: ['AZRebalance'] },
      physicalResourceId: cr.PhysicalResourceId.of(`${name}-suspend-azrebalance`),
    };
    const suspendAzRebalance = new cr.AwsCustomResource(this, 'SuspendAzRebalance', {
      onCreate: suspend,
      onUpdate: suspend,
      policy: cr.AwsCustomResourcePolicy.fromStatements([
        new iam.PolicyStatement({ actions: ['autoscaling:SuspendProcesses'], resources: [groupArn] }),
      ]),
      installLatestAwsSdk: false,
    });
    suspendAzRebalance.node.addDependency(group);
    // cfn-lint W3005: CDK's provider function both reads its role (GetAtt) and depends on it
    // explicitly; harmless, and generated by aws-cdk-lib, not by us.
    const provider = this.node.tryFindChild('AWS679f53fac002430cb0da5b7982bd2287');
    (provider?.node.defaultChild as CfnResource | undefined)?.addMetadata('cfn-lint', {
      config: { ignore_checks: ['W3005'] },
    });
    acknowledge(suspendAzRebalance, [groupArnFinding(this, name)]);

    acknowledge(group, [
      { id: 'AwsSolutions-AS3', reason: 'Scaling is driven and logged by the runner-fleet manager.' },
    ]);
    acknowledge(this, [
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        reason: 'CDK AwsCustomResource provider function: logs only.',
      },
      { id: 'AwsSolutions-L1', reason: 'The CDK-managed AwsCustomResource provider pins its own runtime.' },
    ]);
    return group;
  }
}

function rootVolume(sizeGiB: number): ec2.BlockDevice {
  return {
    deviceName: '/dev/xvda',
    volume: ec2.BlockDeviceVolume.ebs(sizeGiB, {
      volumeType: ec2.EbsDeviceVolumeType.GP3,
      encrypted: true,
      deleteOnTermination: true,
    }),
  };
}

const SINGLETON_GROUP =
  'A group of exactly one manager; replacements show in the Auto Scaling activity history.';
const SSM_CORE_FINDING =
  'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]';
const SSM_CORE_REASON =
  'The AWS-maintained minimum for Session Manager, which replaces SSH and bastion hosts.';

/** The ASG ARN's wildcard stands for the group's generated UUID; the name pins the group. */
function groupArnFinding(stack: Stack, name: string) {
  return {
    id: wildcardResourceFinding(stack, jobGroupArn(stack, name)),
    reason:
      "The wildcard is the group's generated UUID; the group name pins the resource to the one job group.",
  };
}

function jobGroupArn(stack: Stack, name: string): string {
  return `arn:${stack.partition}:autoscaling:${stack.region}:${stack.account}:autoScalingGroup:*:autoScalingGroupName/${name}`;
}
