/**
 * The CDK app: the DevOps pipeline stack, a deploy-target stack per account, and the Dev and Prod
 * stages (POC GitLab + runner fleet). Everything comes from context (cdk.json / -c), nothing is
 * looked up, so `npm run synth` works offline and without credentials.
 */
import { Annotations, App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { readInfraConfig, requireRunnerChecksum } from './config.js';
import { dnsValidationSteps } from './gitlab/load-balancer.js';
import { DeployTargetStack } from './pipeline/deploy-target-stack.js';
import { DevopsPipelineStack } from './pipeline/devops-pipeline-stack.js';
import { RunnerFleetStage } from './stage.js';

export function buildApp(app: App): App {
  const config = readInfraConfig((key) => app.node.tryGetContext(key));
  const { accounts, region } = config;
  requireRunnerChecksum(config.fleet);

  new DevopsPipelineStack(app, 'RunnerFleet-DevOps-Pipeline', {
    env: { account: accounts.devops, region },
    description: 'runner-fleet: GitLab OIDC provider and the pipeline roles (DevOps account)',
    gitlabUrl: config.pipeline.gitlabUrl,
    audience: config.pipeline.audience,
    diffAudience: config.pipeline.diffAudience,
    projectPath: config.pipeline.projectPath,
    productionBranch: config.pipeline.productionBranch,
    targets: [
      { stage: 'dev', account: accounts.dev },
      { stage: 'prod', account: accounts.prod },
    ],
  });
  for (const [stage, account] of [
    ['dev', accounts.dev],
    ['prod', accounts.prod],
  ] as const) {
    const target = new DeployTargetStack(
      app,
      `RunnerFleet-${stage === 'dev' ? 'Dev' : 'Prod'}-DeployTarget`,
      {
        env: { account, region },
        description: `runner-fleet: the role the pipeline deploys ${stage} with`,
        stage,
        devopsAccount: accounts.devops,
        cdkQualifier: config.pipeline.cdkQualifier,
      },
    );
    // `cdk synth` shows the warnings of top-level stacks only; the certificate's own warning is
    // shown by `cdk deploy 'Dev/*'`. Here, so the first plain synth already says it.
    const names = config.stages[stage];
    if (!names.hostedZone && !names.certificateArn)
      Annotations.of(target).addWarningV2(
        'runner-fleet:certificate-dns-validation',
        dnsValidationSteps(names.domainName, region, stage),
      );
  }
  new RunnerFleetStage(app, 'Dev', { config, stage: config.stages.dev, account: accounts.dev });
  new RunnerFleetStage(app, 'Prod', { config, stage: config.stages.prod, account: accounts.prod });

  // Any unacknowledged cdk-nag finding fails the synth, in CI and on a laptop alike.
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return app;
}

// Entry point for `cdk synth` (cdk.json: node dist/infra/app.js).
if (import.meta.url === `file://${process.argv[1]}`) {
  buildApp(new App()).synth();
}
