import { readFileSync } from 'node:fs';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeployTargetStack } from '../../infra/pipeline/deploy-target-stack.js';
import { DevopsPipelineStack } from '../../infra/pipeline/devops-pipeline-stack.js';
import { appWithContext } from './cdk-context.js';
import { acknowledgements, type Json, SYNTH_TIMEOUT_MS, Synthesized } from './synth.js';

const region = 'eu-west-1';
let synth: Synthesized;
let devops: DevopsPipelineStack;
let targets: DeployTargetStack[];
let p: Template;
let dev: Template;
let prod: Template;

beforeAll(() => {
  const app = appWithContext();
  devops = new DevopsPipelineStack(app, 'Pipeline', {
    env: { account: '111111111111', region },
    gitlabUrl: 'https://gitlab.example.com',
    audience: 'sts.amazonaws.com',
    diffAudience: 'runner-fleet-diff',
    projectPath: 'ops/runner-fleet',
    productionBranch: 'main',
    targets: [
      { stage: 'dev', account: '222222222222' },
      { stage: 'prod', account: '333333333333' },
    ],
  });
  targets = (['dev', 'prod'] as const).map(
    (stage, i) =>
      new DeployTargetStack(app, `Target-${stage}`, {
        env: { account: ['222222222222', '333333333333'][i], region },
        stage,
        devopsAccount: '111111111111',
        cdkQualifier: 'hnb659fds',
      }),
  );
  synth = new Synthesized(app);
  p = synth.template(devops);
  dev = synth.template(targets[0]!);
  prod = synth.template(targets[1]!);
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

/**
 * The `sub` docs/security.md ("Pipeline trust") says the roles trust, filled in for this stack:
 * the synthesized trust is checked against the documented form, not against a second copy of it.
 */
function documentedSub(projectPath: string, defaultBranch: string): string {
  const doc = readFileSync(new URL('../../docs/security.md', import.meta.url), 'utf8');
  const section = doc.slice(doc.indexOf('## Pipeline trust'));
  const form = /whose `sub` is exactly\s+`([^`]+)`/.exec(section)?.[1];
  expect(form, 'docs/security.md states the trusted sub form').toBeDefined();
  const slash = projectPath.lastIndexOf('/');
  const sub = (form as string)
    .replace('<group>', projectPath.slice(0, slash))
    .replace('<project>', projectPath.slice(slash + 1))
    .replace('<default branch>', defaultBranch);
  expect(sub, 'every placeholder of the documented form is filled in').not.toMatch(/[<>*]/);
  return sub;
}

/** The policy document attached to the role whose logical id starts with `rolePrefix`. */
const policyOf = (template: Template, rolePrefix: string) => {
  const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((r) =>
    JSON.stringify((r as { Properties: Json }).Properties.Roles).includes(`"${rolePrefix}`),
  ) as { Properties: Json }[];
  expect(policies).toHaveLength(1);
  return policies[0]!.Properties.PolicyDocument;
};

const roleNamed = (template: Template, name: string) =>
  (
    Object.values(template.findResources('AWS::IAM::Role', { Properties: { RoleName: name } }))[0] as {
      Properties: Record<string, Json>;
    }
  ).Properties;

