/**
 * The job AMI as code: an EC2 Image Builder pipeline that bakes what every job instance needs
 * (infra/ami/job-image-component.ts) onto Amazon Linux 2023, and one SSM parameter that always
 * names the AMI the fleet launches from.
 *
 * - The parameter (`jobAmiParameterName`, data type aws:ec2:image) is written by the pipeline's
 *   distribution after each successful build, and first by this stack: the stack bakes one image
 *   while it is created (an `AWS::ImageBuilder::Image`, 30-60 min), so the fleet stack, which
 *   depends on this one, finds a published AMI on its very first deploy.
 * - Each image's package manifest goes to `<manifest prefix>/<ami-id>` from the image's own test
 *   phase, before distribution publishes the id: the fleet never runs an AMI doctor cannot check.
 * - Images are retained (never deleted by a stack update), so rolling back is pointing the
 *   parameter at an older AMI (docs/infrastructure.md).
 */
import { RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as imagebuilder from 'aws-cdk-lib/aws-imagebuilder';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import type { Construct } from 'constructs';
import type { GitlabRunnerRelease } from '../fleet/boot-scripts.js';
import { acknowledge, wildcardResourceFinding } from '../shared/nag.js';
import { contentVersion, renderJobImageComponentYaml } from './job-image-component.js';

/** The job AMI parameter of a fleet: the fleet stack's launch template resolves its image from it. */
export function jobAmiParameterName(fleetName: string): string {
  return `/runner-fleet/${fleetName}/job-ami`;
}

/** `[image] manifest_parameter_prefix` default of the manager config (manager/ops/config-schema.ts). */
export const AMI_MANIFEST_PREFIX = '/runner-fleet/ami';

/** AMI default user, and `[executor]` defaults the fleet's rendered config keeps. */
const JOB_USER = 'ec2-user';
const BUILDS_DIR = '/builds';
const CACHE_DIR = '/cache';

export interface JobAmiStackProps extends StackProps {
  fleetName: string;
  /** The build instance runs in a private subnet with egress (packages, gitlab-runner download). */
  vpc: ec2.IVpc;
  gitlabRunner: GitlabRunnerRelease;
  /** Image Builder build and test instances. */
  buildInstanceType?: string;
  /** When the pipeline looks for a newer base image or component (builds only if there is one). */
  scheduleExpression?: string;
}

export class JobAmiStack extends Stack {
  readonly parameterName: string;
  readonly pipeline: imagebuilder.CfnImagePipeline;

  constructor(scope: Construct, id: string, props: JobAmiStackProps) {
    super(scope, id, props);
    this.parameterName = jobAmiParameterName(props.fleetName);
    const name = `runner-fleet-${props.fleetName}-job`;

    const data = renderJobImageComponentYaml({
      sshUser: JOB_USER,
      buildsDir: BUILDS_DIR,
      cacheDir: CACHE_DIR,
      gitlabRunner: props.gitlabRunner,
      manifestParameterPrefix: AMI_MANIFEST_PREFIX,
    });
    const componentVersion = contentVersion(data);
    const component = new imagebuilder.CfnComponent(this, 'JobComponent', {
      name,
      platform: 'Linux',
      version: componentVersion,
      description: `runner-fleet job instance tools, gitlab-runner ${props.gitlabRunner.version}`,
      data,
    });

    // `x.x.x`: each pipeline run starts from the newest Amazon Linux 2023 Image Builder publishes.
    const parentImage = `arn:${this.partition}:imagebuilder:${this.region}:aws:image/amazon-linux-2023-x86/x.x.x`;
    const updateLinux = `arn:${this.partition}:imagebuilder:${this.region}:aws:component/update-linux/x.x.x`;
    const rootVolumeGiB = 20;
    const recipe = new imagebuilder.CfnImageRecipe(this, 'JobRecipe', {
      name,
      version: contentVersion(componentVersion, 'al2023-x86', 'update-linux', String(rootVolumeGiB)),
      parentImage,
      components: [{ componentArn: updateLinux }, { componentArn: component.attrArn }],
      blockDeviceMappings: [
        {
          deviceName: '/dev/xvda',
          // The fleet's launch template sizes the job root volume; this is the snapshot's minimum.
          ebs: { volumeSize: rootVolumeGiB, volumeType: 'gp3', encrypted: true, deleteOnTermination: true },
        },
      ],
    });

    const role = new iam.Role(this, 'BuildRole', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: `Image Builder build and test instances of ${name}`,
      managedPolicies: [
        iam.ManagedPolicy.fromAwsManagedPolicyName('EC2InstanceProfileForImageBuilder'),
        iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore'),
      ],
    });
    const manifests = `arn:${this.partition}:ssm:${this.region}:${this.account}:parameter${AMI_MANIFEST_PREFIX}/*`;
    const publish = new iam.Policy(this, 'PublishManifest', {
      statements: [new iam.PolicyStatement({ actions: ['ssm:PutParameter'], resources: [manifests] })],
    });
    publish.attachToRole(role);
    acknowledge(role, [
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/EC2InstanceProfileForImageBuilder]',
        reason:
          'The AWS-maintained minimum Image Builder requires on its build instances (component download, logs, status).',
      },
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
        reason: 'Image Builder runs components through the SSM agent; this is its AWS-maintained minimum.',
      },
    ]);
    acknowledge(publish, [
      {
        id: wildcardResourceFinding(this, manifests),
        reason:
          'The test phase writes the manifest of the AMI it was booted from, named by an AMI id known only at build time; the prefix is the manifests only (not the job AMI parameter, not tokens).',
      },
    ]);
    const profile = new iam.InstanceProfile(this, 'BuildProfile', { role });

    const securityGroup = new ec2.SecurityGroup(this, 'BuildSecurityGroup', {
      vpc: props.vpc,
      description: 'Image Builder build instances of the job AMI: no inbound, outbound for packages',
      allowAllOutbound: true,
    });
    const subnet = props.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }).subnets[0];
    if (!subnet) throw new Error('the job AMI build needs a private subnet with egress');
    const infrastructure = new imagebuilder.CfnInfrastructureConfiguration(this, 'BuildInfrastructure', {
      name,
      description: 'Build and test instances of the runner-fleet job AMI',
      instanceProfileName: profile.instanceProfileName,
      instanceTypes: [props.buildInstanceType ?? 't3.medium'],
      subnetId: subnet.subnetId,
      securityGroupIds: [securityGroup.securityGroupId],
      terminateInstanceOnFailure: true,
      instanceMetadataOptions: { httpTokens: 'required', httpPutResponseHopLimit: 1 },
    });

    const distribution = new imagebuilder.CfnDistributionConfiguration(this, 'Distribution', {
      name,
      description: `Publishes each new job AMI's id to ${this.parameterName}`,
      distributions: [
        {
          region: this.region,
          // Untyped in aws-cdk-lib (passed through as is): CloudFormation's own casing.
          amiDistributionConfiguration: {
            Name: `${name}-{{ imagebuilder:buildDate }}`,
            AmiTags: { 'runner-fleet:fleet': props.fleetName, 'runner-fleet:image': 'job' },
          },
          ssmParameterConfigurations: [{ parameterName: this.parameterName, dataType: 'aws:ec2:image' }],
        },
      ],
    });

    const tests = { imageTestsEnabled: true, timeoutMinutes: 60 };
    this.pipeline = new imagebuilder.CfnImagePipeline(this, 'Pipeline', {
      name,
      description: 'Bakes the runner-fleet job AMI and publishes its id and package manifest to SSM',
      imageRecipeArn: recipe.attrArn,
      infrastructureConfigurationArn: infrastructure.attrArn,
      distributionConfigurationArn: distribution.attrArn,
      imageTestsConfiguration: tests,
      enhancedImageMetadataEnabled: true,
      status: 'ENABLED',
      schedule: {
        scheduleExpression: props.scheduleExpression ?? 'cron(0 4 ? * mon *)',
        // A weekly look, a build only when Amazon Linux or a component has a newer version.
        pipelineExecutionStartCondition: 'EXPRESSION_MATCH_AND_DEPENDENCY_UPDATES_AVAILABLE',
      },
    });

    // The first image, baked while this stack deploys, so the parameter exists before the fleet
    // stack reads it. A changed recipe replaces it (a new bake); retained, so the old AMI stays
    // for rollback.
    const firstImage = new imagebuilder.CfnImage(this, 'Image', {
      imageRecipeArn: recipe.attrArn,
      infrastructureConfigurationArn: infrastructure.attrArn,
      imageTestsConfiguration: tests,
      enhancedImageMetadataEnabled: true,
    });
    firstImage.applyRemovalPolicy(RemovalPolicy.RETAIN);
    new ssm.StringParameter(this, 'JobAmiParameter', {
      parameterName: this.parameterName,
      description: `AMI the ${props.fleetName} job instances launch from; updated by the ${name} image pipeline`,
      stringValue: firstImage.attrImageId,
      dataType: ssm.ParameterDataType.AWS_EC2_IMAGE,
    });
  }
}
