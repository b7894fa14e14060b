/**
 * Drives the custom-executor hooks the way gitlab-runner does (executors/custom): the same
 * environment (TMPDIR, BUILD_FAILURE_EXIT_CODE, SYSTEM_FAILURE_EXIT_CODE, BUILD_EXIT_CODE_FILE,
 * JOB_RESPONSE_FILE, job_env, CUSTOM_ENV_*), every stage gitlab-runner runs in its order and
 * after the same failures (see runJob), the same exit-code rules, each hook in its own process
 * group, SIGTERM to the group on cancel then SIGKILL after graceful_kill_timeout, and cleanup
 * always.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';

export interface RunnerEntry {
  builds_dir: string;
  cache_dir: string;
  custom: {
    config_exec: string;
    config_args: string[];
    prepare_exec: string;
    prepare_args: string[];
    run_exec: string;
    run_args: string[];
    cleanup_exec: string;
    cleanup_args: string[];
    graceful_kill_timeout: number;
    force_kill_timeout: number;
  };
}

/** Parse the text `runner-fleet runner-config` prints, exactly as an operator would paste it. */
export function parseRunnerEntry(text: string): RunnerEntry {
  const doc = parse(text) as { runners: Array<Record<string, unknown>> };
  const runner = doc.runners[0] as Record<string, unknown>;
  return {
    builds_dir: runner.builds_dir as string,
    cache_dir: runner.cache_dir as string,
    custom: runner.custom as RunnerEntry['custom'],
  };
}

export interface JobSpec {
  id: string;
  projectPath?: string;
  projectId?: number;
  /** Job variables (CUSTOM_ENV_*); some may be secrets. */
  variables?: Record<string, string>;
  /** The job's `script:` (step_script, passed on to the executor as build_script). */
  script: string;
  /**
   * Container fields of the job response, as gitlab-runner fills them from .gitlab-ci.yml:
   * `image` ({name, entrypoint, command, pull_policy, docker: {user, platform}}), `services`
   * ([{name, alias, entrypoint, command, variables: [{key, value}]}]) and `credentials`
   * ([{type: "registry", url, username, password}]).
   */
  image?: Record<string, unknown>;
  services?: Array<Record<string, unknown>>;
  credentials?: Array<Record<string, unknown>>;
  /**
   * User stages sent before build_script, as [stage name, commands]: any name (step_*, names no
   * executor has seen), as gitlab-runner sends a job's steps.
   */
  extraStages?: Array<[string, string]>;
  /** Extra commands of get_sources (in CI_PROJECT_DIR), e.g. files a checkout would bring. */
  getSources?: string;
  /** Further steps, sent as `step_<name>`: stage names no executor can know in advance. */
  steps?: Array<{ name: string; script: string }>;
  afterScript?: string;
  /** The job has `cache:` (restore_cache, archive_cache*); default true. */
  cache?: boolean;
  /** The job has artifacts and dependencies (download_artifacts, upload_artifacts_*); default true. */
  artifacts?: boolean;
  /** GET_SOURCES_ATTEMPTS (default 1); a retry is preceded by clear_worktree. */
  getSourcesAttempts?: number;
  /** Replace the body of a runner-generated stage (get_sources, restore_cache, …). */
  stageScripts?: Record<string, string>;
  /** Cancel (SIGTERM to the running hook's group) this long after the build_script started. */
  cancelAfterMs?: number;
  /** Called once the prepare hook has succeeded, e.g. to kill the daemon mid-job. */
  onPrepared?: (jobEnv: Readonly<Record<string, string>>) => Promise<void> | void;
  /** Called when build_script starts running, with the running hook process. */
  onBuildStarted?: () => Promise<void> | void;
  /** Override the graceful kill timeout, in seconds. */
  gracefulKillTimeout?: number;
  /**
   * Cancel while `prepare` runs instead (SIGTERM to its group this long after it started), as
   * gitlab-runner does for a job canceled while it waits for an instance.
   */
  cancelPrepareAfterMs?: number;
  /** Cancel prepare when this settles (an event, e.g. the daemon logged this job's acquire). */
  cancelPrepareWhen?: Promise<unknown>;
  /** build_script's output as it arrives (e.g. to strike once the script really runs). */
  onBuildOutput?: (chunk: string) => void;
  /** Called as each hook starts (the soak suite times faults by the job's phase). */
  onPhase?: (phase: 'config' | 'prepare' | 'run' | 'cleanup', stage?: string) => void | Promise<void>;
}

