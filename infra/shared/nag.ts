/**
 * cdk-nag v3 findings are acknowledged through CDK's own Validations API, one finding id at a
 * time (e.g. `AwsSolutions-IAM5[Resource::*]`); an acknowledgement covers the construct and
 * everything below it. Every acknowledgement must carry the real reason it is acceptable.
 */
import { Stack, Validations } from 'aws-cdk-lib';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type { IConstruct } from 'constructs';

export interface Acknowledgement {
  id: string;
  reason: string;
}

export function acknowledge(scope: IConstruct, rules: Acknowledgement[]): void {
  if (rules.length > 0) Validations.of(scope).acknowledge(...rules);
}

/** The IAM5 finding id cdk-nag reports for a `<bucket arn>/*` resource. */
export function bucketObjectsFinding(bucket: s3.Bucket): string {
  const logicalId = Stack.of(bucket).getLogicalId(bucket.node.defaultChild as s3.CfnBucket);
  return `AwsSolutions-IAM5[Resource::<${logicalId}.Arn>/*]`;
}
