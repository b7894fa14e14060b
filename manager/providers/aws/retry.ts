/**
 * The EC2 client's retry strategy: the SDK's own (adaptive: back-off plus client-side rate
 * limiting on throttling), except that a capacity error is never retried. EC2 answers
 * InsufficientInstanceCapacity with HTTP 500, which the SDK counts as transient and retries up to
 * `maxAttempts` times with back-off; the launcher instead moves on to the next instance type or
 * subnet at once, so a dry pool costs one call, not six.
 */
import { EC2Client, type EC2ClientConfig } from '@aws-sdk/client-ec2';
import { CAPACITY_CODES } from './errors.js';

/** The SDK's RetryStrategyV2, structurally (its types live in a transitive package). */
export interface RetryStrategyLike {
  acquireInitialRetryToken(scope: string): Promise<unknown>;
  refreshRetryTokenForRetry(token: unknown, info: { error?: { name?: string } }): Promise<unknown>;
  recordSuccess(token: unknown): void;
}

/**
 * @param inner the strategy to wrap; by default the SDK's own for `config`. The simulator passes
 *   one that waits in virtual time.
 */
export function noCapacityRetries(
  config: EC2ClientConfig,
  given?: RetryStrategyLike,
): NonNullable<EC2ClientConfig['retryStrategy']> {
  const inner = given ? Promise.resolve(given) : sdkDefault(config);
  let resolved: RetryStrategyLike | undefined;
  void inner.then((s) => {
    resolved = s;
  });
  const strategy: RetryStrategyLike & { mode: string } = {
    mode: String(config.retryMode ?? 'standard'),
    acquireInitialRetryToken: async (scope) => (await inner).acquireInitialRetryToken(scope),
    refreshRetryTokenForRetry: async (token, info) => {
      // Throwing here ends the retries; the SDK then throws the call's own error.
      if (CAPACITY_CODES.has(info.error?.name ?? '')) throw new Error('capacity errors are not retried');
      return (await inner).refreshRetryTokenForRetry(token, info);
    },
    recordSuccess: (token) => resolved?.recordSuccess(token),
  };
  return strategy as unknown as NonNullable<EC2ClientConfig['retryStrategy']>;
}

/** The default strategy for this config, taken from a client that is never used for a call. */
function sdkDefault(config: EC2ClientConfig): Promise<RetryStrategyLike> {
  const probe = new EC2Client(config);
  const inner = (probe.config.retryStrategy as () => Promise<RetryStrategyLike>)();
  probe.destroy();
  return inner;
}
