/**
 * AWS errors in the provider's words: a stable code (the AWS error code) and a message that tells
 * ops what to do. Everything that reaches a job log or a launch failure goes through here.
 */

export const THROTTLING_CODES = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
]);

export const CAPACITY_CODES = new Set([
  'InsufficientInstanceCapacity',
  'InsufficientCapacity',
  'InsufficientHostCapacity',
  'InsufficientReservedInstanceCapacity',
  'MaxSpotInstanceCountExceeded',
  'SpotMaxPriceTooLow',
  'UnfulfillableCapacity',
  'InstanceLimitExceeded',
  'VcpuLimitExceeded',
  'Unsupported',
]);

/** The AWS error code of an SDK v3 error (`name`, or `Code` for some query-protocol errors). */
export function awsErrorCode(error: unknown): string {
  const e = error as { name?: string; Code?: string; code?: string };
  return e?.Code ?? e?.name ?? e?.code ?? 'UnknownError';
}

/** The advice for one AWS error code, appended to the AWS message. */
export function advice(code: string): string {
  if (THROTTLING_CODES.has(code))
    return 'AWS throttled the API calls even after retries; lower [aws] launch_rate or raise reconcile_interval, or ask AWS for a higher API rate limit';
  if (code === 'InstanceLimitExceeded' || code === 'VcpuLimitExceeded')
    return 'the account hit its EC2 vCPU quota; request a quota increase (Service Quotas, "Running On-Demand/Spot instances") or lower [pool] max_instances';
  if (code === 'MaxSpotInstanceCountExceeded')
    return 'the account hit its spot quota; request an increase or set [aws] market = "on-demand"';
  if (CAPACITY_CODES.has(code))
    return 'AWS has no capacity for these instance types in these subnets right now; add instance types or subnets in other zones to [aws] instance_types / subnets (the launch is retried)';
  if (code === 'UnauthorizedOperation' || code === 'AccessDenied' || code === 'AccessDeniedException')
    return "the manager's IAM role lacks a permission; attach the policy printed by `runner-fleet iam-policy`";
  if (code.startsWith('InvalidLaunchTemplate'))
    return "check [aws] launch_template and launch_template_version (or the group's launch template)";
  if (code.startsWith('InvalidSubnet')) return 'check [aws] subnets: every id must exist in [aws] region';
  if (code === 'ValidationError') return 'check the Auto Scaling group named by [aws] asg_name';
  if (code === 'CredentialsProviderError' || code === 'ExpiredToken' || code === 'InvalidClientTokenId')
    return 'the manager has no valid AWS credentials; give its EC2 instance a role (or set a profile / environment credentials)';
  return 'see the AWS message; the launch is retried on the next reconcile';
}

export function describeAwsError(error: unknown): { code: string; message: string } {
  const code = awsErrorCode(error);
  const raw = (error as Error)?.message ?? String(error);
  return { code, message: `${code}: ${raw} (${advice(code)})` };
}
