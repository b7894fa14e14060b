/**
 * The container side of the hooks: prepare sets the job's Docker objects up on the instance, run
 * sends user stages into the job container, cleanup removes everything by label. Loaded only for
 * jobs that have (or may have) containers, so bare jobs' hooks stay as small as before.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadTransport } from '../transports/load.js';
import type { StageOutcome, Transport } from '../transports/transport.js';
import { cleanupScript, containerAliveScript, setupScript, stageScript } from './scripts.js';
import {
  type ContainerJob,
  type ContainerSettings,
  ContainerSpecError,
  checkAllowed,
  containerJob,
  isEcrRegistry,
  readSettings,
  registryKey,
  registryOf,
} from './spec.js';
import { readContainerState, writeContainerState } from './state.js';

/**
 * Stages gitlab-runner itself needs (git, the gitlab-runner binary, file variables): they run on
 * the instance, against the same builds directory the job container mounts. Every other stage,
 * including ones gitlab-runner adds later, runs the user's code and goes into the container.
 */
const RUNNER_STAGES = new Set([
  'prepare_script',
  'get_sources',
  'clear_worktree',
  'restore_cache',
  'download_artifacts',
  'archive_cache',
  'archive_cache_on_failure',
  'upload_artifacts_on_success',
  'upload_artifacts_on_failure',
  'cleanup_file_variables',
]);

export function isUserStage(stage: string): boolean {
  return !RUNNER_STAGES.has(stage);
}

/** The job's container spec from JOB_RESPONSE_FILE, checked against the settings; undefined: bare job. */
export function readContainerJob(
  responseFile: string | undefined,
  settings: ContainerSettings,
): ContainerJob | undefined {
  if (!responseFile) return undefined;
  let response: unknown;
  try {
    response = JSON.parse(readFileSync(responseFile, 'utf8'));
  } catch {
    throw new ContainerSpecError(`JOB_RESPONSE_FILE ${responseFile} is unreadable`);
  }
  const job = containerJob(response, settings);
  if (job) checkAllowed(job, settings);
  return job;
}

/**
 * The per-job docker client config: the job's registry credentials (GitLab's, with the job
 * token), then our DOCKER_AUTH_CONFIG, then the job's DOCKER_AUTH_CONFIG variable (later wins per
 * registry, as in gitlab-runner), and the ECR credential helper for ECR registries nobody else
 * covers (it uses the instance profile: no keys).
 */
export function dockerClientConfig(job: ContainerJob, settings: ContainerSettings): string {
  const auths: Record<string, { auth: string }> = {};
  const credHelpers: Record<string, string> = {};
  const key = (registry: string) => (registry === 'docker.io' ? 'https://index.docker.io/v1/' : registry);
  for (const c of job.credentials) {
    auths[key(c.registry)] = { auth: Buffer.from(`${c.username}:${c.password}`).toString('base64') };
  }
  const merge = (text: string, source: string) => {
    let parsed: {
      auths?: Record<string, { auth?: string; username?: string; password?: string }>;
      credHelpers?: Record<string, string>;
    };
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      // Never echo the text: it is a secret.
      throw new ContainerSpecError(`${source} is not valid JSON (a docker config.json with "auths")`);
    }
    for (const [url, entry] of Object.entries(parsed?.auths ?? {})) {
      const auth =
        entry?.auth ??
        (entry?.username !== undefined
          ? Buffer.from(`${entry.username}:${entry.password ?? ''}`).toString('base64')
          : undefined);
      if (auth) auths[key(registryKey(url))] = { auth };
    }
    for (const [registry, helper] of Object.entries(parsed?.credHelpers ?? {})) {
      if (typeof helper === 'string') credHelpers[registryKey(registry)] = helper;
    }
  };
  if (settings.dockerAuthConfigFile) {
    let text: string;
    try {
      text = readFileSync(settings.dockerAuthConfigFile, 'utf8');
    } catch (error) {
      throw new ContainerSpecError(
        `[container] docker_auth_config_file ${settings.dockerAuthConfigFile}: ${(error as NodeJS.ErrnoException).code ?? 'unreadable'}`,
      );
    }
    merge(text, `[container] docker_auth_config_file ${settings.dockerAuthConfigFile}`);
  }
  if (job.variables.DOCKER_AUTH_CONFIG)
    merge(job.variables.DOCKER_AUTH_CONFIG, 'the DOCKER_AUTH_CONFIG variable');
  for (const spec of [job.image, ...job.services]) {
    const registry = registryOf(spec.name);
    if (isEcrRegistry(registry) && !auths[registry] && !credHelpers[registry])
      credHelpers[registry] = 'ecr-login';
  }
  return JSON.stringify({ auths, ...(Object.keys(credHelpers).length ? { credHelpers } : {}) });
}

/** prepare: everything the job's containers need, on the leased instance. */
export async function setUpContainers(
  transport: Transport,
  jobId: string,
  job: ContainerJob,
  settings: ContainerSettings,
  tmpDir: string,
  killGraceMs: number,
  signal: AbortSignal,
): Promise<StageOutcome> {
  const script = setupScript(jobId, job, settings, dockerClientConfig(job, settings));
  return transport.runStage(
    {
      scriptPath: '(container setup)',
      script: Buffer.from(script),
      stage: 'prepare',
      env: {},
      jobTmpDir: tmpDir,
      killGraceMs,
    },
    signal,
  );
}