describe('DevOps pipeline stack', () => {
  it('registers GitLab as an OIDC provider for the audience', () => {
    p.hasResourceProperties('AWS::IAM::OIDCProvider', {
      Url: 'https://gitlab.example.com',
      ClientIdList: ['sts.amazonaws.com', 'runner-fleet-diff'],
    });
    // A native resource: no custom-resource Lambda.
    p.resourceCountIs('AWS::Lambda::Function', 0);
  });

  it('trusts the production role only for the exact protected branch, with aud and sub', () => {
    const [statement] = roleNamed(p, 'runner-fleet-pipeline-prod').AssumeRolePolicyDocument.Statement;
    expect(statement.Action).toBe('sts:AssumeRoleWithWebIdentity');
    expect(statement.Principal.Federated).toEqual({ Ref: expect.stringMatching(/^GitlabOidc/) });
    expect(statement.Condition).toEqual({
      StringEquals: {
        'gitlab.example.com:aud': 'sts.amazonaws.com',
        'gitlab.example.com:sub': documentedSub('ops/runner-fleet', 'main'),
      },
    });
  });

  it('trusts the dev role only for the protected default branch too: no ref wildcard', () => {
    const [statement] = roleNamed(p, 'runner-fleet-pipeline-dev').AssumeRolePolicyDocument.Statement;
    expect(statement.Condition).toEqual({
      StringEquals: {
        'gitlab.example.com:aud': 'sts.amazonaws.com',
        'gitlab.example.com:sub': documentedSub('ops/runner-fleet', 'main'),
      },
    });
    expect(JSON.stringify(statement.Condition)).not.toContain('*');
  });

  it("lets each pipeline role assume only its own stage's deploy role", () => {
    for (const [stage, account] of [
      ['dev', '222222222222'],
      ['prod', '333333333333'],
    ]) {
      p.hasResourceProperties('AWS::IAM::Policy', {
        Roles: [{ Ref: Match.stringLikeRegexp(`^Pipeline${stage}`) }],
        PolicyDocument: {
          Statement: [
            {
              Sid: 'AssumeStageDeployRole',
              Effect: 'Allow',
              Action: 'sts:AssumeRole',
              Resource: `arn:aws:iam::${account}:role/runner-fleet-deploy-${stage}`,
            },
          ],
        },
      });
    }
  });
});

describe('DevOps pipeline stack: the read-only diff identity', () => {
  it('trusts the diff roles for the diff audience only, on the same protected branch', () => {
    for (const stage of ['dev', 'prod']) {
      const [statement] = roleNamed(p, `runner-fleet-pipeline-diff-${stage}`).AssumeRolePolicyDocument
        .Statement;
      expect(statement.Action).toBe('sts:AssumeRoleWithWebIdentity');
      expect(statement.Condition).toEqual({
        StringEquals: {
          'gitlab.example.com:aud': 'runner-fleet-diff',
          'gitlab.example.com:sub': documentedSub('ops/runner-fleet', 'main'),
        },
      });
    }
  });

  it("lets each diff role assume only its stage's diff role, never a deploy role", () => {
    for (const [stage, account] of [
      ['dev', '222222222222'],
      ['prod', '333333333333'],
    ]) {
      p.hasResourceProperties('AWS::IAM::Policy', {
        Roles: [{ Ref: Match.stringLikeRegexp(`^PipelineDiff${stage}`) }],
        PolicyDocument: {
          Statement: [
            {
              Sid: 'AssumeStageDiffRole',
              Effect: 'Allow',
              Action: 'sts:AssumeRole',
              Resource: `arn:aws:iam::${account}:role/runner-fleet-diff-${stage}`,
            },
          ],
        },
      });
    }
  });

  it('refuses one audience for deploy and diff: a diff token could then deploy', () => {
    const app = appWithContext();
    expect(
      () =>
        new DevopsPipelineStack(app, 'Same', {
          env: { account: '111111111111', region },
          gitlabUrl: 'https://gitlab.example.com',
          audience: 'sts.amazonaws.com',
          diffAudience: 'sts.amazonaws.com',
          projectPath: 'ops/runner-fleet',
          productionBranch: 'main',
          targets: [],
        }),
    ).toThrow(/diff audience must differ/);
  });
});

