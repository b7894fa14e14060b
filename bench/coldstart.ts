/**
 * Cold start on the AWS path: the real daemon (`provider = "aws"`, fleet mode, default reconcile
 * intervals) against the wire-level EC2 fake, every instance a real sshd. Two figures:
 *
 * - a job that finds no idle instance (`idle_count = 0`): the acquire round trip (launch, wait
 *   for `running`, readiness over SSH, lease) minus the fake's own boot time for that instance
 *   (launch call → `running` with its sshd listening). What is left is ours: the launch calls,
 *   noticing `running`, the SSH readiness probe and the lease bookkeeping.
 * - a burst of 50 jobs at once against `max_instances = 50`, `idle_count = 0`: wait p50/p95.
 *
 * Timed at the control socket, as `prepare` asks (the hook's own process start is in the hooks
 * bench). Every instance is released after its acquire and terminated (max_use_count = 1).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from '../manager/control/client.js';
import type { Lease } from '../manager/control/protocol.js';
import { awsToml, startAwsWorld } from '../test/providers/aws-harness.js';
import { startTestDaemon } from '../test/support/daemon.js';

const AWS_ENV = { AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret' };
/** The fake's pending → running time; the backing sshd's start comes on top. */
const FAKE_PENDING_MS = 1_000;
const LAUNCH_ACTIONS = new Set(['CreateFleet', 'RunInstances', 'SetDesiredCapacity']);

const round = (n: number, digits = 0) => Number(n.toFixed(digits));
function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}

export async function benchColdStart(options: { coldJobs?: number; burst?: number } = {}) {
  const coldJobs = options.coldJobs ?? 5;
  const burst = options.burst ?? 50;
  const world = await startAwsWorld();
  world.fake.setTiming({ pendingMs: FAKE_PENDING_MS });
  const scratch = mkdtempSync(join(tmpdir(), 'rf-bench-cold-'));
  // Default reconcile intervals and readiness settings: the figure is what an operator gets.
  const daemon = await startTestDaemon(
    `provider = "aws"
fleet_name = "bench"
[executor]
builds_dir = "${scratch}/builds"
cache_dir = "${scratch}/cache"
[pool]
idle_count = 0
max_instances = ${burst}
${awsToml(world, 'fleet')}`,
    { env: AWS_ENV },
  );
  let seq = 0;
  const acquire = async (): Promise<{ ms: number; lease: Lease; release: () => Promise<unknown> }> => {
    const jobId = String(70_000 + seq++);
    const { jobSecret } = await request<{ jobSecret: string }>(daemon.socket, { op: 'config', jobId });
    const started = Date.now();
    const lease = await request<Lease>(daemon.socket, { op: 'acquire', job: { id: jobId }, jobSecret });
    const ms = Date.now() - started;
    return { ms, lease, release: () => request(daemon.socket, { op: 'release', jobId, jobSecret }) };
  };
  /** Launch call → running (sshd listening), as the fake saw it. */
  const bootMs = (instanceId: string): number => {
    const instance = world.fake.instance(instanceId);
    if (!instance?.runningSince) throw new Error(`bench: ${instanceId} never ran`);
    const launches = world.fake
      .calls()
      .filter((c) => LAUNCH_ACTIONS.has(c.action) && !c.error && c.at <= (instance.runningSince ?? 0));
    const launchedAt = launches[launches.length - 1]?.at;
    if (launchedAt === undefined) throw new Error(`bench: no launch call before ${instanceId} ran`);
    return instance.runningSince - launchedAt;
  };
  try {
    const overheads: number[] = [];
    const boots: number[] = [];
    for (let j = 0; j < coldJobs + 1; j++) {
      const { ms, lease, release } = await acquire();
      const boot = bootMs(lease.instanceId);
      await release();
      if (j === 0) continue; // warm-up: first SDK client, first template read
      overheads.push(ms - boot);
      boots.push(boot);
    }

    world.fake.clearCalls();
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: burst }, () => acquire()));
    const burstWallMs = Date.now() - started;
    const waits = results.map((r) => r.ms);
    await Promise.all(results.map((r) => r.release()));
    return {
      'fake boot (launch call → running, sshd up), median (ms)': round(quantile(boots, 0.5)),
      'cold acquire minus boot, median (ms) (target ≤ 2000)': round(quantile(overheads, 0.5)),
      'cold acquire minus boot, max (ms)': round(Math.max(...overheads)),
      [`burst of ${burst} (idle_count 0, max_instances ${burst}): wait p50 (ms)`]: round(
        quantile(waits, 0.5),
      ),
      [`burst of ${burst}: wait p95 (ms)`]: round(quantile(waits, 0.95)),
      [`burst of ${burst}: all leased after (ms)`]: burstWallMs,
    };
  } finally {
    await daemon.cleanup();
    await world.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
