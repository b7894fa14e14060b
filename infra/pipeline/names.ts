/**
 * Role names shared by the DevOps account and the Dev/Prod accounts. Fixed names, because a
 * trust policy in one account names a role in another, and CDK cannot reference across accounts.
 */
export type DeployStage = 'dev' | 'prod';

export const pipelineRoleName = (stage: DeployStage) => `runner-fleet-pipeline-${stage}`;
export const deployRoleName = (stage: DeployStage) => `runner-fleet-deploy-${stage}`;

export function roleArn(account: string, name: string, partition = 'aws'): string {
  return `arn:${partition}:iam::${account}:role/${name}`;
}

/** The roles `cdk bootstrap` creates in an account (the CLI assumes them to deploy). */
export function cdkBootstrapRoleArns(
  partition: string,
  account: string,
  region: string,
  qualifier: string,
): string[] {
  return ['deploy', 'file-publishing', 'image-publishing', 'lookup'].map(
    (kind) => `arn:${partition}:iam::${account}:role/cdk-${qualifier}-${kind}-role-${account}-${region}`,
  );
}