/** Whether the job container still runs (asked only after a stage failed). */
export async function containerAlive(
  transport: Transport,
  jobId: string,
  settings: ContainerSettings,
  tmpDir: string,
): Promise<boolean> {
  const outcome = await transport.runStage(
    {
      scriptPath: '(container check)',
      script: Buffer.from(containerAliveScript(jobId, settings)),
      stage: 'check',
      env: {},
      jobTmpDir: tmpDir,
      killGraceMs: 1000,
    },
    new AbortController().signal,
  );
  return outcome.kind === 'exited' && outcome.code === 0;
}

/** cleanup: remove the job's containers, network and docker config. Idempotent. */
export async function removeContainers(
  transport: Transport,
  jobId: string,
  settings: ContainerSettings,
  tmpDir: string,
): Promise<StageOutcome> {
  return transport.runStage(
    {
      scriptPath: '(container cleanup)',
      script: Buffer.from(cleanupScript(jobId, settings)),
      stage: 'cleanup',
      env: {},
      jobTmpDir: tmpDir,
      killGraceMs: 1000,
    },
    AbortSignal.timeout(120_000),
  );
}

/** How long a canceled container stage may take to end beyond its kill grace (a slow docker CLI). */
const CANCEL_MARGIN_MS = 5_000;

/** Bound on running the cancel script itself: it starts the cancel in the background and returns. */
const CANCEL_SCRIPT_TIMEOUT_MS = 10_000;

/**
 * For the run hook: the container form of a user stage, or undefined for gitlab-runner's own
 * stages (and when the settings are missing). `alive` tells a failed script from a lost container.
 * `cancel` ends the stage from inside the container (its docker client is not signalled, so what
 * the stage prints while it stops still reaches the log); it resolves with how long to wait for
 * the stage to end by itself, or undefined if the cancel could not be started.
 */
export function containerStageFor(
  jobId: string,
  stage: string,
  scriptPath: string,
  killGraceMs: number,
  tmpDir: string,
  transport: Transport,
):
  | { script: Buffer; input: Buffer; alive(): Promise<boolean>; cancel(): Promise<number | undefined> }
  | undefined {
  const settings = readSettings();
  if (!settings || !isUserStage(stage)) return undefined;
  const token = randomBytes(8).toString('hex');
  const { script, input, cancel } = stageScript(
    jobId,
    settings,
    readFileSync(scriptPath),
    token,
    killGraceMs,
  );
  return {
    script,
    input,
    alive: () => containerAlive(transport, jobId, settings, tmpDir),
    cancel: async () => {
      const outcome = await transport.runStage(
        {
          scriptPath: '(container cancel)',
          script: cancel,
          stage: `${stage} cancel`,
          env: {},
          jobTmpDir: tmpDir,
          killGraceMs: 1000,
        },
        AbortSignal.timeout(CANCEL_SCRIPT_TIMEOUT_MS),
      );
      return outcome.kind === 'exited' && outcome.code === 0 ? killGraceMs + CANCEL_MARGIN_MS : undefined;
    },
  };
}

/** For prepare, before acquiring: the job's containers as allowed by [container], or undefined. */
export function planContainers(responseFile: string | undefined): ContainerJob | undefined {
  const settings = readSettings();
  return settings ? readContainerJob(responseFile, settings) : undefined;
}

/**
 * For prepare, once the instance is leased: set the containers up, with output in the job log.
 * A cancel (SIGTERM to prepare) ends the setup on the instance; cleanup removes what it made.
 * Resolves with an error line for a system failure, or undefined when the job can go on.
 */
export async function startContainers(
  jobId: string,
  job: ContainerJob,
  tmpDir: string,
  lease: { connect: Parameters<typeof loadTransport>[0]; killGraceMs: number },
): Promise<{ failed: 'printed' | string } | undefined> {
  const settings = readSettings();
  if (!settings) return { failed: 'the [container] settings from config_exec are missing' };
  writeContainerState(tmpDir, { jobId });
  const services = job.services.length ? ` with ${job.services.length} service(s)` : '';
  process.stdout.write(`runner-fleet: starting the job container from ${job.image.name}${services}\n`);
  const transport = await loadTransport(lease.connect);
  const controller = new AbortController();
  const cancel = () => controller.abort();
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, cancel);
  try {
    const outcome = await setUpContainers(
      transport,
      jobId,
      job,
      settings,
      tmpDir,
      lease.killGraceMs,
      controller.signal,
    );
    if (outcome.kind === 'exited' && outcome.code === 0) return undefined;
    // Exit 2: the setup script printed its one line (rf_fail).
    if (outcome.kind === 'exited' && outcome.code === 2) return { failed: 'printed' };
    if (outcome.kind === 'exited') return { failed: `container setup ended with exit code ${outcome.code}` };
    if (outcome.kind === 'canceled') return { failed: 'container setup canceled' };
    return { failed: `container setup: ${outcome.message}` };
  } finally {
    for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.removeListener(sig, cancel);
  }
}

/** For cleanup: remove what the job's containers left, when the job had any. Never throws. */
export async function cleanupContainers(
  tmpDir: string,
  connect: Parameters<typeof loadTransport>[0],
): Promise<void> {
  const state = readContainerState(tmpDir);
  const settings = readSettings();
  if (!state || !settings) return;
  try {
    const transport = await loadTransport(connect);
    const outcome = await removeContainers(transport, state.jobId, settings, tmpDir);
    if (outcome.kind !== 'exited' || outcome.code !== 0) {
      process.stderr.write(
        `runner-fleet cleanup: removing job ${state.jobId}'s containers failed (${outcome.kind === 'system-failure' ? outcome.message : outcome.kind}); the instance's end removes them\n`,
      );
    }
  } catch (error) {
    process.stderr.write(`runner-fleet cleanup: removing containers: ${(error as Error).message}\n`);
  }
}