export interface HookCall {
  hook: string;
  stage?: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall-clock start (Date.now()), to check when stages ran relative to an event. */
  startedAtMs: number;
  durationMs: number;
  /**
   * From the hook's exit to the close of its stdout and stderr. gitlab-runner waits for both, so
   * a process the hook leaves holding them (e.g. an SSH master it passed them to) holds the stage.
   */
  outputOpenAfterExitMs: number;
}

export type Outcome = 'success' | 'build-failure' | 'system-failure' | 'unknown-failure' | 'canceled';

export interface JobResult {
  outcome: Outcome;
  /** The script's exit code from BUILD_EXIT_CODE_FILE on a build failure. */
  buildExitCode?: number;
  /** What the job log shows: hook stdout/stderr of config, prepare and run, in order. */
  log: string;
  calls: HookCall[];
  cleanup: HookCall;
  projectDir: string;
  canceledAtMs?: number;
}

/**
 * Planted in every job this harness runs (a masked variable, the job token, the JOB_RESPONSE_FILE):
 * the daemon's output and the runner log (cleanup) must never contain it. test/support/daemon.ts
 * checks every daemon's output for it when the daemon is cleaned up, so each e2e test is also a
 * secret scan.
 */
export const SECRET_SENTINEL = 'rf-sentinel-2f9c41d7';

/**
 * gitlab-runner's stage plan (common/build.go executeScript, 17/18): prepare_script; get_sources
 * (clear_worktree before a retry), restore_cache, download_artifacts; the user's steps
 * (`step_script`, which the custom executor passes on as `build_script`, then any other
 * `step_<name>` as is); after_script; archive_cache or archive_cache_on_failure;
 * upload_artifacts_on_success or _on_failure; cleanup_file_variables. A failing prepare_script
 * ends the plan. A failure in get_sources…download_artifacts skips the steps and after_script but
 * not the on_failure stages. after_script runs after any end of the steps (success, build failure,
 * system failure, cancel); its own failure is ignored (AFTER_SCRIPT_IGNORE_ERRORS defaults to
 * true), as is a failing cleanup_file_variables. Stages with nothing to do are skipped
 * (ErrSkipBuildStage): restore_cache/archive_cache without `cache:`, the downloads and uploads
 * without artifacts, after_script without commands.
 */
