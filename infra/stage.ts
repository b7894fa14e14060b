/** One deployment stage (Dev or Prod): the POC GitLab and the runner fleet that serves it. */
import { Stage, type StageProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { JobAmiStack } from './ami/job-ami-stack.js';
import type { InfraConfig, StageConfig } from './config.js';
import { RunnerFleetStack } from './fleet/runner-fleet-stack.js';
import { GitlabPocStack } from './gitlab/gitlab-stack.js';
import { GitlabHaStack } from './gitlab/ha/ha-stack.js';
import { sizing } from './sizing.js';

export interface RunnerFleetStageProps extends StageProps {
  config: InfraConfig;
  /** This stage's names (host, certificate, fleet), distinct from every other stage's. */
  stage: StageConfig;
  account: string;
}

export class RunnerFleetStage extends Stage {
  readonly gitlab: GitlabPocStack | GitlabHaStack;
  readonly jobAmi: JobAmiStack;
  readonly fleet: RunnerFleetStack;

  constructor(scope: Construct, id: string, props: RunnerFleetStageProps) {
    super(scope, id, props);
    const { config, stage } = props;
    const env = { account: props.account, region: config.region };
    // The size is chosen here, once: both stacks share the network, buckets, certificate, external
    // load balancer and data stores, and give the fleet the same VPC.
    const smtp = config.smtp && {
      secretId: config.smtp.secretName,
      region: config.smtp.region,
      fromAddress: config.smtp.fromAddress ?? `gitlab@${stage.domainName}`,
    };
    if (config.size === '3k') {
      this.gitlab = new GitlabHaStack(this, 'GitLab', {
        env,
        description:
          'runner-fleet: GitLab 3k reference architecture (Rails, Sidekiq, Gitaly Cluster, RDS Multi-AZ, ElastiCache, S3)',
        domainName: stage.domainName,
        certificateArn: stage.certificateArn,
        hostedZone: stage.hostedZone,
        stageName: stage.name,
        size: config.ha,
        postgresMajor: config.postgresMajor,
        allowedCidr: config.allowedCidr,
        edition: config.gitlabEdition,
        version: stage.gitlabVersion,
        alarmEmail: config.alarmEmail,
        smtp,
      });
    } else {
      this.gitlab = new GitlabPocStack(this, 'GitLab', {
        env,
        description: 'runner-fleet: POC GitLab (VPC, NLB + ACM, EC2, RDS PostgreSQL, ElastiCache Redis, S3)',
        domainName: stage.domainName,
        certificateArn: stage.certificateArn,
        hostedZone: stage.hostedZone,
        stageName: stage.name,
        natGateways: config.natGateways,
        sizing: sizing(config.sizing),
        multiAz: config.multiAz,
        allowedCidr: config.allowedCidr,
        edition: config.gitlabEdition,
        version: stage.gitlabVersion,
        deployedVersion: stage.gitlabDeployedVersion,
        postgresMajor: config.postgresMajor,
        alarmEmail: config.alarmEmail,
        smtp,
      });
    }
    // The job AMI bakes in the stage's VPC, and its first image is published before the fleet
    // reads the parameter: JobAmi deploys after GitLab (its VPC) and before Fleet (dependency).
    this.jobAmi = new JobAmiStack(this, 'JobAmi', {
      env,
      description: 'runner-fleet: job AMI image pipeline (Image Builder) and its SSM parameter',
      fleetName: stage.fleetName,
      vpc: this.gitlab.vpc,
      gitlabRunner: { version: config.fleet.gitlabRunnerVersion, sha256: config.fleet.gitlabRunnerSha256 },
    });
    this.fleet = new RunnerFleetStack(this, 'Fleet', {
      env,
      description: 'runner-fleet: manager instance, job launch template and group, cache, job profiles',
      vpc: this.gitlab.vpc,
      fleetName: stage.fleetName,
      stageName: stage.name,
      mode: config.fleet.mode,
      gitlabUrl: `https://${stage.domainName}`,
      runnerTokenParameter: stage.runnerTokenParameter,
      cacheExpiryDays: config.fleet.cacheExpiryDays,
      maxJobInstances: config.fleet.maxJobInstances,
      jobInstanceType: config.fleet.jobInstanceType,
      managerInstanceType: config.fleet.managerInstanceType,
      jobMaxLifetimeMinutes: config.fleet.jobMaxLifetimeMinutes,
      packageTarball: config.fleet.packageTarball,
      gitlabRunnerVersion: config.fleet.gitlabRunnerVersion,
      gitlabRunnerSha256: config.fleet.gitlabRunnerSha256,
      jobAmiParameter: this.jobAmi.parameterName,
      alarmEmail: config.alarmEmail,
      credentialClasses: [
        { name: 'default' },
        // Roles the dev account places under /runner-fleet-jobs/ and lets this class assume.
        {
          name: 'deploy-dev',
          assumableRoleArns: [`arn:aws:iam::${config.accounts.dev}:role/runner-fleet-jobs/*`],
        },
      ],
    });
    this.fleet.addStackDependency(this.jobAmi, 'the launch template reads the job AMI parameter');
  }
}
