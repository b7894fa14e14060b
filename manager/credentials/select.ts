/**
 * Which instance profile a job gets: a pure function of the loaded rules and the verification
 * result. It reads nothing else — in particular no CUSTOM_ENV_* value, which the job author sets —
 * so a variable named like a claim cannot change the outcome.
 */
import type { CredentialRule, CredentialsConfig, LaunchOverrides, RuleConditions } from './schema.js';
import { profileDisplayName } from './schema.js';
import type { Verification, VerifiedClaims } from './verify.js';

export const DEFAULT_CLASS = 'default';

export interface CredentialSelection {
  /** Isolation key: the matched rule's name, or `default`. Written to the instance's tags. */
  readonly credentialClass: string;
  /** Profile name or ARN to attach; undefined means the instance runs without a profile. */
  readonly instanceProfile?: string;
  /** IMDSv2 PUT response hop limit for the instance (1 keeps containers away from the role). */
  readonly hopLimit: number;
  readonly ruleName?: string;
  /**
   * The project the job runs in according to the verified token, for reuse isolation
   * (`canReuse`). Undefined without a verified token: then use JOB_RESPONSE_FILE's
   * `job_info.project_id`, never CUSTOM_ENV_CI_PROJECT_PATH, which the job can override.
   */
  readonly verifiedProject?: string;
  readonly overrides: LaunchOverrides;
  /** The one line for the job log. Never contains token contents. */
  readonly logLine: string;
}

/**
 * Whether the pipeline comes from a merge request whose source project is not the project the job
 * runs in (a fork), as far as the claims can tell.
 *
 * Background (GitLab issue 548165, "CI ID Token Manipulated claims vulnerability for forked projects
 * MR pipelines"): a fork MR pipeline run in the parent project used to get a token whose
 * `project_path` was the parent and whose `ref`/`ref_protected` came from the fork's source branch
 * name checked against the parent's protections — a fork branch named `main` produced
 * `ref: main, ref_protected: "true"`, i.e. the claims of a protected main pipeline, for code nobody
 * with push rights reviewed. Since 18.2.2 (and backports) `project_path`/`namespace_path` name the
 * fork in that case; 18.4 added `job_project_path` (the project running the job), and later
 * versions `source_project_path`.
 *
 * So: any `merge_request_event` (or `external_pull_request_event`) token is a fork MR when its
 * source project (`source_project_path`, else `project_path`) differs from `job_project_path`; if
 * `job_project_path` is absent the GitLab is too old to tell, and we assume the worst.
 */
export function isForkMergeRequest(claims: VerifiedClaims): boolean {
  if (
    claims.pipelineSource !== 'merge_request_event' &&
    claims.pipelineSource !== 'external_pull_request_event'
  ) {
    return false;
  }
  // External pull requests (GitHub CI/CD-only projects) carry no project claims that could tell a
  // fork apart, and PRs from forks are the common case there.
  if (claims.pipelineSource === 'external_pull_request_event') return true;
  if (claims.jobProjectPath === undefined) return true;
  const source = claims.sourceProjectPath ?? claims.projectPath;
  return source !== claims.jobProjectPath || claims.projectPath !== claims.jobProjectPath;
}

function globOk(glob: { regex: RegExp } | undefined, value: string | undefined): boolean {
  return glob === undefined || (value !== undefined && glob.regex.test(value));
}

function boolOk(expected: boolean | undefined, value: string | undefined): boolean {
  // GitLab signs these as the strings "true"/"false"; an absent claim (e.g. environment_protected
  // for a job without an environment) matches neither true nor false.
  return expected === undefined || value === String(expected);
}

function listOk(allowed: readonly string[] | undefined, value: string | undefined): boolean {
  return allowed === undefined || (value !== undefined && allowed.includes(value));
}

