/**
 * Found by the soak run: a job whose config_exec ran while the daemon was being restarted (SIGKILL,
 * systemd brings it back) failed at once, although prepare and cleanup wait for the daemon. A
 * restart must not fail a job in any hook.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';

let daemon: TestDaemon | undefined;
afterEach(async () => {
  await daemon?.cleanup();
  daemon = undefined;
});

describe('a job that starts while the daemon restarts', () => {
  it('waits in config_exec for the daemon instead of failing', async () => {
    daemon = await startTestDaemon();
    const d = daemon;
    const entry = d.entry();
    await d.kill();
    // The daemon comes back a moment after the job started (systemd's Restart=on-failure).
    const restart = new Promise<void>((resolve, reject) => {
      setTimeout(() => d.start().then(resolve, reject), 1500);
    });
    const result = await runJob(entry, { id: '9101', script: 'echo restarted-fine' });
    await restart;
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('restarted-fine');
  });
});
