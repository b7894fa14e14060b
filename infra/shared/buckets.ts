/**
 * Every bucket in this app is private, encrypted, TLS-only and access-logged; these two helpers
 * are the only places buckets are created, so no stack can forget one of those properties.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import { acknowledge } from './nag.js';

export interface PrivateBucketProps {
  /** Destination of S3 server access logs (see accessLogBucket). */
  accessLogs: s3.IBucket;
  versioned?: boolean;
  lifecycleRules?: s3.LifecycleRule[];
}

/**
 * Buckets are retained when their stack is deleted: they hold repositories' artifacts, packages
 * and backups, which an accidental `cdk destroy` must not take with it (teardown empties them).
 */
export function privateBucket(scope: Construct, id: string, props: PrivateBucketProps): s3.Bucket {
  return new s3.Bucket(scope, id, {
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    encryption: s3.BucketEncryption.S3_MANAGED,
    enforceSSL: true,
    minimumTLSVersion: 1.2,
    versioned: props.versioned ?? false,
    lifecycleRules: props.lifecycleRules,
    serverAccessLogsBucket: props.accessLogs,
    serverAccessLogsPrefix: `${id}/`,
    removalPolicy: RemovalPolicy.RETAIN,
  });
}

/**
 * The stack's log bucket: S3 access logs, load balancer access logs and VPC flow logs. It uses
 * SSE-S3 because NLB access-log delivery does not support KMS-encrypted buckets.
 */
export function accessLogBucket(scope: Construct, id: string, retentionDays = 90): s3.Bucket {
  const bucket = new s3.Bucket(scope, id, {
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    encryption: s3.BucketEncryption.S3_MANAGED,
    enforceSSL: true,
    minimumTLSVersion: 1.2,
    lifecycleRules: [{ id: 'expire-logs', expiration: Duration.days(retentionDays) }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
  acknowledge(bucket, [
    {
      id: 'AwsSolutions-S1',
      reason: 'This is the access-log destination itself; logging it into itself would loop.',
    },
  ]);
  return bucket;
}
