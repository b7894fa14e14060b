/**
 * Job credentials: verify a job's GitLab ID token, then choose its instance profile from the
 * verified claims. Wiring, in the daemon:
 *
 *   const verifier = verifierFor(config.credentials);            // once, at start (and on reload)
 *   const token = job.idToken;                                    // CUSTOM_ENV_<token_variable>, from prepare
 *   const verification = token && verifier
 *     ? await verifier.verify(token, { jobId, projectPath, projectId })
 *     : undefined;
 *   const choice = selectCredentials(config.credentials, verification);
 *   progress(choice.logLine);                                     // the one job-log line
 */
import type { CredentialsConfig } from './schema.js';
import { createIdTokenVerifier, type IdTokenVerifier, type IdTokenVerifierOptions } from './verify.js';

export { compileGlob, GlobError } from './glob.js';
export {
  CLAIM_KEYS,
  type CredentialRule,
  type CredentialsConfig,
  type CredentialsInput,
  credentialsSchema,
  credentialsSectionSchema,
  isInstanceProfile,
  type LaunchOverrides,
  PIPELINE_SOURCES,
  profileDisplayName,
  type RuleConditions,
} from './schema.js';
export {
  type CredentialSelection,
  canReuse,
  conditionsMatch,
  DEFAULT_CLASS,
  isForkMergeRequest,
  selectCredentials,
} from './select.js';
export {
  ALLOWED_ALGORITHMS,
  createIdTokenVerifier,
  type ExpectedJob,
  type IdTokenVerifier,
  type IdTokenVerifierOptions,
  idTokenFromEnv,
  type Verification,
  type VerifiedClaims,
} from './verify.js';

/** The verifier for a loaded config, or undefined when no `gitlab_url` is configured (no rules then). */
export function verifierFor(
  config: CredentialsConfig,
  extra: Pick<IdTokenVerifierOptions, 'fetch' | 'cooldownMs'> = {},
): IdTokenVerifier | undefined {
  if (config.gitlabUrl === undefined) return undefined;
  return createIdTokenVerifier({
    gitlabUrl: config.gitlabUrl,
    audience: config.audience,
    clockSkewSeconds: config.clockSkewMs / 1000,
    jwksTimeoutMs: config.jwksTimeoutMs,
    cacheTtlMs: config.jwksCacheTtlMs,
    ...extra,
  });
}
