/**
 * Verification of a job's GitLab ID token, in the daemon. The token arrives through a value the job
 * author controls (`CUSTOM_ENV_<token_variable>`), so every byte of it is hostile until the
 * signature checks out against the GitLab instance's JWKS. This module never throws on bad input:
 * every failure is `{ ok: false, reason }` with a short reason that names the failing check and
 * never quotes the token.
 */
import {
  createRemoteJWKSet,
  customFetch,
  decodeProtectedHeader,
  type FetchImplementation,
  type JWTPayload,
  jwtVerify,
} from 'jose';

/** Asymmetric algorithms only: `none` and HS* (where a public key could be abused as the secret) never verify. */
export const ALLOWED_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
];

/** A JWT bigger than this is refused before any parsing; GitLab's are ~1-2 KB. */
const MAX_TOKEN_LENGTH = 16_384;

/** The claims selection may read. Strings exactly as GitLab signs them (booleans are "true"/"false"). */
export interface VerifiedClaims {
  readonly jobId: string;
  readonly projectPath: string;
  readonly projectId?: string;
  readonly namespacePath?: string;
  /** Id of the project the job runs in (GitLab 18.4+). */
  readonly jobProjectId?: string;
  /** Project the job runs in (GitLab 18.4+); differs from projectPath in fork MR pipelines run in the parent. */
  readonly jobProjectPath?: string;
  readonly jobNamespacePath?: string;
  /** Source project of a merge request (newer GitLab versions). */
  readonly sourceProjectPath?: string;
  readonly ref?: string;
  readonly refType?: string;
  readonly refProtected?: string;
  readonly environment?: string;
  readonly environmentProtected?: string;
  readonly pipelineSource?: string;
  readonly userLogin?: string;
}

export type Verification =
  | { readonly ok: true; readonly claims: VerifiedClaims }
  | {
      readonly ok: false;
      readonly reason: string;
      /**
       * True when the failure says nothing about the token (JWKS unreachable or timed out): the
       * caller may prefer a system failure (GitLab retries it) over running a privileged job with
       * the default profile.
       */
      readonly transient?: boolean;
    };

export interface ExpectedJob {
  /** The job being prepared. Take it from JOB_RESPONSE_FILE's `id`, which GitLab wrote, not from a CUSTOM_ENV_ value. */
  readonly jobId: string;
  /** CI_PROJECT_PATH of the job being prepared: the project the job runs in. */
  readonly projectPath: string;
  /**
   * JOB_RESPONSE_FILE's `job_info.project_id`, when known. Unlike CUSTOM_ENV_CI_PROJECT_PATH
   * (which a job can override with a variable of the same name) GitLab wrote it, so it makes the
   * project check meaningful on its own.
   */
  readonly projectId?: string;
}

export interface IdTokenVerifierOptions {
  /** GitLab base URL without trailing slash; must equal the token's `iss`. */
  readonly gitlabUrl: string;
  readonly audience: string;
  readonly clockSkewSeconds: number;
  /** Bound on one JWKS fetch; the whole verification is bounded by this plus a small margin. */
  readonly jwksTimeoutMs: number;
  /** How long fetched keys are trusted before a refetch. */
  readonly cacheTtlMs: number;
  /**
   * Minimum time between two refetches triggered by unknown `kid`s. Keeps a stream of tokens
   * with made-up kids from turning the daemon into a JWKS hammer. Default 30 s.
   */
  readonly cooldownMs?: number;
  /** Replacement fetch (tests, proxies). */
  readonly fetch?: FetchImplementation;
}

export interface IdTokenVerifier {
  verify(token: string | undefined, expected: ExpectedJob): Promise<Verification>;
}

function fail(reason: string, transient = false): Verification {
  return transient ? { ok: false, reason, transient } : { ok: false, reason };
}

