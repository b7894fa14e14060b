/**
 * Fleet scale benchmark: the real Fleet and AWS provider driven by the simulator at 10,000 jobs
 * per simulated hour with about 1,000 running at once, on a simulated EC2 (API latency, EC2's
 * request buckets, capacity errors, spot interruptions). One job per instance at that rate needs
 * 2.8 launches a second: the run sets `[aws] launch_rate = 4` (burst 20) and gives the simulated
 * account a RunInstances bucket of 4 per second (EC2's default is 2: a limit increase). Reports
 * the manager's peak RSS, AWS calls per job (as the simulated EC2 answered them, listing
 * included), job waits, and the CPU one reconcile tick costs with ~1,200 instances and 1,000
 * leases (measured apart, against a provider that answers at once, so the figure is the manager's
 * own work).
 */

import { pino } from 'pino';
import { type Fleet, Fleet as FleetClass } from '../manager/fleet/fleet.js';
import { MemoryLeaseStore } from '../manager/fleet/lease-journal.js';
import { seededRng } from '../manager/simulator/random.js';
import { DEFAULT_CLOUD, simPolicy, simulate } from '../manager/simulator/run.js';
import { scaleTrace } from '../manager/simulator/trace.js';
import { cred, MemoryProvider, startClock, tuning } from '../test/fleet/support.js';

const MiB = 1024 * 1024;

export async function benchFleet(
  options: { perHour?: number; hours?: number; concurrent?: number; launchRate?: number } = {},
): Promise<Record<string, number | string>> {
  const perHour = options.perHour ?? 10_000;
  const hours = options.hours ?? 0.5;
  const concurrent = options.concurrent ?? 1000;
  const launchRate = options.launchRate ?? 4;
  const trace = scaleTrace(seededRng(42), perHour, hours, concurrent);
  let peakRss = process.memoryUsage().rss;
  const cpuStart = process.cpuUsage();
  const report = await simulate(trace, {
    seed: 42,
    policy: simPolicy({
      maxInstances: 1500,
      throttle: { limitPerSecond: 100, burst: 1500 },
      adaptive: { enabled: true, windowMs: 30 * 60_000, leadTimeMs: 0, headroom: 2, maxIdle: 0 },
    }),
    aws: { launch_rate: launchRate, launch_burst: 20 },
    cloud: { apiBuckets: { ...DEFAULT_CLOUD.apiBuckets, run: [1000, launchRate] } },
    steadyFromMs: 20 * 60_000,
    onStep: () => {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    },
  });
  const cpu = process.cpuUsage(cpuStart);
  const tick = await reconcileTickCpu(1200, 1000);
  return {
    'jobs (simulated)': report.jobs,
    'jobs per simulated hour': perHour,
    'peak leased (concurrent jobs)': report.peakLeased,
    'peak instances': report.peakInstances,
    'job wait p50 / p95 / p99 (s)': `${report.waitP50s} / ${report.waitP95s} / ${report.waitP99s}`,
    'job wait p95 after the first 20 min (s)': report.steadyWaitP95s,
    'jobs found a warm instance': `${(report.warmShare * 100).toFixed(1)}%`,
    'jobs failed / retried after spot interruption': `${report.jobsFailed} / ${report.jobsRetried}`,
    '[aws] launch_rate (per s) / EC2 RunInstances refill (per s)': `${report.launchRate} / ${launchRate}`,
    'AWS calls per job': report.awsCallsPerJob,
    'AWS calls by kind': Object.entries(report.calls)
      .map(([k, v]) => `${k} ${v}`)
      .join(', '),
    'manager peak RSS (MiB)': Math.round(peakRss / MiB),
    'CPU per reconcile tick, 1,200 instances (ms)': tick.toFixed(2),
    'CPU for the whole simulation (s)': ((cpu.user + cpu.system) / 1e6).toFixed(1),
    'simulated hours': report.simulatedHours,
    'wall time (s)': (report.wallMs / 1000).toFixed(1),
  };
}

/** Median CPU ms of one reconcile (listing merge, reap plan, dispatch, scaling decision). */
async function reconcileTickCpu(instances: number, leases: number): Promise<number> {
  const clock = startClock();
  const provider = new MemoryProvider(clock, undefined, 0);
  const fleet: Fleet = new FleetClass({
    provider,
    journal: new MemoryLeaseStore(),
    log: pino({ level: 'silent' }),
    fleetName: 'test',
    managerId: 'm1',
    tuning: tuning(
      { reap: { bootGraceMs: 900_000, maxJobLifetimeMs: 6 * 3_600_000, recheckAfterMs: 60_000 } },
      {
        idleCount: instances,
        maxInstances: instances,
        idleTimeMs: 3_600_000,
      },
    ),
    clock,
  });
  await fleet.start();
  await clock.runUntil(clock.now() + 5_000);
  for (let n = 0; n < leases; n++) await fleet.acquire({ id: `job-${n}` }, cred, () => undefined);
  await clock.runUntil(clock.now() + 5_000);
  const samples: number[] = [];
  for (let n = 0; n < 40; n++) {
    const before = process.cpuUsage();
    await fleet.reconcile();
    const used = process.cpuUsage(before);
    samples.push((used.user + used.system) / 1000);
  }
  await fleet.stop();
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)] as number;
}
