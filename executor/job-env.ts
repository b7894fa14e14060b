import { readFileSync } from 'node:fs';

/**
 * The custom-executor environment contract, read once per hook call. Job variables arrive as
 * CUSTOM_ENV_*; they may hold secrets, so nothing here ever prints the environment.
 */
export interface HookEnv {
  /** From gitlab-runner's job response, never from a job variable (a job can override CI_JOB_ID). */
  readonly jobId: string;
  /** The project id from the job response (job_info.project_id), when known. */
  readonly projectId: string | undefined;
  /** The job variable that carries the GitLab ID token (without CUSTOM_ENV_). */
  readonly idTokenVariable: string;
  /** How long to keep trying a daemon that is restarting ([executor] daemon_wait, via job_env). */
  readonly daemonWaitMs: number;
  /** The job's secret for the control socket (via job_env); undefined before config ran. */
  readonly jobSecret: string | undefined;
  readonly tmpDir: string;
  readonly buildFailureExitCode: number;
  readonly systemFailureExitCode: number;
  readonly buildExitCodeFile: string | undefined;
  readonly projectPath: string | undefined;
  readonly pipelineId: string | undefined;
  readonly jobToken: string | undefined;
}

export class HookInputError extends Error {
  override name = 'HookInputError';
}

const JOB_ID = /^[0-9A-Za-z._-]{1,64}$/;

/** job_env keys the config hook hands to the later hooks (gitlab-runner adds them unprefixed). */
export const JOB_ENV = {
  jobId: 'RUNNER_FLEET_JOB_ID',
  projectId: 'RUNNER_FLEET_PROJECT_ID',
  idTokenVariable: 'RUNNER_FLEET_ID_TOKEN_VARIABLE',
  daemonWaitMs: 'RUNNER_FLEET_DAEMON_WAIT_MS',
  jobSecret: 'RUNNER_FLEET_JOB_SECRET',
  /** [container] settings as JSON (nothing secret), for prepare, run and cleanup. */
  container: 'RUNNER_FLEET_CONTAINER',
} as const;

/** How long hooks wait for a restarting daemon before config_exec has told them ([executor] daemon_wait). */
export const DEFAULT_DAEMON_WAIT_MS = 30_000;

export interface JobIdentity {
  readonly jobId: string;
  readonly projectId: string | undefined;
}

/**
 * The job's identity. Job variables (CUSTOM_ENV_*) are set by whoever writes .gitlab-ci.yml, so a
 * job could claim another job's id and release its instance; the job response file and our own
 * job_env come from gitlab-runner and are trusted. CUSTOM_ENV_CI_JOB_ID is only a fallback for
 * callers without a job response file (manual runs).
 */
export function readJobIdentity(env: NodeJS.ProcessEnv = process.env): JobIdentity {
  const fromJobEnv = env[JOB_ENV.jobId];
  if (fromJobEnv) return checked(fromJobEnv, env[JOB_ENV.projectId] || undefined, JOB_ENV.jobId);
  const responseFile = env.JOB_RESPONSE_FILE;
  if (responseFile) {
    let response: { id?: unknown; job_info?: { project_id?: unknown } };
    try {
      response = JSON.parse(readFileSync(responseFile, 'utf8')) as typeof response;
    } catch (error) {
      throw new HookInputError(
        `JOB_RESPONSE_FILE ${responseFile} is unreadable: ${(error as NodeJS.ErrnoException).code ?? 'not JSON'}`,
      );
    }
    const projectId = response?.job_info?.project_id;
    return checked(
      String(response?.id ?? ''),
      projectId === undefined || projectId === null ? undefined : String(projectId),
      'JOB_RESPONSE_FILE id',
    );
  }
  const fromVariable = env.CUSTOM_ENV_CI_JOB_ID;
  if (!fromVariable) {
    throw new HookInputError(
      'neither JOB_RESPONSE_FILE nor CUSTOM_ENV_CI_JOB_ID is set: runner-fleet hooks are meant to be started by gitlab-runner\'s custom executor (see "runner-fleet runner-config")',
    );
  }
  return checked(fromVariable, undefined, 'CUSTOM_ENV_CI_JOB_ID');
}

function checked(jobId: string, projectId: string | undefined, source: string): JobIdentity {
  if (!JOB_ID.test(jobId)) throw new HookInputError(`${source} is not a valid job id`);
  return { jobId, projectId: projectId && JOB_ID.test(projectId) ? projectId : undefined };
}

export function readHookEnv(env: NodeJS.ProcessEnv = process.env): HookEnv {
  const { jobId, projectId } = readJobIdentity(env);
  const tmpDir = env.TMPDIR;
  if (!tmpDir?.startsWith('/')) {
    throw new HookInputError(
      "TMPDIR is not set to an absolute path: gitlab-runner sets it to the job's own directory",
    );
  }
  return {
    jobId,
    projectId,
    idTokenVariable: env[JOB_ENV.idTokenVariable] || 'RUNNER_FLEET_ID_TOKEN',
    daemonWaitMs: waitMs(env[JOB_ENV.daemonWaitMs]),
    jobSecret: env[JOB_ENV.jobSecret] || undefined,
    tmpDir,
    buildFailureExitCode: exitCode(env.BUILD_FAILURE_EXIT_CODE, 1),
    systemFailureExitCode: exitCode(env.SYSTEM_FAILURE_EXIT_CODE, 2),
    buildExitCodeFile: env.BUILD_EXIT_CODE_FILE || undefined,
    projectPath: env.CUSTOM_ENV_CI_PROJECT_PATH || undefined,
    pipelineId: env.CUSTOM_ENV_CI_PIPELINE_ID || undefined,
    jobToken: env.CUSTOM_ENV_CI_JOB_TOKEN || undefined,
  };
}

/** Exit codes for failures that happen before the env could be read. */
export function fallbackExitCodes(env: NodeJS.ProcessEnv = process.env): { build: number; system: number } {
  return {
    build: exitCode(env.BUILD_FAILURE_EXIT_CODE, 1),
    system: exitCode(env.SYSTEM_FAILURE_EXIT_CODE, 2),
  };
}

function waitMs(value: string | undefined): number {
  const n = Number(value);
  return value && Number.isInteger(n) && n >= 0 && n <= 3_600_000 ? n : DEFAULT_DAEMON_WAIT_MS;
}

function exitCode(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value && Number.isInteger(n) && n > 0 && n < 256 ? n : fallback;
}