/** Values from an unverified header go into log lines only if they look harmless. */
function printable(value: unknown, max = 64): string | undefined {
  return typeof value === 'string' && value.length <= max && /^[\w.:+/=-]+$/.test(value) ? value : undefined;
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function stringClaim(payload: JWTPayload, key: string): string | undefined {
  const value = payload[key];
  if (typeof value === 'string') return value;
  // GitLab sends ids as strings, but a number is the same fact; anything else is not a claim we trust.
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value === 'boolean') return String(value);
  return undefined;
}

/** Turn a network-level error into a few words, without echoing anything from the response body. */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
  const code = printable(cause?.code, 32);
  if (code) return code;
  const message = error instanceof Error ? error.message : '';
  return printable(message.replace(/\s+/g, '_'), 80)?.replace(/_/g, ' ') ?? 'request failed';
}

export function createIdTokenVerifier(options: IdTokenVerifierOptions): IdTokenVerifier {
  const gitlabUrl = options.gitlabUrl.replace(/\/+$/, '');
  const jwksUrl = new URL(`${gitlabUrl}/oauth/discovery/keys`);
  const jwks = createRemoteJWKSet(jwksUrl, {
    timeoutDuration: options.jwksTimeoutMs,
    cacheMaxAge: options.cacheTtlMs,
    cooldownDuration: options.cooldownMs ?? 30_000,
    ...(options.fetch ? { [customFetch]: options.fetch } : {}),
  });
  const timeoutText = seconds(options.jwksTimeoutMs);
  // jose bounds the fetch itself; this outer bound also covers a response whose body trickles in
  // and anything else that could keep a prepare hook waiting on us.
  const overallMs = options.jwksTimeoutMs + 1_000;

  async function check(token: string, expected: ExpectedJob): Promise<Verification> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return fail('malformed token (not a JWS)');
    }
    const alg = printable(header.alg, 16);
    if (!alg || !ALLOWED_ALGORITHMS.includes(alg)) {
      return fail(`algorithm ${alg ?? 'unknown'} not allowed (asymmetric signatures only)`);
    }

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, jwks, {
        issuer: gitlabUrl,
        audience: options.audience,
        clockTolerance: options.clockSkewSeconds,
        algorithms: ALLOWED_ALGORITHMS,
        requiredClaims: ['exp', 'job_id', 'project_path'],
      }));
    } catch (error) {
      return reasonFor(error, header.kid);
    }

    const claims: VerifiedClaims = {
      jobId: stringClaim(payload, 'job_id') ?? '',
      projectPath: stringClaim(payload, 'project_path') ?? '',
      projectId: stringClaim(payload, 'project_id'),
      jobProjectId: stringClaim(payload, 'job_project_id'),
      namespacePath: stringClaim(payload, 'namespace_path'),
      jobProjectPath: stringClaim(payload, 'job_project_path'),
      jobNamespacePath: stringClaim(payload, 'job_namespace_path'),
      sourceProjectPath: stringClaim(payload, 'source_project_path'),
      ref: stringClaim(payload, 'ref'),
      refType: stringClaim(payload, 'ref_type'),
      refProtected: stringClaim(payload, 'ref_protected'),
      environment: stringClaim(payload, 'environment'),
      environmentProtected: stringClaim(payload, 'environment_protected'),
      pipelineSource: stringClaim(payload, 'pipeline_source'),
      userLogin: stringClaim(payload, 'user_login'),
    };
    if (!claims.jobId || !claims.projectPath)
      return fail('token lacks a usable job_id or project_path claim');

    // A valid token copied out of another job (logs, artifacts, a compromised dependency) must not
    // carry that job's privileges into this one: the token is bound to exactly one job id.
    if (claims.jobId !== expected.jobId) {
      return fail(
        `token belongs to job ${printable(claims.jobId, 24) ?? '?'}, not ${printable(expected.jobId, 24) ?? '?'}`,
      );
    }
    // Job ids are unique per instance, so this is defence in depth. `job_project_path` is the
    // project running the job; older GitLab only has `project_path`, which since the fork-MR fix
    // (18.2.2+) names the fork for fork MR pipelines run in the parent, so those fail here on
    // GitLab 18.2.2–18.3 — fail-safe: they get the default profile.
    const runningProject = claims.jobProjectPath ?? claims.projectPath;
    if (runningProject !== expected.projectPath) {
      return fail(`token belongs to project ${runningProject}, not ${expected.projectPath}`);
    }
    const runningProjectId = claims.jobProjectId ?? claims.projectId;
    if (expected.projectId !== undefined && runningProjectId !== expected.projectId) {
      return fail(
        `token belongs to project id ${printable(runningProjectId, 24) ?? '?'}, not ${printable(expected.projectId, 24) ?? '?'}`,
      );
    }
    return { ok: true, claims };
  }

  function reasonFor(error: unknown, kid: unknown): Verification {
    const code = (error as { code?: unknown } | undefined)?.code;
    const claim = (error as { claim?: unknown } | undefined)?.claim;
    switch (code) {
      case 'ERR_JWT_EXPIRED':
        return fail('expired');
      case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
        if (claim === 'nbf') return fail('not yet valid (nbf in the future)');
        if (claim === 'iss') return fail(`wrong issuer (expected ${gitlabUrl})`);
        if (claim === 'aud') return fail(`wrong audience (expected ${options.audience})`);
        if (claim === 'iat') return fail('issued in the future (iat)');
        return fail(`claim ${printable(claim, 32) ?? '?'} missing or invalid`);
      case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
        return fail('signature does not verify');
      case 'ERR_JWKS_NO_MATCHING_KEY':
        return fail(
          `signing key ${printable(kid) ? `kid ${printable(kid)}` : '(no usable kid)'} not in the GitLab JWKS`,
        );
      case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
        return fail('ambiguous signing key (several JWKS keys match)');
      case 'ERR_JOSE_ALG_NOT_ALLOWED':
        return fail('algorithm not allowed (asymmetric signatures only)');
      case 'ERR_JWKS_TIMEOUT':
        return fail(`JWKS unreachable: timeout after ${timeoutText}`, true);
      case 'ERR_JWKS_INVALID':
        return fail('JWKS unusable: response is not a JSON Web Key Set', true);
      case 'ERR_JWS_INVALID':
      case 'ERR_JWT_INVALID':
      case 'ERR_JWT_CLAIM_INVALID':
        return fail('malformed token');
      case 'ERR_JOSE_NOT_SUPPORTED':
      case 'ERR_JWK_INVALID':
        return fail('signing key type not supported');
      case 'ERR_JOSE_GENERIC': {
        // jose's own messages for a bad JWKS response; fixed texts, safe to summarise.
        const message = error instanceof Error ? error.message : '';
        if (message.includes('200 OK')) return fail('JWKS unreachable: HTTP status other than 200', true);
        return fail('JWKS unusable: response could not be parsed', true);
      }
      default:
        if (error instanceof TypeError || (error as { name?: unknown } | undefined)?.name === 'AbortError') {
          return fail(`JWKS unreachable: ${networkReason(error)}`, true);
        }
        return fail('verification failed unexpectedly', true);
    }
  }

  return {
    async verify(token, expected) {
      // The socket request is JSON from a hook: be strict about shapes rather than trusting types.
      if (typeof token !== 'string' || token.trim() === '') return fail('no ID token');
      if (typeof expected?.jobId !== 'string' || typeof expected.projectPath !== 'string') {
        return fail('job id or project unknown; cannot bind the token to this job');
      }
      if (token.length > MAX_TOKEN_LENGTH) return fail('token too large');
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<Verification>((resolve) => {
        timer = setTimeout(
          () => resolve(fail(`JWKS unreachable: timeout after ${timeoutText}`, true)),
          overallMs,
        );
        timer.unref();
      });
      try {
        return await Promise.race([
          check(token.trim(), expected).catch(() => fail('verification failed unexpectedly', true)),
          deadline,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** The token variable's value as the prepare hook sees it: `CUSTOM_ENV_<variable>` in the hook's env. */
export function idTokenFromEnv(
  env: Readonly<Record<string, string | undefined>>,
  tokenVariable: string,
): string | undefined {
  const value = env[`CUSTOM_ENV_${tokenVariable}`];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