export async function runJob(
  entry: RunnerEntry,
  job: JobSpec,
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<JobResult> {
  const tmpDir = mkdtempSync(join(tmpdir(), 'custom-executor'));
  const calls: HookCall[] = [];
  const custom = entry.custom;
  const jobResponseFile = join(tmpDir, 'response.json');
  const variables: Record<string, string> = {
    CI_JOB_ID: job.id,
    CI_PROJECT_PATH: job.projectPath ?? 'group/project',
    CI_PIPELINE_ID: '1000',
    CI_SERVER_URL: 'http://127.0.0.1:9',
    CI_JOB_TOKEN: `glcbt-64_${SECRET_SENTINEL}-${job.id}`,
    RUNNER_FLEET_TEST_SECRET: `${SECRET_SENTINEL}-masked-variable`,
    ...job.variables,
  };
  // The shape gitlab-runner writes (common.JobResponse): the trusted source of the job's identity.
  writeFileSync(
    jobResponseFile,
    JSON.stringify({
      id: Number(job.id),
      token: variables.CI_JOB_TOKEN,
      job_info: { name: 'build', stage: 'test', project_id: job.projectId ?? 42, project_name: 'project' },
      // gitlab-runner always sends image (empty name when the job has none) and services.
      image: job.image ?? { name: '' },
      services: job.services ?? [],
      ...(job.credentials ? { credentials: job.credentials } : {}),
      variables: Object.entries(variables).map(([key, value]) => ({
        key,
        value,
        public: false,
        masked: true,
      })),
    }),
    { mode: 0o600 },
  );
  let jobEnv: Record<string, string> = {};
  const baseEnv = (): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...extraEnv,
      TMPDIR: tmpDir,
      BUILD_FAILURE_EXIT_CODE: '1',
      SYSTEM_FAILURE_EXIT_CODE: '2',
      JOB_RESPONSE_FILE: jobResponseFile,
      ...jobEnv,
    };
    for (const [key, value] of Object.entries(variables)) env[`CUSTOM_ENV_${key}`] = value;
    return env;
  };
  const graceMs = (job.gracefulKillTimeout ?? custom.graceful_kill_timeout) * 1000;
  const log: string[] = [];
  let result: Omit<JobResult, 'cleanup' | 'calls'> | undefined;
  let canceledAtMs: number | undefined;
  const cache = job.cache ?? true;
  const artifacts = job.artifacts ?? true;
  const bodyOf = (stage: string, fallback: string) => job.stageScripts?.[stage] ?? fallback;

  try {
    // config_exec: stdout is JSON, stderr goes to the job log.
    await job.onPhase?.('config');
    const config = await runHook(custom.config_exec, [...custom.config_args], baseEnv(), tmpDir, 'config');
    calls.push(config);
    log.push(config.stderr);
    if (config.exitCode !== 0) {
      result = { outcome: classify(config.exitCode), log: log.join(''), projectDir: '' };
      return finish();
    }
    const executorConfig = JSON.parse(config.stdout) as {
      builds_dir: string;
      job_env?: Record<string, string>;
    };
    jobEnv = executorConfig.job_env ?? {};
    const projectDir = join(executorConfig.builds_dir, 't0k3n', '0', variables.CI_PROJECT_PATH as string);
    variables.CI_BUILDS_DIR = executorConfig.builds_dir;
    variables.CI_PROJECT_DIR = projectDir;

    await job.onPhase?.('prepare');
    const prepare = await runHook(
      custom.prepare_exec,
      [...custom.prepare_args],
      baseEnv(),
      tmpDir,
      'prepare',
      job.cancelPrepareAfterMs !== undefined || job.cancelPrepareWhen
        ? {
            ...(job.cancelPrepareAfterMs !== undefined ? { cancelAfterMs: job.cancelPrepareAfterMs } : {}),
            ...(job.cancelPrepareWhen ? { cancelWhen: job.cancelPrepareWhen } : {}),
            graceMs,
            onCanceled: (at) => {
              canceledAtMs = at;
            },
          }
        : {},
    );
    calls.push(prepare);
    log.push(prepare.stdout, prepare.stderr);
    if (canceledAtMs !== undefined) {
      result = { outcome: 'canceled', log: log.join(''), projectDir, canceledAtMs };
      return finish();
    }
    if (prepare.exitCode !== 0) {
      result = { outcome: classify(prepare.exitCode), log: log.join(''), projectDir };
      return finish();
    }
    await job.onPrepared?.(jobEnv);

    const prepared = await runStage(
      'prepare_script',
      bodyOf('prepare_script', 'echo "Running on $(hostname) via runner-fleet"'),
    );
    if (prepared.outcome !== 'success') {
      result = { outcome: prepared.outcome, log: log.join(''), projectDir };
      return finish();
    }

    let jobRun: StageRun = await getSources();
    if (jobRun.outcome === 'success' && cache) {
      jobRun = await runStage('restore_cache', bodyOf('restore_cache', 'echo "Restoring cache"'));
    }
    if (jobRun.outcome === 'success' && artifacts) {
      jobRun = await runStage(
        'download_artifacts',
        bodyOf('download_artifacts', 'echo "Downloading artifacts"'),
      );
    }
    if (jobRun.outcome === 'success') {
      const steps: Array<[string, string]> = [
        ...(job.extraStages ?? []),
        ['build_script', job.script],
        ...(job.steps ?? []).map(({ name, script }): [string, string] => [`step_${name}`, script]),
      ];
      for (const [stage, body] of steps) {
        jobRun = await runStage(stage, body, stage === 'build_script');
        if (jobRun.outcome !== 'success') break;
      }
      // after_script follows any end of the steps; its failure does not change the job's outcome.
      if (job.afterScript) await runStage('after_script', job.afterScript);
    }
    const ok = jobRun.outcome === 'success';
    let postRun: StageRun = { outcome: 'success' };
    if (cache) {
      const stage = ok ? 'archive_cache' : 'archive_cache_on_failure';
      postRun = await runStage(stage, bodyOf(stage, 'echo "Saving cache"'));
    }
    if (artifacts) {
      const stage = ok ? 'upload_artifacts_on_success' : 'upload_artifacts_on_failure';
      const upload = await runStage(stage, bodyOf(stage, 'echo "Uploading artifacts"'));
      if (postRun.outcome === 'success') postRun = upload;
    }
    // Its failure is only a warning in the runner's log.
    await runStage(
      'cleanup_file_variables',
      bodyOf('cleanup_file_variables', 'echo "Removed file variables"'),
    );
    const final = ok ? postRun : jobRun;
    result = {
      outcome: final.outcome,
      ...(final.buildExitCode !== undefined ? { buildExitCode: final.buildExitCode } : {}),
      log: log.join(''),
      projectDir,
      ...(canceledAtMs !== undefined ? { canceledAtMs } : {}),
    };
    return finish();
  } catch (error) {
    result = {
      outcome: 'unknown-failure',
      log: `${log.join('')}\nharness error: ${(error as Error).message}`,
      projectDir: '',
    };
    return finish();
  }

  /** GET_SOURCES_ATTEMPTS: before the second attempt gitlab-runner sends clear_worktree. */
  async function getSources(): Promise<StageRun> {
    const attempts = job.getSourcesAttempts ?? 1;
    let run: StageRun = { outcome: 'success' };
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt === 1) {
        const cleared = await runStage(
          'clear_worktree',
          bodyOf('clear_worktree', 'rm -rf "$CI_PROJECT_DIR"'),
        );
        if (cleared.outcome !== 'success') continue;
      }
      run = await runStage(
        'get_sources',
        bodyOf(
          'get_sources',
          `mkdir -p "$CI_PROJECT_DIR" && cd "$CI_PROJECT_DIR" && echo "Fetched sources"${job.getSources ? `\n${job.getSources}` : ''}`,
        ),
      );
      if (run.outcome === 'success') return run;
    }
    return run;
  }

  async function runStage(stage: string, body: string, isBuild = false): Promise<StageRun> {
    // As executors/custom does: a fresh directory per stage under the job's TMPDIR.
    const scriptPath = join(mkdtempSync(join(tmpDir, 'script')), 'script');
    writeFileSync(scriptPath, renderScript(expandVariables(variables), body, stage), { mode: 0o700 });
    const exitFile = join(tmpDir, `exit-code-${stage}`);
    rmSync(exitFile, { force: true });
    const env = { ...baseEnv(), BUILD_EXIT_CODE_FILE: exitFile };
    await job.onPhase?.('run', stage);
    const cancelAt = isBuild && job.cancelAfterMs !== undefined ? job.cancelAfterMs : undefined;
    const call = await runHook(custom.run_exec, [...custom.run_args, scriptPath, stage], env, tmpDir, 'run', {
      stage,
      ...(cancelAt !== undefined ? { cancelAfterMs: cancelAt, graceMs } : {}),
      ...(isBuild && job.onBuildStarted ? { onStarted: job.onBuildStarted } : {}),
      ...(isBuild && job.onBuildOutput ? { onOutput: job.onBuildOutput } : {}),
      onCanceled: (at) => {
        canceledAtMs = at;
      },
    });
    calls.push(call);
    log.push(call.stdout, call.stderr);
    if (cancelAt !== undefined && canceledAtMs !== undefined) return { outcome: 'canceled' };
    if (call.exitCode === 0) return { outcome: 'success' };
    if (call.exitCode === 1) {
      let code: number | undefined;
      try {
        const text = readFileSync(exitFile, 'utf8').trim();
        if (/^-?\d+$/.test(text)) code = Number(text);
      } catch {
        // No exit code file: a plain build failure.
      }
      return { outcome: 'build-failure', ...(code !== undefined ? { buildExitCode: code } : {}) };
    }
    return { outcome: classify(call.exitCode) };
  }

  async function finish(): Promise<JobResult> {
    // cleanup_exec always runs; its output goes to the runner's log, not the job's.
    await job.onPhase?.('cleanup');
    const cleanup = await runHook(
      custom.cleanup_exec,
      [...custom.cleanup_args],
      baseEnv(),
      tmpDir,
      'cleanup',
    );
    rmSync(tmpDir, { recursive: true, force: true });
    return { ...(result as Omit<JobResult, 'cleanup' | 'calls'>), calls, cleanup };
  }
}

