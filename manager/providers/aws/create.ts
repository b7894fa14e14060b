import { AutoScalingClient } from '@aws-sdk/client-auto-scaling';
import { EC2Client } from '@aws-sdk/client-ec2';
import type { Logger } from 'pino';
import type { Config } from '../../config/schema.js';
import type { Provider } from '../provider.js';
import { AwsProvider } from './aws-provider.js';
import type { AwsConfig } from './config.js';
import { noCapacityRetries } from './retry.js';

/** A job may end while the pool retires its instance: give the last job an hour past the pool's limit. */
const DEAD_MAN_GRACE_MS = 3_600_000;

/** SDK clients: default credential chain, adaptive retry (client-side rate limiting on throttling). */
export function awsClients(aws: AwsConfig): { ec2: EC2Client; autoscaling: AutoScalingClient } {
  const common = {
    region: aws.region,
    retryMode: 'adaptive' as const,
    maxAttempts: 6,
    ...(aws.endpoint ? { endpoint: aws.endpoint } : {}),
  };
  return {
    ec2: new EC2Client({ ...common, retryStrategy: noCapacityRetries(common) }),
    autoscaling: new AutoScalingClient(common),
  };
}

export async function createAwsProvider(config: Config, log: Logger): Promise<Provider> {
  const aws = config.aws;
  if (!aws) throw new Error('provider = "aws" needs an [aws] section');
  const { ec2, autoscaling } = awsClients(aws);
  return new AwsProvider({
    config: aws,
    fleetName: config.fleet_name,
    managerId: config.manager_id,
    stateDir: config.state_dir,
    maxLifetimeMs: aws.max_instance_lifetime ?? config.pool.max_instance_lifetime + DEAD_MAN_GRACE_MS,
    ec2,
    ...(aws.mode === 'asg' ? { autoscaling } : {}),
    log,
  });
}
