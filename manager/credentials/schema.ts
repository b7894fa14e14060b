/**
 * The `[credentials]` config section: how ID tokens are verified and which verified claims choose
 * which instance profile. Everything is checked at load (unknown keys, bad globs, malformed
 * profile ARNs), because a rule that loads but means something else than intended hands the wrong
 * role to a job; the output carries compiled matchers so selection is a pure, cheap function.
 */
import { z } from 'zod';
import { duration as sharedDuration } from '../config/zod-duration.js';
import { compileGlob, GlobError } from './glob.js';

// ---------------------------------------------------------------------------------------------
// Durations: the same syntax as the rest of the config ("30s", "5m", "1h30m", "250ms").

function duration(fallback: string, minMs: number, maxMs: number) {
  return sharedDuration(fallback, { minMs, maxMs });
}

// ---------------------------------------------------------------------------------------------
// Instance profiles and launch overrides

/** IAM instance-profile name: AWS allows `[\w+=,.@-]`, 1..128 characters. */
export const PROFILE_NAME = /^[\w+=,.@-]{1,128}$/;
/** Instance-profile ARN, any partition (aws, aws-cn, aws-us-gov), optional IAM path. */
export const PROFILE_ARN =
  /^arn:aws[\w-]*:iam::\d{12}:instance-profile\/(?:[\w+=,.@-]+\/)*[\w+=,.@-]{1,128}$/;

export function isInstanceProfile(value: string): boolean {
  return PROFILE_NAME.test(value) || PROFILE_ARN.test(value);
}

/** The name part of a profile reference, for log lines (`arn:…:instance-profile/a/b` → `b`). */
export function profileDisplayName(profile: string): string {
  return profile.startsWith('arn:') ? (profile.split('/').pop() ?? profile) : profile;
}

const instanceProfile = z.string().refine(isInstanceProfile, {
  message:
    'must be an instance profile name ([\\w+=,.@-]{1,128}) or an instance-profile ARN (arn:aws:iam::<12 digits>:instance-profile/<name>)',
});

const hopLimit = z.number().int().min(1).max(64);

const launchOverrides = {
  instance_type: z
    .string()
    .regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, 'must look like an EC2 instance type, e.g. "m7i.large"')
    .optional(),
  launch_template: z
    .string()
    .regex(/^(?:lt-[0-9a-f]{8,17}|[\w()./-]{3,128})$/, 'must be a launch template id (lt-…) or name')
    .optional(),
  subnets: z
    .array(z.string().regex(/^subnet-[0-9a-f]{8,17}$/, 'must be a subnet id (subnet-…)'))
    .min(1)
    .optional(),
};

// ---------------------------------------------------------------------------------------------
// Claim conditions

/**
 * GitLab's `pipeline_source` values (CI_PIPELINE_SOURCE). Restricted to the known list so that a
 * typo (`merge_request` for `merge_request_event`) fails at load instead of never matching.
 */
export const PIPELINE_SOURCES = [
  'api',
  'chat',
  'external',
  'external_pull_request_event',
  'merge_request_event',
  'ondemand_dast_scan',
  'ondemand_dast_validation',
  'parent_pipeline',
  'pipeline',
  'push',
  'schedule',
  'security_orchestration_policy',
  'trigger',
  'web',
  'webide',
] as const;

/** The claim keys a rule may match on; any other key in a rule is a load error naming it. */
export const CLAIM_KEYS = [
  'project_path',
  'namespace_path',
  'ref',
  'ref_type',
  'ref_protected',
  'environment',
  'environment_protected',
  'pipeline_source',
  'user_login',
] as const;
export type ClaimKey = (typeof CLAIM_KEYS)[number];

/** The non-claim keys of a rule. */
const RULE_SETTING_KEYS = [
  'name',
  'deny_fork_merge_requests',
  'instance_profile',
  'hop_limit',
  'instance_type',
  'launch_template',
  'subnets',
] as const;

const glob = z.string().transform((pattern, ctx) => {
  try {
    return { pattern, regex: compileGlob(pattern) };
  } catch (error) {
    ctx.addIssue({
      code: 'custom',
      message: `bad glob "${pattern}": ${error instanceof GlobError ? error.message : String(error)}`,
    });
    return z.NEVER;
  }
});

function oneOrMany<T extends z.ZodType<string>>(item: T) {
  return z
    .union([item, z.array(item).min(1)])
    .transform((value): string[] => (Array.isArray(value) ? value : [value]));
}

const ruleName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_.-]{0,62}$/,
    'must be 1-63 characters of a-z, 0-9, "_", ".", "-" (it becomes the credential class, written to instance tags)',
  )
  .refine((name) => name !== 'default', { message: '"default" is reserved for jobs that match no rule' });

