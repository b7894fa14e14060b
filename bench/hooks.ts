/**
 * Hook cost benchmark: the executor's own cost for one trivial job (every hook call summed) as a
 * ratio to the same number of bare `node -e 0` starts measured in the same run, interleaved so
 * that machine noise hits both sides alike. Also the prepare latency with an idle instance, seen
 * from the hook (process start included) and inside the daemon (the acquire round trip alone).
 */
import { spawn } from 'node:child_process';
import { request } from '../manager/control/client.js';
import type { Lease } from '../manager/control/protocol.js';
import { eventually, startTestDaemon } from '../test/support/daemon.js';
import { runHook, runJob } from '../test/support/gitlab-runner.js';

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
};

function timeBareNode(): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', '0'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.once('error', reject);
    child.once('close', () => resolve(Number(process.hrtime.bigint() - started) / 1e6));
  });
}

export async function benchHooks(options: { jobs?: number } = {}): Promise<Record<string, number | string>> {
  const jobs = options.jobs ?? 15;
  const daemon = await startTestDaemon('[pool]\nidle_count = 1\nreconcile_interval = "1s"\n');
  try {
    const entry = daemon.entry();
    const waitIdle = () =>
      eventually(
        'an idle instance',
        () => daemon.status(),
        (s) => s.instances.some((i) => i.state === 'idle'),
      );
    const hookTotals: number[] = [];
    const nodeTotals: number[] = [];
    let callsPerJob = 0;
    for (let j = 0; j < jobs + 2; j++) {
      await waitIdle();
      // A trivial job: no cache, no artifacts, so gitlab-runner skips those stages.
      const result = await runJob(entry, {
        id: String(90_000 + j),
        script: 'true',
        cache: false,
        artifacts: false,
      });
      if (result.outcome !== 'success') throw new Error(`bench job failed: ${result.log}`);
      const calls = [...result.calls, result.cleanup];
      callsPerJob = calls.length;
      let bare = 0;
      for (let k = 0; k < calls.length; k++) bare += await timeBareNode();
      if (j < 2) continue; // warm-up (page cache, JIT of the harness)
      hookTotals.push(calls.reduce((sum, c) => sum + c.durationMs, 0));
      nodeTotals.push(bare);
    }

    // prepare with an idle instance: the whole hook process, and the acquire round trip alone.
    const prepareMs: number[] = [];
    const acquireMs: number[] = [];
    for (let j = 0; j < 10; j++) {
      await waitIdle();
      const id = String(95_000 + j);
      // The job's secret comes from the config stage, as gitlab-runner hands it over (job_env).
      const { jobSecret } = await request<{ jobSecret: string }>(daemon.socket, { op: 'config', jobId: id });
      const env = {
        ...process.env,
        CUSTOM_ENV_CI_JOB_ID: id,
        TMPDIR: daemon.dir,
        RUNNER_FLEET_JOB_SECRET: jobSecret,
      };
      const call = await runHook(
        entry.custom.prepare_exec,
        entry.custom.prepare_args,
        env,
        daemon.dir,
        'prepare',
      );
      if (call.exitCode !== 0) throw new Error(`prepare failed: ${call.stderr}`);
      prepareMs.push(call.durationMs);
      await request(daemon.socket, { op: 'release', jobId: id, jobSecret });
      await waitIdle();
      const inner = `${id}-inner`;
      const innerSecret = (
        await request<{ jobSecret: string }>(daemon.socket, { op: 'config', jobId: inner })
      ).jobSecret;
      const started = process.hrtime.bigint();
      await request<Lease>(daemon.socket, { op: 'acquire', job: { id: inner }, jobSecret: innerSecret });
      acquireMs.push(Number(process.hrtime.bigint() - started) / 1e6);
      await request(daemon.socket, { op: 'release', jobId: inner, jobSecret: innerSecret });
    }
    const hook = median(hookTotals);
    const bare = median(nodeTotals);
    return {
      'hook calls per trivial job': callsPerJob,
      'hooks total per job, median (ms)': round(hook),
      'bare node -e 0 × same count, median (ms)': round(bare),
      'hook cost ratio (target ≤ 1.5)': round(hook / bare, 2),
      'prepare hook with idle instance, median (ms)': round(median(prepareMs)),
      'acquire inside the daemon with idle instance, median (ms)': round(median(acquireMs), 2),
    };
  } finally {
    await daemon.cleanup();
  }
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/**
 * The launch path, as a newcomer meets it: the embedded default config (idle_count = 0, so every
 * prepare waits for the local provider to launch an instance). Per trivial job: all its hook calls
 * against as many `node -e 0` starts right after (a paired ratio per job, then the median), and
 * its prepare against prepare on a daemon that keeps one idle instance, the two daemons'
 * jobs alternating in the same run.
 */
export async function benchLaunchPath(
  options: { jobs?: number } = {},
): Promise<Record<string, number | string>> {
  const jobs = options.jobs ?? 12;
  const shipped = await startTestDaemon('', { asShipped: true });
  const warm = await startTestDaemon('[pool]\nidle_count = 1\n', { asShipped: true });
  try {
    const shippedEntry = shipped.entry();
    const warmEntry = warm.entry();
    const ratios: number[] = [];
    const hookTotals: number[] = [];
    const bareTotals: number[] = [];
    const launchPrepare: number[] = [];
    const idlePrepare: number[] = [];
    let callsPerJob = 0;
    for (let j = 0; j < jobs + 2; j++) {
      const id = String(97_000 + j);
      const launchJob = async () => {
        const result = await runJob(shippedEntry, { id, script: 'true' });
        if (result.outcome !== 'success') throw new Error(`bench job failed: ${result.log}`);
        const calls = [...result.calls, result.cleanup];
        callsPerJob = calls.length;
        let bare = 0;
        for (let k = 0; k < calls.length; k++) bare += await timeBareNode();
        return { calls, bare };
      };
      const idleJob = async () => {
        await eventually(
          'an idle instance',
          () => warm.status(),
          (s) => s.instances.some((i) => i.state === 'idle'),
        );
        const result = await runJob(warmEntry, { id: `${id}1`, script: 'true' });
        if (result.outcome !== 'success') throw new Error(`bench job failed: ${result.log}`);
        return result.calls.find((c) => c.hook === 'prepare')?.durationMs ?? 0;
      };
      // Alternate which goes first, so that drift in the machine's load hits both alike.
      let launched: Awaited<ReturnType<typeof launchJob>>;
      let idleMs: number;
      if (j % 2 === 0) {
        launched = await launchJob();
        idleMs = await idleJob();
      } else {
        idleMs = await idleJob();
        launched = await launchJob();
      }
      if (j < 2) continue; // warm-up (page cache, JIT of the harness)
      const total = launched.calls.reduce((sum, c) => sum + c.durationMs, 0);
      hookTotals.push(total);
      bareTotals.push(launched.bare);
      ratios.push(total / launched.bare);
      launchPrepare.push(launched.calls.find((c) => c.hook === 'prepare')?.durationMs ?? 0);
      idlePrepare.push(idleMs);
    }
    const pairs = launchPrepare.map((ms, i) => ms / (idlePrepare[i] as number));
    return {
      'hook calls per trivial job': callsPerJob,
      'hooks total per job, median (ms)': round(median(hookTotals)),
      'bare node -e 0 × same count, median (ms)': round(median(bareTotals)),
      'hook cost ratio, median of per-job pairs (target ≤ 1.3)': round(median(ratios), 2),
      'prepare on the launch path, median (ms)': round(median(launchPrepare)),
      'prepare with an idle instance, same run, median (ms)': round(median(idlePrepare)),
      'prepare launch path ÷ idle, median of pairs (target ≤ 1.5)': round(median(pairs), 2),
    };
  } finally {
    await shipped.cleanup();
    await warm.cleanup();
  }
}