/** Whether the claims satisfy every condition of a rule (fork guard not included). */
export function conditionsMatch(conditions: RuleConditions, claims: VerifiedClaims): boolean {
  return (
    // project_path / namespace_path match the project the job runs in; for fork MR pipelines the
    // fork guard decides separately.
    globOk(conditions.projectPath, claims.jobProjectPath ?? claims.projectPath) &&
    globOk(conditions.namespacePath, claims.jobNamespacePath ?? claims.namespacePath) &&
    globOk(conditions.ref, claims.ref) &&
    (conditions.refType === undefined || conditions.refType === claims.refType) &&
    boolOk(conditions.refProtected, claims.refProtected) &&
    globOk(conditions.environment, claims.environment) &&
    boolOk(conditions.environmentProtected, claims.environmentProtected) &&
    listOk(conditions.pipelineSource, claims.pipelineSource) &&
    listOk(conditions.userLogin, claims.userLogin)
  );
}

function describeProfile(profile: string | undefined): string {
  return profile === undefined ? 'none' : profileDisplayName(profile);
}

/** One line, printable, bounded: reasons may carry claim values and must not break the job log. */
function oneLine(text: string): string {
  // \p{Cc}: control characters (newlines, escapes) that could forge extra job-log lines.
  const flat = text.replace(/\p{Cc}+/gu, ' ');
  return flat.length > 300 ? `${flat.slice(0, 297)}...` : flat;
}

function fromDefault(config: CredentialsConfig, why: string, claims?: VerifiedClaims): CredentialSelection {
  return {
    credentialClass: DEFAULT_CLASS,
    instanceProfile: config.defaultProfile,
    hopLimit: config.defaultHopLimit,
    ...(claims ? { verifiedProject: claims.jobProjectPath ?? claims.projectPath } : {}),
    overrides: {},
    logLine: oneLine(
      `Credentials: ${why}; using the default profile (${describeProfile(config.defaultProfile)}${
        config.defaultProfileKey === 'aws.instance_profile' ? ', from [aws] instance_profile' : ''
      })`,
    ),
  };
}

function fromRule(rule: CredentialRule, claims: VerifiedClaims): CredentialSelection {
  return {
    credentialClass: rule.name,
    instanceProfile: rule.instanceProfile,
    hopLimit: rule.hopLimit,
    ruleName: rule.name,
    verifiedProject: claims.jobProjectPath ?? claims.projectPath,
    overrides: rule.overrides,
    logLine: oneLine(
      `Credentials: rule "${rule.name}" matched (verified ID token); instance profile ${describeProfile(rule.instanceProfile)}`,
    ),
  };
}

/**
 * Pick the credentials for a job. `verification` is the result of IdTokenVerifier.verify, or
 * undefined when the job sent no token (or verification is not configured).
 */
export function selectCredentials(
  config: CredentialsConfig,
  verification: Verification | undefined,
): CredentialSelection {
  if (verification === undefined) return fromDefault(config, 'no ID token');
  if (!verification.ok) return fromDefault(config, `no verified ID token (${verification.reason})`);

  const claims = verification.claims;
  const fork = isForkMergeRequest(claims);
  let refusedForFork: string | undefined;
  for (const rule of config.rules) {
    if (!conditionsMatch(rule.conditions, claims)) continue;
    if (fork && rule.denyForkMergeRequests) {
      // Keep looking: a later, less privileged rule may explicitly allow fork MR pipelines.
      refusedForFork ??= rule.name;
      continue;
    }
    return fromRule(rule, claims);
  }
  if (refusedForFork !== undefined) {
    return fromDefault(
      config,
      `rule "${refusedForFork}" refused for a merge request pipeline from a fork (or one GitLab cannot tell apart), no other rule matched`,
      claims,
    );
  }
  return fromDefault(config, 'verified ID token matched no rule', claims);
}

/**
 * Whether an instance that already ran a job may take another one (`max_use_count > 1`): only for
 * the same credential class and the same project, so neither a role nor the leftovers of one
 * project's job (files, caches, processes) reach another. An instance that never ran a job
 * (`instanceClass` undefined) is free for anyone.
 */
export function canReuse(
  instanceClass: string | undefined,
  instanceProject: string | undefined,
  jobClass: string,
  jobProject: string,
): boolean {
  if (instanceClass === undefined && instanceProject === undefined) return true;
  return instanceClass === jobClass && instanceProject === jobProject;
}
