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
  return wildcardResourceFinding(bucket, bucket.arnForObjects('*'));
}

/**
 * The IAM5 finding id cdk-nag reports for a resource string that may hold tokens: it writes
 * `{Ref: X}` as `<X>` and `{Fn::GetAtt: [X, Y]}` as `<X.Y>`, joined with the literal parts.
 */
export function wildcardResourceFinding(scope: IConstruct, resource: string): string {
  return `AwsSolutions-IAM5[Resource::${nagText(Stack.of(scope).resolve(resource))}]`;
}

function nagText(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const v = value as Record<string, unknown>;
    if (typeof v.Ref === 'string') return `<${v.Ref}>`;
    if (Array.isArray(v['Fn::GetAtt'])) return `<${(v['Fn::GetAtt'] as string[]).join('.')}>`;
    const join = v['Fn::Join'] as [string, unknown[]] | undefined;
    if (Array.isArray(join)) return join[1].map(nagText).join(join[0]);
  }
  throw new Error(`cannot express ${JSON.stringify(value)} as a cdk-nag finding`);
}
