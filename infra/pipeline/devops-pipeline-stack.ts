/**
 * DevOps account: GitLab as an OIDC identity provider, and one role per deploy stage that a
 * pipeline job assumes with its ID token (AssumeRoleWithWebIdentity). No access keys anywhere.
 *
 * Self-managed GitLab: of its claims, only `sub` is usable as an IAM condition key (besides
 * `aud`), so the trust pins the project and the ref through `sub`.
 */
import { Duration, Stack, type StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';
import {
  type DeployStage,
  deployRoleName,
  diffPipelineRoleName,
  diffRoleName,
  pipelineRoleName,
  roleArn,
} from './names.js';

export interface DeployTarget {
  stage: DeployStage;
  account: string;
}

export interface DevopsPipelineStackProps extends StackProps {
  /** GitLab's URL, the `iss` of its ID tokens, e.g. https://gitlab.example.com. */
  gitlabUrl: string;
  /** The `aud` the pipeline puts in its `id_tokens:` entry. */
  audience: string;
  /**
   * The `aud` of the diff jobs' ID tokens: only the read-only diff roles accept it, so a token
   * handed to a job that runs without approval cannot become a deploy role.
   */
  diffAudience: string;
  /** `group/project` of the repository whose pipeline deploys. */
  projectPath: string;
  /** The protected branch that alone may deploy to production. */
  productionBranch: string;
  targets: DeployTarget[];
}

/** The `sub` claim GitLab puts in a branch pipeline's ID token. */
export function branchSubject(projectPath: string, branch: string): string {
  return `project_path:${projectPath}:ref_type:branch:ref:${branch}`;
}

export class DevopsPipelineStack extends Stack {
  readonly provider: iam.OidcProviderNative;
  readonly roles: Partial<Record<DeployStage, iam.Role>> = {};
  readonly diffRoles: Partial<Record<DeployStage, iam.Role>> = {};

  constructor(scope: Construct, id: string, props: DevopsPipelineStackProps) {
    super(scope, id, props);
    const issuerHost = props.gitlabUrl.replace(/^https:\/\//, '').replace(/\/+$/, '');
    if (issuerHost === props.gitlabUrl) throw new Error('gitlabUrl must be https://');
    if (props.diffAudience === props.audience)
      throw new Error('the diff audience must differ from the deploy audience, or a diff token could deploy');

    this.provider = new iam.OidcProviderNative(this, 'GitlabOidc', {
      url: `https://${issuerHost}`,
      clientIds: [props.audience, props.diffAudience],
    });

    for (const target of props.targets) {
      const role = new iam.Role(this, `Pipeline-${target.stage}`, {
        roleName: pipelineRoleName(target.stage),
        description: `GitLab pipeline of ${props.projectPath}: deploys to ${target.stage} (${target.account})`,
        maxSessionDuration: Duration.hours(1),
        assumedBy: new iam.WebIdentityPrincipal(
          this.provider.oidcProviderArn,
          trustConditions(issuerHost, props, target.stage),
        ),
      });
      // Its only power: become the deploy role of its own stage's account.
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'AssumeStageDeployRole',
          actions: ['sts:AssumeRole'],
          resources: [roleArn(target.account, deployRoleName(target.stage), this.partition)],
        }),
      );
      this.roles[target.stage] = role;

      const diffRole = new iam.Role(this, `PipelineDiff-${target.stage}`, {
        roleName: diffPipelineRoleName(target.stage),
        description: `GitLab pipeline of ${props.projectPath}: cdk diff of ${target.stage} (${target.account}), read only`,
        maxSessionDuration: Duration.hours(1),
        assumedBy: new iam.WebIdentityPrincipal(
          this.provider.oidcProviderArn,
          trustConditions(issuerHost, { ...props, audience: props.diffAudience }, target.stage),
        ),
      });
      diffRole.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'AssumeStageDiffRole',
          actions: ['sts:AssumeRole'],
          resources: [roleArn(target.account, diffRoleName(target.stage), this.partition)],
        }),
      );
      this.diffRoles[target.stage] = diffRole;
    }
  }
}

/**
 * Both stages: exactly `sub` of the protected production (default) branch, the form
 * docs/security.md ("Pipeline trust") states and test/infra/pipeline-stacks.test.ts reads.
 */
export function trustConditions(
  issuerHost: string,
  props: Pick<DevopsPipelineStackProps, 'audience' | 'projectPath' | 'productionBranch'>,
  stage: DeployStage,
): Record<string, Record<string, string>> {
  const aud = { [`${issuerHost}:aud`]: props.audience };
  const sub = `${issuerHost}:sub`;
  // Both stages trust only the protected default branch. A `ref:*` pattern let any pushed branch
  // that declares an ID token deploy to Dev with CloudFormation's role. IAM cannot see protected
  // environments or approvals: those hold only in GitLab (docs/security.md, pipeline trust).
  void stage;
  return { StringEquals: { ...aud, [sub]: branchSubject(props.projectPath, props.productionBranch) } };
}
