/**
 * A daemon restart (SIGKILL, then systemd starts it again) must never fail a job, whatever point
 * of a hook's request it hits. Each case SIGKILLs the real daemon at one point of one request's
 * life, found by an event (never a sleep), restarts it, and checks the whole job still succeeds:
 *
 * - queued: the daemon is frozen (SIGSTOP), so the hook's connection waits in the accept backlog;
 *   killing it resets that connection (config, prepare and cleanup);
 * - mid-request: the daemon has read the acquire and logged it, nothing answered yet;
 * - mid-response: the daemon has streamed a progress line and is launching, final answer pending;
 * - applied: the job secret, the lease or its release is recorded; asking again must give the same answer.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from '../../manager/control/client.js';
import type { Lease } from '../../manager/control/protocol.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type JobSpec, runJob } from '../support/gitlab-runner.js';

let daemon: TestDaemon | undefined;
afterEach(async () => {
  await daemon?.cleanup();
  daemon = undefined;
});

// daemon_wait far above any restart on a loaded machine: these tests are about the points, not speed.
// boot_time keeps an acquire pending while the daemon launches, so a kill can land inside it.
const CONFIG =
  '[executor]\ndaemon_wait = "10m"\n[pool]\nreconcile_interval = "1s"\n[local]\nboot_time = "2s"\n';

/** A connection to `socket` waiting in its accept backlog (state SS_CONNECTING in /proc/net/unix). */
async function queuedConnection(socket: string): Promise<void> {
  for (;;) {
    const queued = readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .some((line) => line.endsWith(` ${socket}`) && line.split(/\s+/)[5] === '02');
    if (queued) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function restart(d: TestDaemon): Promise<void> {
  await d.kill();
  await d.start();
}

type Phase = Parameters<NonNullable<JobSpec['onPhase']>>[0];

/** Run one job; at `phase`, `fault` runs beside the hook (it may kill and restart the daemon). */
async function jobWithFault(d: TestDaemon, id: string, phase: Phase, fault: () => Promise<void>) {
  let faultDone: Promise<void> | undefined;
  const result = await runJob(d.entry(), {
    id,
    script: `echo job-${id}-ran`,
    onPhase: (p) => {
      if (p === phase && !faultDone) faultDone = fault();
    },
  });
  await faultDone;
  return result;
}

const launches = (d: TestDaemon) =>
  d
    .output()
    .split('\n')
    .filter((l) => l.includes('"instance launched"')).length;

describe('a daemon SIGKILLed at each point of a request', () => {
  it.each(['config', 'prepare', 'cleanup'] as const)('queued in the accept backlog of %s', async (phase) => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    let restarted = false;
    const result = await jobWithFault(d, '9201', phase, async () => {
      d.freeze();
      await queuedConnection(d.socket);
      await restart(d);
      restarted = true;
    });
    expect(restarted).toBe(true);
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('job-9201-ran');
    expect(result.cleanup.exitCode, result.cleanup.stderr).toBe(0);
    expect(launches(d)).toBe(1);
  });

  it('mid-request: the acquire was read, nothing answered yet', async () => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    const result = await jobWithFault(d, '9202', 'prepare', async () => {
      await d.waitForOutput(/"jobId":"9202"[^\n]*"acquire requested"/);
      await restart(d);
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.cleanup.exitCode, result.cleanup.stderr).toBe(0);
    expect(launches(d)).toBeLessThanOrEqual(1);
  });

  it('mid-response: progress streamed, the instance launching, the lease not yet answered', async () => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    let beforeKill = '';
    const result = await jobWithFault(d, '9203', 'prepare', async () => {
      beforeKill = await d.waitForOutput(/"instance launched"/);
      await restart(d);
    });
    // The kill came before the lease: the acquire was still waiting for the booting instance.
    expect(beforeKill).not.toContain('"lease acquired"');
    expect(result.log).toContain('No idle instance; waiting');
    expect(result.outcome, result.log).toBe('success');
    expect(result.cleanup.exitCode, result.cleanup.stderr).toBe(0);
    // The restarted daemon adopted the booting instance instead of launching another.
    expect(launches(d)).toBe(1);
  });

  it('applied: a retried acquire gets the same lease, a retried release is fine', async () => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    let first: Lease | undefined;
    let again: Lease | undefined;
    let jobSecret = '';
    const result = await runJob(d.entry(), {
      id: '9204',
      script: 'echo job-9204-ran',
      onPrepared: async (jobEnv) => {
        jobSecret = jobEnv.RUNNER_FLEET_JOB_SECRET ?? '';
        first = (await d.status()).leases.find((l) => l.jobId === '9204') as Lease | undefined;
        await restart(d);
        // What a prepare hook sends again when the answer to its first acquire was lost.
        again = await request<Lease>(d.socket, { op: 'acquire', job: { id: '9204' }, jobSecret });
      },
    });
    expect(first?.instanceId).toBeDefined();
    expect(again?.instanceId).toBe(first?.instanceId);
    expect(result.outcome, result.log).toBe('success');
    expect(result.cleanup.exitCode, result.cleanup.stderr).toBe(0);
    // The release was applied by cleanup; a second one (a lost answer, asked again) still succeeds.
    await restart(d);
    await expect(request(d.socket, { op: 'release', jobId: '9204', jobSecret })).resolves.toMatchObject({
      released: false,
    });
    expect(launches(d)).toBe(1);
  });

  it('applied: the config was recorded, its answer lost; the retried config and the whole job go on', async () => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    // What the config hook sent first, answered by a daemon that died before the hook read it.
    const proposed = randomBytes(32).toString('base64url');
    await request(d.socket, { op: 'config', jobId: '9207', jobSecret: proposed });
    await restart(d);
    // The hook's retry carries the same proposal and is answered, by the restarted daemon.
    const again = await request<{ jobSecret: string }>(d.socket, {
      op: 'config',
      jobId: '9207',
      jobSecret: proposed,
    });
    expect(again.jobSecret).toBe(proposed);
    const lease = await request<Lease>(d.socket, { op: 'acquire', job: { id: '9207' }, jobSecret: proposed });
    expect(lease.instanceId).toBeDefined();
    await expect(
      request(d.socket, { op: 'release', jobId: '9207', jobSecret: proposed }),
    ).resolves.toMatchObject({
      released: true,
    });
  });

  it('applied: the release was recorded, then the daemon died', async () => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    const result = await jobWithFault(d, '9205', 'cleanup', async () => {
      await d.waitForOutput(/"jobId":"9205"[^\n]*"lease released/);
      await restart(d);
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.cleanup.exitCode, result.cleanup.stderr).toBe(0);
    const status = await d.status();
    expect(status.leases).toEqual([]);
  });

  it('a job that starts while the daemon is down waits in config_exec for it', async () => {
    daemon = await startTestDaemon(CONFIG);
    const d = daemon;
    await d.kill();
    const result = await jobWithFault(d, '9206', 'config', async () => {
      // Down until config_exec has tried at least once (a refused connect shows in no log): the
      // daemon's own start is the event that ends the wait.
      await new Promise((r) => setTimeout(r, 500));
      await d.start();
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('job-9206-ran');
  });
});
