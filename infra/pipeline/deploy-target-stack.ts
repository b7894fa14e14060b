/**
 * Dev or Prod account: the role the pipeline deploys with. It trusts one principal in the DevOps
 * account (that stage's pipeline role) and may only assume this account's CDK bootstrap roles,
 * which trust their own account by default. This is the `cdk bootstrap --trust` relationship,
 * narrowed from "the whole DevOps account" to one role per stage.
 */
import { Duration, Stack, type StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';
import {
  cdkBootstrapRoleArns,
  type DeployStage,
  deployRoleName,
  pipelineRoleName,
  roleArn,
} from './names.js';

export interface DeployTargetStackProps extends StackProps {
  stage: DeployStage;
  devopsAccount: string;
  /** Qualifier passed to `cdk bootstrap` in this account (CDK's default: hnb659fds). */
  cdkQualifier: string;
}

export class DeployTargetStack extends Stack {
  readonly deployRole: iam.Role;

  constructor(scope: Construct, id: string, props: DeployTargetStackProps) {
    super(scope, id, props);
    const pipelineRole = roleArn(props.devopsAccount, pipelineRoleName(props.stage), this.partition);
    this.deployRole = new iam.Role(this, 'DeployRole', {
      roleName: deployRoleName(props.stage),
      description: `Deploys runner-fleet stacks to ${props.stage}; assumed by ${pipelineRole} only`,
      maxSessionDuration: Duration.hours(1),
      // The account principal plus a PrincipalArn condition, not the role ARN as principal: IAM
      // would reject a trust on a role that does not exist yet, and this keeps deploy order free.
      assumedBy: new iam.AccountPrincipal(props.devopsAccount).withConditions({
        ArnEquals: { 'aws:PrincipalArn': pipelineRole },
      }),
    });
    this.deployRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'UseCdkBootstrapRoles',
        actions: ['sts:AssumeRole'],
        resources: cdkBootstrapRoleArns(this.partition, this.account, this.region, props.cdkQualifier),
      }),
    );
  }
}