const ruleSchema = z
  .strictObject({
    name: ruleName,
    project_path: glob.optional(),
    namespace_path: glob.optional(),
    ref: glob.optional(),
    ref_type: z.enum(['branch', 'tag']).optional(),
    ref_protected: z.boolean().optional(),
    environment: glob.optional(),
    environment_protected: z.boolean().optional(),
    pipeline_source: oneOrMany(z.enum(PIPELINE_SOURCES)).optional(),
    user_login: oneOrMany(z.string().min(1)).optional(),
    // Fail-safe default: a rule grants its profile to fork merge-request pipelines only if its
    // author opted in explicitly (see isForkMergeRequest in select.ts for what counts as one).
    deny_fork_merge_requests: z.boolean().default(true),
    instance_profile: instanceProfile,
    hop_limit: hopLimit.optional(),
    ...launchOverrides,
  })
  .superRefine((rule, ctx) => {
    if (!CLAIM_KEYS.some((key) => rule[key] !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        message: `rule "${rule.name}" matches no claim: add at least one of ${CLAIM_KEYS.join(', ')} (use project_path = "**" to match every verified job on purpose)`,
      });
    }
  });

// ---------------------------------------------------------------------------------------------
// Parsed (output) types: camelCase, durations in ms, matchers compiled.

export interface CompiledGlob {
  readonly pattern: string;
  readonly regex: RegExp;
}

export interface RuleConditions {
  readonly projectPath?: CompiledGlob;
  readonly namespacePath?: CompiledGlob;
  readonly ref?: CompiledGlob;
  readonly refType?: 'branch' | 'tag';
  readonly refProtected?: boolean;
  readonly environment?: CompiledGlob;
  readonly environmentProtected?: boolean;
  readonly pipelineSource?: readonly string[];
  readonly userLogin?: readonly string[];
}

export interface LaunchOverrides {
  readonly instanceType?: string;
  readonly launchTemplate?: string;
  readonly subnets?: readonly string[];
}

export interface CredentialRule {
  readonly name: string;
  readonly conditions: RuleConditions;
  readonly denyForkMergeRequests: boolean;
  readonly instanceProfile: string;
  readonly hopLimit: number;
  readonly overrides: LaunchOverrides;
}

export interface CredentialsConfig {
  /** GitLab base URL without trailing slash; also the exact expected `iss`. Undefined: no verification. */
  readonly gitlabUrl?: string;
  /** `<gitlabUrl>/oauth/discovery/keys` */
  readonly jwksUrl?: string;
  readonly audience: string;
  /** The job variable holding the ID token; the hooks read `CUSTOM_ENV_<tokenVariable>`. */
  readonly tokenVariable: string;
  readonly clockSkewMs: number;
  readonly jwksTimeoutMs: number;
  readonly jwksCacheTtlMs: number;
  /**
   * Least-privileged profile for every job that matches no rule; undefined means none. After
   * config loading this is the effective one (see withInstanceProfileFallback).
   */
  readonly defaultProfile?: string;
  /** Which key defaultProfile came from, for the job log. */
  readonly defaultProfileKey?: 'credentials.default_profile' | 'aws.instance_profile';
  readonly defaultHopLimit: number;
  /**
   * When a job brings a token but GitLab's keys cannot be fetched: `default` runs it with the
   * default profile; `fail` ends prepare as a system failure so GitLab can retry it later.
   */
  readonly whenJwksUnavailable: 'default' | 'fail';
  readonly rules: readonly CredentialRule[];
}

function isLoopback(host: string): boolean {
  return host === '127.0.0.1' || host === 'localhost' || host === '[::1]';
}

const gitlabUrl = z.string().transform((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: `not a URL: "${text}"` });
    return z.NEVER;
  }
  // Plain http would let anyone on the path swap the JWKS and mint "verified" tokens; loopback
  // is allowed for tests and for a GitLab reached through a local TLS-terminating proxy.
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopback(url.hostname))) {
    ctx.addIssue({ code: 'custom', message: 'must use https:// (http:// only on loopback)' });
    return z.NEVER;
  }
  if (url.search || url.hash || url.username || url.password) {
    ctx.addIssue({ code: 'custom', message: 'must not carry a query, fragment or credentials' });
    return z.NEVER;
  }
  // GitLab's `iss` is its external URL without a trailing slash (relative URL roots included).
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
});

/**
 * Strict schema for the `[credentials]` table. Every key has a default except `gitlab_url`; without
 * it no token can be verified, so rules are refused and every job gets the default profile.
 */
