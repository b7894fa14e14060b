/**
 * A health check the pipeline's smoke test runs on an instance through SSM Run Command: a Command
 * document that can only fetch one loopback URL. The deploy role may send this document, never
 * AWS-RunShellScript, so a pipeline credential cannot become root on GitLab or the manager.
 */
import { Tags } from 'aws-cdk-lib';
import type * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import {
  type DeployStage,
  HEALTH_CHECK_TAG,
  type HealthCheckTarget,
  healthCheckDocumentName,
  healthCheckTagValue,
} from '../pipeline/names.js';

/**
 * The document's content: curl prints the body either way (GitLab's readiness JSON names the
 * failing check), and its exit code is the command's status.
 */
export function healthCheckDocumentContent(url: string): Record<string, unknown> {
  if (!/^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?\/[\w./?=&-]*$/.test(url))
    throw new Error(`a health check fetches a loopback http URL only, got ${url}`);
  return {
    schemaVersion: '2.2',
    description: `Fetch ${url} on this instance (runner-fleet smoke test)`,
    mainSteps: [
      {
        action: 'aws:runShellScript',
        name: 'fetch',
        inputs: {
          runCommand: ['set -eu', `curl -sS --fail-with-body --max-time 20 '${url}'`],
          timeoutSeconds: '60',
        },
      },
    ],
  };
}

export interface HealthCheckProps {
  stage: DeployStage;
  target: HealthCheckTarget;
  url: string;
  /** The instances it runs on: tagged at launch with the check's tag. */
  group: autoscaling.AutoScalingGroup;
}

export class HealthCheck extends Construct {
  readonly document: ssm.CfnDocument;

  constructor(scope: Construct, id: string, props: HealthCheckProps) {
    super(scope, id);
    this.document = new ssm.CfnDocument(this, 'Document', {
      name: healthCheckDocumentName(props.stage, props.target),
      documentType: 'Command',
      updateMethod: 'NewVersion',
      content: healthCheckDocumentContent(props.url),
    });
    Tags.of(props.group).add(HEALTH_CHECK_TAG, healthCheckTagValue(props.stage, props.target), {
      applyToLaunchedInstances: true,
    });
  }
}
