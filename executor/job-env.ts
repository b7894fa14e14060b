/**
 * The custom-executor environment contract, read once per hook call. Job variables arrive as
 * CUSTOM_ENV_*; they may hold secrets, so nothing here ever prints the environment.
 */
export interface HookEnv {
  readonly jobId: string;
  readonly tmpDir: string;
  readonly buildFailureExitCode: number;
  readonly systemFailureExitCode: number;
  readonly buildExitCodeFile: string | undefined;
  readonly projectPath: string | undefined;
  readonly pipelineId: string | undefined;
  readonly jobToken: string | undefined;
  readonly serverUrl: string | undefined;
}

export class HookInputError extends Error {
  override name = 'HookInputError';
}

const JOB_ID = /^[0-9A-Za-z._-]{1,64}$/;

export function readHookEnv(env: NodeJS.ProcessEnv = process.env): HookEnv {
  const jobId = env.CUSTOM_ENV_CI_JOB_ID;
  if (!jobId) {
    throw new HookInputError(
      'CUSTOM_ENV_CI_JOB_ID is not set: runner-fleet hooks are meant to be started by gitlab-runner\'s custom executor (see "runner-fleet runner-config")',
    );
  }
  if (!JOB_ID.test(jobId)) throw new HookInputError('CUSTOM_ENV_CI_JOB_ID is not a valid job id');
  const tmpDir = env.TMPDIR;
  if (!tmpDir?.startsWith('/')) {
    throw new HookInputError(
      "TMPDIR is not set to an absolute path: gitlab-runner sets it to the job's own directory",
    );
  }
  return {
    jobId,
    tmpDir,
    buildFailureExitCode: exitCode(env.BUILD_FAILURE_EXIT_CODE, 1),
    systemFailureExitCode: exitCode(env.SYSTEM_FAILURE_EXIT_CODE, 2),
    buildExitCodeFile: env.BUILD_EXIT_CODE_FILE || undefined,
    projectPath: env.CUSTOM_ENV_CI_PROJECT_PATH || undefined,
    pipelineId: env.CUSTOM_ENV_CI_PIPELINE_ID || undefined,
    jobToken: env.CUSTOM_ENV_CI_JOB_TOKEN || undefined,
    serverUrl: env.CUSTOM_ENV_CI_SERVER_URL || undefined,
  };
}

/** Exit codes for failures that happen before the env could be read. */
export function fallbackExitCodes(env: NodeJS.ProcessEnv = process.env): { build: number; system: number } {
  return {
    build: exitCode(env.BUILD_FAILURE_EXIT_CODE, 1),
    system: exitCode(env.SYSTEM_FAILURE_EXIT_CODE, 2),
  };
}

function exitCode(value: string | undefined, fallback: number): number {
  const n = Number(value);
  return value && Number.isInteger(n) && n > 0 && n < 256 ? n : fallback;
}
