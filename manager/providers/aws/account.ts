/** The AWS account the manager's credentials belong to (for `iam-policy` without --account). */
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import type { AwsConfig } from './config.js';

export async function callerAccount(aws: AwsConfig): Promise<string> {
  const sts = new STSClient({ region: aws.region, ...(aws.endpoint ? { endpoint: aws.endpoint } : {}) });
  try {
    const out = await sts.send(new GetCallerIdentityCommand({}));
    if (!out.Account) throw new Error('GetCallerIdentity returned no account');
    return out.Account;
  } finally {
    sts.destroy();
  }
}
