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

/**
 * The pipeline's read-only identity for `cdk diff`: a second role pair per stage, trusted for a
 * different ID-token audience, so the token a diff job holds cannot become the deploy role.
 */
export const diffPipelineRoleName = (stage: DeployStage) => `runner-fleet-pipeline-diff-${stage}`;
export const diffRoleName = (stage: DeployStage) => `runner-fleet-diff-${stage}`;

/** What a smoke test checks on an instance after a deploy. */
export type HealthCheckTarget = 'gitlab' | 'manager';

/**
 * Fixed names, because the deploy role (another stack) names the document and the tag value.
 * The tag (HEALTH_CHECK_TAG) marks the instances the check may run on.
 */
export const healthCheckDocumentName = (stage: DeployStage, target: HealthCheckTarget) =>
  `runner-fleet-${stage}-${target}-health`;
export const healthCheckTagValue = (stage: DeployStage, target: HealthCheckTarget) => `${stage}-${target}`;
export const HEALTH_CHECK_TAG = 'runner-fleet:health-check';