interface StageRun {
  outcome: Outcome;
  buildExitCode?: number;
}

function classify(code: number | null): Outcome {
  if (code === 0) return 'success';
  if (code === 1) return 'build-failure';
  if (code === 2) return 'system-failure';
  return 'unknown-failure';
}

/**
 * gitlab-runner expands references between job variables before the shell exports them
 * (JobVariables.Expand): `npm_config_cache: $CI_PROJECT_DIR/.npm` reaches the script with the
 * project directory in it. One pass, `$NAME` and `${NAME}`; a reference to no variable stays as is.
 */
export function expandVariables(variables: Record<string, string>): Record<string, string> {
  const expand = (value: string) =>
    value.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (ref, braced, bare) => {
      const name = (braced ?? bare) as string;
      return Object.hasOwn(variables, name) ? variables[name]! : ref;
    });
  return Object.fromEntries(Object.entries(variables).map(([key, value]) => [key, expand(value)]));
}

/** A stage script shaped like the ones gitlab-runner's bash shell writes. */
export function renderScript(variables: Record<string, string>, body: string, stage: string): string {
  const exports = Object.entries(variables)
    .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
    .join('\n');
  // The project directory exists only once get_sources made it.
  const cd = ['prepare_script', 'get_sources', 'clear_worktree'].includes(stage)
    ? ''
    : 'cd "$CI_PROJECT_DIR"\n';
  return `#!/usr/bin/env bash\nset -eo pipefail\nset +o noclobber\n${exports}\n${cd}${body}\nexit 0\n`;
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

interface HookOptions {
  stage?: string;
  cancelAfterMs?: number;
  /** Cancel when this settles, if the hook still runs. */
  cancelWhen?: Promise<unknown>;
  graceMs?: number;
  onOutput?: (chunk: string) => void;
  onStarted?: () => Promise<void> | void;
  onCanceled?: (atMs: number) => void;
}

/** Start one hook in its own process group, collect its output, honour cancel semantics. */
export function runHook(
  exec: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
  hook: string,
  options: HookOptions = {},
): Promise<HookCall> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(exec, args, {
      env,
      cwd,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => {
      stdout.push(c);
      options.onOutput?.(c.toString('utf8'));
    });
    child.stderr?.on('data', (c: Buffer) => stderr.push(c));
    let exitedAt: number | undefined;
    child.once('exit', () => {
      exitedAt = Date.now();
    });
    const timers: NodeJS.Timeout[] = [];
    let closed = false;
    let canceled = false;
    const cancel = () => {
      if (closed || canceled) return;
      canceled = true;
      options.onCanceled?.(Date.now() - started);
      killGroup(child, 'SIGTERM');
      timers.push(setTimeout(() => killGroup(child, 'SIGKILL'), options.graceMs ?? 10_000));
    };
    if (options.cancelAfterMs !== undefined) timers.push(setTimeout(cancel, options.cancelAfterMs));
    void options.cancelWhen?.then(cancel, () => {});
    void Promise.resolve(options.onStarted?.()).catch(reject);
    child.once('error', reject);
    child.once('close', (exitCode, signal) => {
      closed = true;
      for (const t of timers) clearTimeout(t);
      resolve({
        hook,
        ...(options.stage ? { stage: options.stage } : {}),
        exitCode,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        startedAtMs: started,
        durationMs: Date.now() - started,
        outputOpenAfterExitMs: Date.now() - (exitedAt ?? Date.now()),
      });
    });
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}
