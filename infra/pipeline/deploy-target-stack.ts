/**
 * Dev or Prod account: the roles the pipeline uses there, each trusting one principal of the
 * DevOps account. This is the `cdk bootstrap --trust` relationship, narrowed from "the whole
 * DevOps account" to one role per stage and purpose:
 *
 * - the deploy role may assume this account's CDK bootstrap roles, and run the smoke test: send
 *   the stage's two health-check documents (which only fetch a loopback URL) to the instances
 *   tagged for them, and read the answers;
 * - the diff role may assume the bootstrap lookup role only (read-only), which is all
 *   `cdk diff --method template` needs.
 */
import { Duration, Stack, type StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';
import { acknowledge, wildcardResourceFinding } from '../shared/nag.js';
import {
  cdkBootstrapRoleArns,
  type DeployStage,
  deployRoleName,
  diffPipelineRoleName,
  diffRoleName,
  HEALTH_CHECK_TAG,
  type HealthCheckTarget,
  healthCheckDocumentName,
  healthCheckTagValue,
  pipelineRoleName,
  roleArn,
} from './names.js';

export interface DeployTargetStackProps extends StackProps {
  stage: DeployStage;
  devopsAccount: string;
  /** Qualifier passed to `cdk bootstrap` in this account (CDK's default: hnb659fds). */
  cdkQualifier: string;
}

const HEALTH_CHECKS: HealthCheckTarget[] = ['gitlab', 'manager'];

export class DeployTargetStack extends Stack {
  readonly deployRole: iam.Role;
  readonly diffRole: iam.Role;

  constructor(scope: Construct, id: string, props: DeployTargetStackProps) {
    super(scope, id, props);
    const bootstrapRoles = cdkBootstrapRoleArns(
      this.partition,
      this.account,
      this.region,
      props.cdkQualifier,
    );
    const pipelineRole = roleArn(props.devopsAccount, pipelineRoleName(props.stage), this.partition);
    this.deployRole = new iam.Role(this, 'DeployRole', {
      roleName: deployRoleName(props.stage),
      description: `Deploys runner-fleet stacks to ${props.stage}; assumed by ${pipelineRole} only`,
      maxSessionDuration: Duration.hours(1),
      assumedBy: trustOnly(props.devopsAccount, pipelineRole),
    });
    this.deployRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UseCdkBootstrapRoles',
        actions: ['sts:AssumeRole'],
        resources: bootstrapRoles,
      }),
    );
    // The smoke test (infra/pipeline/smoke.ts). SendCommand is authorized on the document and on
    // each instance: the documents by name, the instances by the tag only their groups give.
    this.deployRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SmokeTestDocuments',
        actions: ['ssm:SendCommand'],
        resources: HEALTH_CHECKS.map(
          (target) =>
            `arn:${this.partition}:ssm:${this.region}:${this.account}:document/${healthCheckDocumentName(props.stage, target)}`,
        ),
      }),
    );
    const instances = `arn:${this.partition}:ec2:${this.region}:${this.account}:instance/*`;
    this.deployRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SmokeTestInstances',
        actions: ['ssm:SendCommand'],
        resources: [instances],
        conditions: {
          StringEquals: {
            [`ssm:resourceTag/${HEALTH_CHECK_TAG}`]: HEALTH_CHECKS.map((t) =>
              healthCheckTagValue(props.stage, t),
            ),
          },
        },
      }),
    );
    this.deployRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'SmokeTestRead',
        actions: ['ec2:DescribeInstances', 'ssm:GetCommandInvocation'],
        resources: ['*'],
      }),
    );
    acknowledge(this.deployRole, [
      {
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'ec2:DescribeInstances and ssm:GetCommandInvocation (read only) support no resource-level permissions.',
      },
      {
        id: wildcardResourceFinding(this, instances),
        reason: `Instance ids change on replacement; SendCommand on instances is conditioned on the ${HEALTH_CHECK_TAG} tag and allowed only with the two health-check documents.`,
      },
    ]);

    const diffPipelineRole = roleArn(props.devopsAccount, diffPipelineRoleName(props.stage), this.partition);
    this.diffRole = new iam.Role(this, 'DiffRole', {
      roleName: diffRoleName(props.stage),
      description: `Reads ${props.stage}'s deployed templates for cdk diff; assumed by ${diffPipelineRole} only`,
      maxSessionDuration: Duration.hours(1),
      assumedBy: trustOnly(props.devopsAccount, diffPipelineRole),
    });
    this.diffRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UseCdkLookupRole',
        actions: ['sts:AssumeRole'],
        resources: bootstrapRoles.filter((arn) => arn.includes('-lookup-role-')),
      }),
    );
  }
}

/**
 * The account principal plus a PrincipalArn condition, not the role ARN as principal: IAM would
 * reject a trust on a role that does not exist yet, and this keeps deploy order free.
 */
function trustOnly(account: string, principalArn: string): iam.IPrincipal {
  return new iam.AccountPrincipal(account).withConditions({
    ArnEquals: { 'aws:PrincipalArn': principalArn },
  });
}
