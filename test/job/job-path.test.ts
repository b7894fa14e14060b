/**
 * The whole job path on the local provider, driven exactly as gitlab-runner drives the hooks
 * (test/support/gitlab-runner.ts) against a real daemon process.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type JobResult, type RunnerEntry, runJob } from '../support/gitlab-runner.js';

let daemon: TestDaemon;
let entry: RunnerEntry;
let nextJob = 1000;
const jobId = () => String(nextJob++);

beforeAll(async () => {
  daemon = await startTestDaemon('[executor]\nkill_grace = "2s"\n');
  entry = daemon.entry();
});
afterAll(async () => {
  await daemon?.cleanup();
});

/** The stages gitlab-runner sent to the run hook, in order. */
const runStages = (result: JobResult) => result.calls.filter((c) => c.hook === 'run').map((c) => c.stage);

const noLeases = () =>
  eventually(
    'no lease and no leased instance',
    () => daemon.status(),
    (s) => s.leases.length === 0 && s.instances.every((i) => i.state !== 'leased'),
  );

describe('job path on the local provider', () => {
  it('runs a job to success in CI_PROJECT_DIR under builds_dir, with the instance id in its environment', async () => {
    const result = await runJob(entry, {
      id: jobId(),
      script: 'echo "hello from $RUNNER_FLEET_INSTANCE_ID"; pwd; echo to-stderr >&2',
    });
    expect(result.outcome).toBe('success');
    expect(result.log).toMatch(/hello from local-[0-9a-f]{12}/);
    expect(result.log).toContain(result.projectDir);
    expect(result.log).toContain('to-stderr');
    expect(result.log).toMatch(/running on instance local-[0-9a-f]{12} \(local\), ready in/);
    expect(result.cleanup.exitCode).toBe(0);
    const status = await noLeases();
    expect(status.leases).toEqual([]);
  });

  it('reports a build failure with the script exit code in BUILD_EXIT_CODE_FILE and still runs after_script', async () => {
    const result = await runJob(entry, {
      id: jobId(),
      script: 'echo before; exit 42',
      afterScript: 'echo "after_script on $RUNNER_FLEET_INSTANCE_ID"',
    });
    expect(result.outcome).toBe('build-failure');
    expect(result.buildExitCode).toBe(42);
    expect(result.log).toMatch(/after_script on local-/);
    const afterCall = result.calls.find((c) => c.stage === 'after_script');
    expect(afterCall?.exitCode).toBe(0);
  });

  it('accepts any stage name: step_* and names it has never seen run like any other stage', async () => {
    const names = ['step_run', 'step_release_notes', 'some_future_stage'];
    const result = await runJob(entry, {
      id: jobId(),
      script: 'true',
      extraStages: names.map((name) => [name, `echo "ran stage ${name}"`]),
    });
    expect(result.outcome, result.log).toBe('success');
    for (const name of names) {
      const call = result.calls.find((c) => c.hook === 'run' && c.stage === name);
      expect(call?.exitCode, name).toBe(0);
      expect(call?.stdout, name).toContain(`ran stage ${name}`);
    }
  });

  it('runs every stage gitlab-runner drives, in its order, with step_* and unknown stage names', async () => {
    const id = jobId();
    const result = await runJob(entry, {
      id,
      // The first get_sources fails: gitlab-runner sends clear_worktree, then retries.
      getSourcesAttempts: 2,
      stageScripts: {
        get_sources:
          'if [ ! -e "$CI_BUILDS_DIR/fetched-once" ]; then touch "$CI_BUILDS_DIR/fetched-once"; exit 1; fi; mkdir -p "$CI_PROJECT_DIR"',
      },
      script: 'echo "in build_script"',
      steps: [{ name: 'release', script: 'echo "in step_release"' }],
      afterScript: 'echo "in after_script"',
    });
    expect(result.outcome, result.log).toBe('success');
    expect(runStages(result)).toEqual([
      'prepare_script',
      'get_sources',
      'clear_worktree',
      'get_sources',
      'restore_cache',
      'download_artifacts',
      'build_script',
      'step_release',
      'after_script',
      'archive_cache',
      'upload_artifacts_on_success',
      'cleanup_file_variables',
    ]);
    expect(result.log).toContain('in step_release');
  });

  it('after a build failure still runs after_script and the on_failure stages, and skips the later steps', async () => {
    const result = await runJob(entry, {
      id: jobId(),
      script: 'exit 3',
      steps: [{ name: 'release', script: 'echo never' }],
      afterScript: 'echo after',
    });
    expect(result.outcome).toBe('build-failure');
    expect(result.buildExitCode).toBe(3);
    expect(runStages(result)).toEqual([
      'prepare_script',
      'get_sources',
      'restore_cache',
      'download_artifacts',
      'build_script',
      'after_script',
      'archive_cache_on_failure',
      'upload_artifacts_on_failure',
      'cleanup_file_variables',
    ]);
  });

  it('relays 300,000 lines of stdout in order, with stderr alongside', async () => {
    const result = await runJob(entry, {
      id: jobId(),
      script: 'seq 1 300000; echo done-on-stderr >&2',
    });
    expect(result.outcome).toBe('success');
    const build = result.calls.find((c) => c.stage === 'build_script');
    const lines = build?.stdout.trimEnd().split('\n') ?? [];
    expect(lines.length).toBe(300_000);
    let inOrder = true;
    for (let i = 0; i < lines.length; i++) if (lines[i] !== String(i + 1)) inOrder = false;
    expect(inOrder).toBe(true);
    expect(build?.stderr).toContain('done-on-stderr');
  });

  it('ends a canceled job by itself within its kill grace, kills its whole process tree, and runs after_script on the same instance', async () => {
    const marker = `rf-cancel-${process.pid}-${Date.now()}`;
    const result = await runJob(entry, {
      id: jobId(),
      script: `echo "build on $RUNNER_FLEET_INSTANCE_ID"; (exec -a ${marker} sleep 300) & (trap '' TERM; exec -a ${marker}-stubborn sleep 300) & exec -a ${marker} sleep 300`,
      afterScript: 'echo "after on $RUNNER_FLEET_INSTANCE_ID"',
      cancelAfterMs: 1500,
    });
    expect(result.outcome).toBe('canceled');
    const build = result.calls.find((c) => c.stage === 'build_script');
    // The hook ended by itself (SIGKILL after its kill grace went to the stubborn sleep): had it
    // not, the harness would have SIGKILLed it after graceful_kill_timeout, as gitlab-runner does.
    expect(build?.signal).toBeNull();
    expect(build?.exitCode).not.toBeNull();
    const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(marker));
    expect(left).toEqual([]);
    const buildInstance = /build on (local-\w+)/.exec(result.log)?.[1];
    const afterInstance = /after on (local-\w+)/.exec(result.log)?.[1];
    expect(buildInstance).toBeDefined();
    expect(afterInstance).toBe(buildInstance);
  });

  it('gives 4 parallel jobs 4 distinct instances, never reuses one, and leaves nothing leased', async () => {
    const ids = [jobId(), jobId(), jobId(), jobId()];
    const results = await Promise.all(
      ids.map((id) => runJob(entry, { id, script: 'echo "instance=$RUNNER_FLEET_INSTANCE_ID"; sleep 1' })),
    );
    const instances = results.map((r) => /instance=(local-\w+)/.exec(r.log)?.[1]);
    expect(results.map((r) => r.outcome)).toEqual(['success', 'success', 'success', 'success']);
    expect(new Set(instances).size).toBe(4);
    const later = await runJob(entry, { id: jobId(), script: 'echo "instance=$RUNNER_FLEET_INSTANCE_ID"' });
    const laterInstance = /instance=(local-\w+)/.exec(later.log)?.[1];
    expect(laterInstance).toBeDefined();
    expect(instances).not.toContain(laterInstance);
    const status = await eventually(
      'every instance gone',
      () => daemon.status(),
      (s) => s.instances.length === 0,
    );
    expect(status.instances).toEqual([]);
  });

  it('turns a vanished instance into a system failure that names the cause', async () => {
    const result = await runJob(entry, {
      id: jobId(),
      script: 'echo never',
      onPrepared: async () => {
        // Like a spot reclaim: the instance disappears between prepare and the first stage.
        const root = join(daemon.stateDir, 'local', 'instances');
        for (const name of readdirSync(root)) rmSync(join(root, name), { recursive: true, force: true });
      },
    });
    expect(result.outcome).toBe('system-failure');
    expect(result.log).toMatch(
      /runner-fleet run: stage prepare_script on instance local-\w+: .+; the local instance was terminated \(its directory is gone\)/,
    );
    expect(result.log).not.toMatch(/\n\s+at /); // No stack trace in the job log.
    // A failed prepare_script ends the plan: gitlab-runner runs no further stage, only cleanup_exec.
    expect(runStages(result)).toEqual(['prepare_script']);
    expect(result.cleanup.exitCode).toBe(0);
  });

  it('keeps secrets out of the daemon logs', async () => {
    const secret = `s3cr3t-${Date.now()}-sentinel`;
    const result = await runJob(entry, {
      id: jobId(),
      variables: {
        DEPLOY_PASSWORD: secret,
        CI_JOB_TOKEN: `glcbt-${secret}`,
        RUNNER_FLEET_ID_TOKEN: `eyJ.${secret}`,
      },
      script: 'test -n "$DEPLOY_PASSWORD" && echo has-secret',
    });
    expect(result.outcome).toBe('success');
    expect(result.log).toContain('has-secret');
    expect(daemon.output()).not.toContain(secret);
  });

  it('cleanup is idempotent and works when prepare never ran', async () => {
    const result = await runJob(entry, { id: jobId(), script: 'true' });
    expect(result.cleanup.stdout).toMatch(/released instance/);
    // A second cleanup for the same job, and one for a job that never got an instance (its
    // config stage ran: that is what hands the hooks the job's secret).
    const env = { ...process.env, CUSTOM_ENV_CI_JOB_ID: '999999', TMPDIR: daemon.dir };
    const config = JSON.parse(
      execFileSync(process.execPath, [...entry.custom.config_args], { env, encoding: 'utf8' }),
    ) as { job_env: Record<string, string> };
    const again = execFileSync(process.execPath, [...entry.custom.cleanup_args], {
      env: { ...env, ...config.job_env },
      encoding: 'utf8',
    });
    expect(again).toMatch(/held no instance; nothing to release/);
  });
});

describe('daemon restart in the middle of a job', () => {
  it('fails no job: the running stage continues and cleanup releases the instance afterwards', async () => {
    let restarted: Promise<void> | undefined;
    const result = await runJob(entry, {
      id: jobId(),
      script: 'for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done',
      // Once the stage prints: it really runs while the daemon is down.
      onBuildOutput: (chunk) => {
        if (chunk.includes('tick 1')) restarted = daemon.kill().then(() => daemon.start());
      },
    });
    expect(restarted).toBeDefined();
    await restarted;
    expect(result.outcome).toBe('success');
    expect(result.log).toContain('tick 6');
    expect(result.cleanup.exitCode).toBe(0);
    expect(result.cleanup.stdout).toMatch(/released instance local-/);
    const status = await noLeases();
    expect(status.leases).toEqual([]);
    expect(existsSync(daemon.socket)).toBe(true);
  });
});
