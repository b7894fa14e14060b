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
      ClientIdList: ['sts.amazonaws.com'],
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
        'gitlab.example.com:sub': 'project_path:ops/runner-fleet:ref_type:branch:ref:main',
      },
    });
  });

  it('trusts the dev role only for the protected default branch too: no ref wildcard', () => {
    const [statement] = roleNamed(p, 'runner-fleet-pipeline-dev').AssumeRolePolicyDocument.Statement;
    expect(statement.Condition).toEqual({
      StringEquals: {
        'gitlab.example.com:aud': 'sts.amazonaws.com',
        'gitlab.example.com:sub': 'project_path:ops/runner-fleet:ref_type:branch:ref:main',
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

  it("may only assume this account's CDK bootstrap roles", () => {
    prod.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: [
          {
            Sid: 'UseCdkBootstrapRoles',
            Action: 'sts:AssumeRole',
            Effect: 'Allow',
            Resource: ['deploy', 'file-publishing', 'image-publishing', 'lookup'].map(
              (kind) => `arn:aws:iam::333333333333:role/cdk-hnb659fds-${kind}-role-333333333333-eu-west-1`,
            ),
          },
        ],
      },
    });
  });

  it('have no IAM users or access keys anywhere in the pipeline', () => {
    for (const template of [p, dev, prod]) {
      template.resourceCountIs('AWS::IAM::User', 0);
      template.resourceCountIs('AWS::IAM::AccessKey', 0);
    }
  });
});

describe('pipeline stacks: checks', () => {
  it('pass cdk-nag AwsSolutions with nothing acknowledged', () => {
    for (const stack of [devops, ...targets]) {
      expect(synth.nagViolations(stack)).toEqual([]);
      expect(acknowledgements(stack)).toEqual([]);
    }
  });

  it('synthesize without CloudFormation-validate findings', () => {
    expect(synth.validationViolations()).toEqual([]);
  });
});