describe('Dev and Prod deploy target stacks', () => {
  it('trust only the matching pipeline role of the DevOps account', () => {
    for (const [template, stage] of [
      [dev, 'dev'],
      [prod, 'prod'],
    ] as const) {
      const [statement] = roleNamed(template, `runner-fleet-deploy-${stage}`).AssumeRolePolicyDocument
        .Statement;
      expect(statement.Action).toBe('sts:AssumeRole');
      expect(JSON.stringify(statement.Principal)).toContain(':iam::111111111111:root');
      expect(statement.Condition).toEqual({
        ArnEquals: { 'aws:PrincipalArn': `arn:aws:iam::111111111111:role/runner-fleet-pipeline-${stage}` },
      });
    }
  });

  it("deploy role: the CDK bootstrap roles, and the smoke test's health checks of its own stage only", () => {
    const acct = '333333333333';
    const policy = policyOf(prod, 'DeployRole');
    expect(policy.Statement).toEqual([
      {
        Sid: 'UseCdkBootstrapRoles',
        Action: 'sts:AssumeRole',
        Effect: 'Allow',
        Resource: ['deploy', 'file-publishing', 'image-publishing', 'lookup'].map(
          (kind) => `arn:aws:iam::${acct}:role/cdk-hnb659fds-${kind}-role-${acct}-eu-west-1`,
        ),
      },
      {
        Sid: 'SmokeTestDocuments',
        Action: 'ssm:SendCommand',
        Effect: 'Allow',
        Resource: ['gitlab', 'manager'].map(
          (t) => `arn:aws:ssm:eu-west-1:${acct}:document/runner-fleet-prod-${t}-health`,
        ),
      },
      {
        Sid: 'SmokeTestInstances',
        Action: 'ssm:SendCommand',
        Effect: 'Allow',
        Resource: `arn:aws:ec2:eu-west-1:${acct}:instance/*`,
        Condition: {
          StringEquals: { 'ssm:resourceTag/runner-fleet:health-check': ['prod-gitlab', 'prod-manager'] },
        },
      },
      {
        Sid: 'SmokeTestRead',
        Action: ['ec2:DescribeInstances', 'ssm:GetCommandInvocation'],
        Effect: 'Allow',
        Resource: '*',
      },
    ]);
    // Never the shell-anything document, never another stage's checks.
    expect(JSON.stringify(policy)).not.toMatch(/AWS-RunShellScript|runner-fleet-dev-/);
  });

  it('diff role: trusted by the diff pipeline role only, may assume the lookup role only', () => {
    for (const [template, stage, acct] of [
      [dev, 'dev', '222222222222'],
      [prod, 'prod', '333333333333'],
    ] as const) {
      const [statement] = roleNamed(template, `runner-fleet-diff-${stage}`).AssumeRolePolicyDocument
        .Statement;
      expect(statement.Condition).toEqual({
        ArnEquals: {
          'aws:PrincipalArn': `arn:aws:iam::111111111111:role/runner-fleet-pipeline-diff-${stage}`,
        },
      });
      expect(policyOf(template, 'DiffRole').Statement).toEqual([
        {
          Sid: 'UseCdkLookupRole',
          Action: 'sts:AssumeRole',
          Effect: 'Allow',
          Resource: `arn:aws:iam::${acct}:role/cdk-hnb659fds-lookup-role-${acct}-eu-west-1`,
        },
      ]);
    }
  });

  it('have no IAM users or access keys anywhere in the pipeline', () => {
    for (const template of [p, dev, prod]) {
      template.resourceCountIs('AWS::IAM::User', 0);
      template.resourceCountIs('AWS::IAM::AccessKey', 0);
    }
  });
});

describe('pipeline stacks: checks', () => {
  it("pass cdk-nag AwsSolutions; only the smoke test's wildcards are acknowledged", () => {
    expect(synth.nagViolations(devops)).toEqual([]);
    expect(acknowledgements(devops)).toEqual([]);
    for (const stack of targets) {
      expect(synth.nagViolations(stack)).toEqual([]);
      expect(
        acknowledgements(stack)
          .map((a) => a.id)
          .sort(),
      ).toEqual([
        'Annotation::AwsSolutions-IAM5[Resource::*]',
        `Annotation::AwsSolutions-IAM5[Resource::arn:aws:ec2:eu-west-1:${stack.account}:instance/*]`,
      ]);
    }
  });

  it('synthesize without CloudFormation-validate findings', () => {
    expect(synth.validationViolations()).toEqual([]);
  });
});