export const credentialsSchema = z
  .strictObject({
    gitlab_url: gitlabUrl.optional(),
    audience: z.string().min(1).default('runner-fleet'),
    token_variable: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]{0,254}$/, 'must be a CI variable name')
      .default('RUNNER_FLEET_ID_TOKEN'),
    clock_skew: duration('30s', 0, 300_000),
    jwks_timeout: duration('5s', 100, 60_000),
    jwks_cache_ttl: duration('10m', 1_000, 86_400_000),
    default_profile: z
      .string()
      .default('')
      .refine((value) => value === '' || isInstanceProfile(value), {
        message: 'must be "" (no profile), an instance profile name or an instance-profile ARN',
      }),
    default_hop_limit: hopLimit.default(1),
    when_jwks_unavailable: z.enum(['default', 'fail']).default('default'),
    rule: z.array(z.unknown()).default([]),
  })
  .transform((raw, ctx): CredentialsConfig => {
    const rules: CredentialRule[] = [];
    const seen = new Set<string>();
    raw.rule.forEach((input, index) => {
      const unknownKeys =
        input && typeof input === 'object' && !Array.isArray(input)
          ? Object.keys(input).filter(
              (key) =>
                !(CLAIM_KEYS as readonly string[]).includes(key) &&
                !(RULE_SETTING_KEYS as readonly string[]).includes(key),
            )
          : [];
      for (const key of unknownKeys) {
        // Named explicitly: the most likely cause is a claim we do not match on (e.g. `sub`,
        // `project_id`) or a typo, and either way the rule would mean less than its author thinks.
        ctx.addIssue({
          code: 'custom',
          path: ['rule', index, key],
          message: `unknown key "${key}" in rule ${index + 1}; claims that can be matched: ${CLAIM_KEYS.join(', ')}`,
        });
      }
      if (unknownKeys.length > 0) return;
      const parsed = ruleSchema.safeParse(input);
      if (!parsed.success) {
        for (const issue of parsed.error.issues) {
          ctx.addIssue({
            code: 'custom',
            path: ['rule', index, ...issue.path.map(String)],
            message: issue.message,
          });
        }
        return;
      }
      const r = parsed.data;
      if (seen.has(r.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['rule', index, 'name'],
          message: `duplicate rule name "${r.name}"`,
        });
        return;
      }
      seen.add(r.name);
      rules.push({
        name: r.name,
        conditions: {
          projectPath: r.project_path,
          namespacePath: r.namespace_path,
          ref: r.ref,
          refType: r.ref_type,
          refProtected: r.ref_protected,
          environment: r.environment,
          environmentProtected: r.environment_protected,
          pipelineSource: r.pipeline_source,
          userLogin: r.user_login,
        },
        denyForkMergeRequests: r.deny_fork_merge_requests,
        instanceProfile: r.instance_profile,
        hopLimit: r.hop_limit ?? raw.default_hop_limit,
        overrides: { instanceType: r.instance_type, launchTemplate: r.launch_template, subnets: r.subnets },
      });
    });
    if (raw.gitlab_url === undefined && raw.rule.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['gitlab_url'],
        message: 'rules need gitlab_url: without it no ID token can be verified and no rule could ever match',
      });
    }
    return {
      gitlabUrl: raw.gitlab_url,
      jwksUrl: raw.gitlab_url === undefined ? undefined : `${raw.gitlab_url}/oauth/discovery/keys`,
      audience: raw.audience,
      tokenVariable: raw.token_variable,
      clockSkewMs: raw.clock_skew,
      jwksTimeoutMs: raw.jwks_timeout,
      jwksCacheTtlMs: raw.jwks_cache_ttl,
      ...(raw.default_profile === ''
        ? {}
        : { defaultProfile: raw.default_profile, defaultProfileKey: 'credentials.default_profile' as const }),
      defaultHopLimit: raw.default_hop_limit,
      whenJwksUnavailable: raw.when_jwks_unavailable,
      rules,
    };
  });

/**
 * The one precedence rule for a job's instance profile: the first matching rule's
 * `instance_profile`; else `[credentials] default_profile` when set (non-empty); else `[aws]
 * instance_profile` (what instances boot with); else none. Applied once, at config load, so the
 * job log names the profile the instance really runs under.
 */
export function withInstanceProfileFallback(
  config: CredentialsConfig,
  awsInstanceProfile: string | undefined,
): CredentialsConfig {
  if (config.defaultProfile !== undefined || !awsInstanceProfile) return config;
  return { ...config, defaultProfile: awsInstanceProfile, defaultProfileKey: 'aws.instance_profile' };
}

/** For embedding as an optional section: `credentials: credentialsSectionSchema` (absent → defaults). */
export const credentialsSectionSchema = credentialsSchema.prefault({});

/** What the TOML section looks like before parsing. */
export type CredentialsInput = z.input<typeof credentialsSchema>;
