/** The suite-wide secret scan (test/support) must be able to fail, or it proves nothing. */
import { connect } from 'node:net';
import { expect, it } from 'vitest';
import { startTestDaemon } from '../support/daemon.js';
import { runJob, SECRET_SENTINEL } from '../support/gitlab-runner.js';

it('plants the sentinel in every job, and a daemon that logs it fails its cleanup', async () => {
  const daemon = await startTestDaemon();
  const result = await runJob(daemon.entry(), {
    id: '31337',
    script: 'test "${RUNNER_FLEET_TEST_SECRET#rf-sentinel}" != "$RUNNER_FLEET_TEST_SECRET" && echo planted',
  });
  expect(result.log).toContain('planted');
  // A malformed request echoes its op into the daemon's log: a harmless way to make it log the sentinel.
  await new Promise<void>((resolve) => {
    const socket = connect(daemon.socket, () => socket.write(`{"op":"${SECRET_SENTINEL}"}\n`));
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
    socket.resume();
  });
  await expect(daemon.cleanup()).rejects.toThrow(/secret sentinel found in the daemon's output/);
});
