/**
 * One bucket per object type of GitLab's consolidated object storage, plus the backup bucket,
 * and the IAM statements that give the GitLab instance exactly these buckets and nothing else.
 */
import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { privateBucket } from '../shared/buckets.js';
import { OBJECT_TYPES, type ObjectType } from './gitlab-rb.js';

export interface ObjectStorageProps {
  accessLogs: s3.IBucket;
  /** How long a backup is kept in S3. GitLab's backup_keep_time prunes local copies only. */
  backupRetentionDays?: number;
}

export class ObjectStorage extends Construct {
  readonly buckets: Record<ObjectType, s3.Bucket>;
  readonly backups: s3.Bucket;

  constructor(scope: Construct, id: string, props: ObjectStorageProps) {
    super(scope, id);
    const entries = OBJECT_TYPES.map(
      (type) => [type, privateBucket(this, bucketId(type), { accessLogs: props.accessLogs })] as const,
    );
    this.buckets = Object.fromEntries(entries) as Record<ObjectType, s3.Bucket>;

    const retention = props.backupRetentionDays ?? 30;
    this.backups = privateBucket(this, 'Backups', {
      accessLogs: props.accessLogs,
      // Versioning guards against an overwritten or deleted backup; the rule keeps the cost bounded.
      versioned: true,
      lifecycleRules: [
        {
          id: 'expire-backups',
          expiration: Duration.days(retention),
          noncurrentVersionExpiration: Duration.days(7),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
    });
  }

  /** Object-level and bucket-level permissions on exactly these buckets. */
  grantTo(role: iam.IRole): void {
    const all = [...Object.values(this.buckets), this.backups];
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'GitlabObjectStorageBuckets',
        actions: ['s3:ListBucket', 's3:GetBucketLocation', 's3:ListBucketMultipartUploads'],
        resources: all.map((b) => b.bucketArn),
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'GitlabObjectStorageObjects',
        actions: [
          's3:GetObject',
          's3:PutObject',
          's3:DeleteObject',
          's3:AbortMultipartUpload',
          's3:ListMultipartUploadParts',
        ],
        resources: all.map((b) => b.arnForObjects('*')),
      }),
    );
  }
}

function bucketId(type: ObjectType): string {
  return type
    .split('_')
    .map((part) => part[0]!.toUpperCase() + part.slice(1))
    .join('');
}
