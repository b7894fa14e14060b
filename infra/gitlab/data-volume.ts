/**
 * GitLab's own data (/var/opt/gitlab: repositories, gitlab-shell keys, uploads in transit) on a
 * separate encrypted EBS volume that outlives the instance. The Auto Scaling group is pinned to the
 * volume's AZ, and a replacement instance waits for the volume to come free, attaches it and
 * mounts it before GitLab starts. Data Lifecycle Manager snapshots it on a schedule, besides the
 * nightly `gitlab-backup` to S3.
 */
import { RemovalPolicy, Size, Stack, Tags } from 'aws-cdk-lib';
import * as dlm from 'aws-cdk-lib/aws-dlm';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { acknowledge } from '../shared/nag.js';

/** Tag on the volume that the snapshot policy targets; its value is the stack name. */
export const DATA_VOLUME_TAG = 'runner-fleet:gitlab-data';
/** Tag the group puts on its instance; attach rights are conditioned on it. */
export const GITLAB_INSTANCE_TAG = 'runner-fleet:gitlab';
export const DATA_MOUNT_POINT = '/var/opt/gitlab';

export interface DataVolumeProps {
  /** The one subnet (and so AZ) the GitLab instance runs in. */
  subnet: ec2.ISubnet;
  sizeGiB: number;
  /** Snapshot every this many hours (DLM allows 1, 2, 3, 4, 6, 8, 12 or 24). */
  snapshotEveryHours: 1 | 2 | 3 | 4 | 6 | 8 | 12 | 24;
  /** How many snapshots to keep. */
  snapshotsKept: number;
}

export class DataVolume extends Construct {
  readonly volume: ec2.Volume;

  constructor(scope: Construct, id: string, props: DataVolumeProps) {
    super(scope, id);
    const stackName = Stack.of(this).stackName;
    this.volume = new ec2.Volume(this, 'Volume', {
      availabilityZone: props.subnet.availabilityZone,
      size: Size.gibibytes(props.sizeGiB),
      volumeType: ec2.EbsDeviceVolumeType.GP3,
      encrypted: true,
      // Deleting the stack keeps a final snapshot; the repositories are the one thing not in RDS or S3.
      removalPolicy: RemovalPolicy.SNAPSHOT,
    });
    Tags.of(this.volume).add(DATA_VOLUME_TAG, stackName);

    const role = new iam.Role(this, 'SnapshotRole', {
      assumedBy: new iam.ServicePrincipal('dlm.amazonaws.com'),
      description: 'Data Lifecycle Manager: snapshots of the GitLab data volume',
      managedPolicies: [
        iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSDataLifecycleManagerServiceRole'),
      ],
    });
    acknowledge(role, [
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole]',
        reason: 'The AWS-maintained policy Data Lifecycle Manager documents for EBS snapshot policies.',
      },
    ]);
    new dlm.CfnLifecyclePolicy(this, 'Snapshots', {
      description: `GitLab data volume of ${stackName}`,
      state: 'ENABLED',
      executionRoleArn: role.roleArn,
      policyDetails: {
        policyType: 'EBS_SNAPSHOT_MANAGEMENT',
        resourceTypes: ['VOLUME'],
        targetTags: [{ key: DATA_VOLUME_TAG, value: stackName }],
        schedules: [
          {
            name: `every ${props.snapshotEveryHours}h`,
            createRule: { interval: props.snapshotEveryHours, intervalUnit: 'HOURS', times: ['00:00'] },
            retainRule: { count: props.snapshotsKept },
            copyTags: true,
          },
        ],
      },
    });
  }

  /** Lets the GitLab instance find and attach this volume, and nothing else. */
  grantAttach(role: iam.IRole): void {
    const stack = Stack.of(this);
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'FindGitlabDataVolume',
        actions: ['ec2:DescribeVolumes'],
        resources: ['*'],
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'AttachGitlabDataVolume',
        actions: ['ec2:AttachVolume'],
        resources: [
          stack.formatArn({ service: 'ec2', resource: 'volume', resourceName: this.volume.volumeId }),
        ],
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'AttachToGitlabInstanceOnly',
        actions: ['ec2:AttachVolume'],
        resources: [stack.formatArn({ service: 'ec2', resource: 'instance', resourceName: '*' })],
        conditions: { StringEquals: { [`aws:ResourceTag/${GITLAB_INSTANCE_TAG}`]: stack.stackName } },
      }),
    );
  }
}

