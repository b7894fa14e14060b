/** [executor] daemon_wait reaches the later hooks through config_exec's job_env, and bounds their wait. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startTestDaemon } from '../support/daemon.js';

it('hands daemon_wait to the later hooks, which give up on a stopped daemon after it', async () => {
  const daemon = await startTestDaemon('[executor]\ndaemon_wait = "1s"\n');
  try {
    const entry = daemon.entry();
    const dir = mkdtempSync(join(tmpdir(), 'rf-wait-'));
    const env = { ...process.env, CUSTOM_ENV_CI_JOB_ID: '6001', TMPDIR: dir };
    const config = spawnSync(entry.custom.config_exec, entry.custom.config_args, { env, encoding: 'utf8' });
    expect(config.status, config.stderr).toBe(0);
    const jobEnv = (JSON.parse(config.stdout) as { job_env: Record<string, string> }).job_env;
    expect(jobEnv.RUNNER_FLEET_DAEMON_WAIT_MS).toBe('1000');

    await daemon.stop();
    const started = Date.now();
    const cleanup = spawnSync(entry.custom.cleanup_exec, entry.custom.cleanup_args, {
      env: { ...env, ...jobEnv },
      encoding: 'utf8',
      timeout: 60_000,
    });
    const waited = Date.now() - started;
    expect(cleanup.status).toBe(2);
    expect(cleanup.stderr).toMatch(/could not release job 6001's instance: .*not reachable/);
    // It gave up (the message above) after daemon_wait = 1 s, not after the 30 s default: the
    // only bound this test states is that difference.
    expect(waited).toBeLessThan(30_000);
  } finally {
    await daemon.cleanup();
  }
});