export interface AttachScriptOptions {
  volumeId: string;
  region: string;
  mountPoint?: string;
  /** Where udev links NVMe devices by serial; a test points this at a directory of its own. */
  byIdDir?: string;
  fstab?: string;
  /** How often to look for the volume to come free, 10 s apart (default 60: ten minutes). */
  waitAttempts?: number;
}

/**
 * Bash that attaches the data volume to this instance and mounts it at /var/opt/gitlab. It never
 * formats a volume that has a file system, never detaches it from another instance (it waits for
 * that instance to go, then gives up with the command to run), and is safe to run again.
 */
export function renderAttachDataVolumeScript(o: AttachScriptOptions): string {
  const mount = o.mountPoint ?? DATA_MOUNT_POINT;
  const byId = o.byIdDir ?? '/dev/disk/by-id';
  const fstab = o.fstab ?? '/etc/fstab';
  const attempts = o.waitAttempts ?? 60;
  return `#!/bin/bash
# Attach GitLab's data volume (${o.volumeId}) and mount it at ${mount}. Idempotent.
set -euo pipefail
export AWS_DEFAULT_REGION=${o.region}
volume=${o.volumeId}
imds=http://169.254.169.254/latest
token="$(curl -fsS -X PUT "$imds/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')"
instance="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/instance-id")"

# A replaced instance may still be shutting down with the volume attached: wait for it to go.
state=unknown
attached_to=None
for attempt in $(seq 1 ${attempts}); do
  read -r state attached_to < <(aws ec2 describe-volumes --volume-ids "$volume" \\
    --query 'Volumes[0].[State, Attachments[0].InstanceId]' --output text)
  if [ "$state" = available ] || [ "$attached_to" = "$instance" ]; then break; fi
  echo "data volume $volume is $state, attached to $attached_to; waiting for it to be released ($attempt/${attempts})"
  sleep 10
done
if [ "$attached_to" != "$instance" ]; then
  if [ "$state" != available ]; then
    echo "data volume $volume is still attached to $attached_to. If that instance is gone for good:" >&2
    echo "  aws ec2 detach-volume --volume-id $volume   (then reboot this instance)" >&2
    exit 1
  fi
  aws ec2 attach-volume --volume-id "$volume" --instance-id "$instance" --device /dev/sdf >/dev/null
fi

# Nitro instances expose EBS volumes as NVMe devices whose serial is the volume id without its dash.
device="${byId}/nvme-Amazon_Elastic_Block_Store_\${volume/-/}"
for attempt in $(seq 1 60); do
  [ -e "$device" ] && break
  sleep 2
done
if [ ! -e "$device" ]; then
  echo "data volume $volume attached but $device did not appear" >&2
  exit 1
fi

# An empty volume (first boot of the stack) gets a file system; one with data is never touched.
if ! blkid "$device" >/dev/null; then
  echo "data volume $volume is empty: creating an XFS file system"
  mkfs.xfs -q -L gitlab-data "$device"
fi
uuid="$(blkid -s UUID -o value "$device")"
mkdir -p ${mount}
if ! grep -q "^UUID=$uuid " ${fstab}; then
  echo "UUID=$uuid ${mount} xfs defaults,nofail 0 2" >> ${fstab}
fi
mountpoint -q ${mount} || mount ${mount}
echo "data volume $volume mounted at ${mount}"
`;
}
