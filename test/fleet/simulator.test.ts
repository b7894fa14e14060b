/** The simulator itself: traces parse, runs are deterministic, and every job is accounted for. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { policyFrom } from '../../manager/simulator/cli.js';
import { seededRng } from '../../manager/simulator/random.js';
import type { SimulationReport } from '../../manager/simulator/run.js';
import { simPolicy, simulate } from '../../manager/simulator/run.js';
import { burstyDay, formatTrace, parseTrace, steadyWorkday } from '../../manager/simulator/trace.js';
import { VirtualClock } from '../../manager/simulator/virtual-clock.js';
import { REPO_ROOT } from '../support/daemon.js';

describe('simulator', () => {
  it('parses the CSV trace format and round-trips the generators', () => {
    expect(parseTrace('# c\narrival,duration\n10,60\n0.5,30\n')).toEqual([
      { arrivalMs: 500, durationMs: 30_000 },
      { arrivalMs: 10_000, durationMs: 60_000 },
    ]);
    expect(() => parseTrace('arrival,duration\nsoon,60\n', 'x.csv')).toThrow(/x\.csv:2/);
    const jobs = burstyDay(seededRng(1));
    expect(parseTrace(formatTrace(jobs, 'test'))).toHaveLength(jobs.length);
    expect(steadyWorkday(seededRng(1)).length).toBeGreaterThan(1000);
  });

  it('fires virtual timers in time order, ties in the order they were set', async () => {
    const clock = new VirtualClock(0);
    const seen: string[] = [];
    clock.setTimeout(() => seen.push('b'), 20);
    clock.setTimeout(() => seen.push('a'), 10);
    clock.setTimeout(() => seen.push('c'), 20);
    const cancelled = clock.setTimeout(() => seen.push('x'), 5);
    clock.clearTimeout(cancelled);
    await clock.runUntil(100);
    expect(seen).toEqual(['a', 'b', 'c']);
    expect(clock.now()).toBe(100);
  });

  it('runs a trace through the real fleet: every job served, deterministic for a seed', async () => {
    const trace = parseTrace('arrival,duration\n0,120\n5,120\n10,60\n600,60\n601,60\n602,60\n1800,30\n');
    const run = () =>
      simulate(trace, {
        policy: simPolicy({ idleCount: 1 }),
        seed: 3,
        cloud: { interruptionsPerHour: 0 },
      });
    const a = await run();
    const b = await run();
    expect(a.jobs).toBe(7);
    expect(a.jobsFailed).toBe(0);
    expect(a.instancesLaunched).toBeGreaterThanOrEqual(7);
    // idle_count = 1 keeps one instance warm once the pool has filled: the jobs at 600 s and
    // 1,800 s find it; the first three (empty pool) and the two right behind the one at 600 s
    // wait for a boot, so the median job waits a boot (median 50 s in the simulated cloud).
    expect(a.warmShare).toBe(Math.round((2 / 7) * 1000) / 1000);
    expect(a.waitP50s).toBeGreaterThan(10);
    expect(a.waitMaxs).toBeGreaterThanOrEqual(a.waitP50s);
    // The breakdown adds up to the total; SSH probes and connect info are counted apart.
    expect(Object.values(a.calls).reduce((x, y) => x + y, 0)).toBe(a.awsCalls);
    expect(Object.keys(a.calls)).toContain('RunInstances');
    expect(Object.keys(a.calls)).not.toContain('probe');
    expect(a.otherCalls.probe).toBeGreaterThan(0);
    const { wallMs: _a, ...restA } = a;
    const { wallMs: _b, ...restB } = b;
    expect(restA).toEqual(restB);
  });

  it('launches at [aws] launch_rate: the provider token bucket, in virtual time', async () => {
    const burst = Array.from({ length: 60 }, () => ({ arrivalMs: 0, durationMs: 60_000 }));
    const run = async (launchRate: number, launchBurst: number) => {
      const launches: number[] = [];
      const r = await simulate(burst, {
        policy: simPolicy(),
        seed: 2,
        aws: { launch_rate: launchRate, launch_burst: launchBurst },
        cloud: {
          capacityErrorRate: 0,
          interruptionsPerHour: 0,
          onCall: (action, at) => {
            if (action === 'RunInstances') launches.push(at);
          },
        },
      });
      return { r, spanS: ((launches.at(-1) ?? 0) - (launches[0] ?? 0)) / 1000 };
    };
    const slow = await run(2, 5);
    const fast = await run(50, 100);
    expect(slow.r.calls.RunInstances).toBe(60);
    expect(slow.r.launchRate).toBe(2);
    // 5 at once, then 2 a second: the 60th launch goes out ~27.5 s after the first.
    expect(slow.spanS).toBeGreaterThanOrEqual((60 - 5) / 2 - 1);
    // Unlimited, four launch calls in flight (360 ms each) set the pace: ~5 s.
    expect(fast.spanS).toBeLessThan(10);
    expect(slow.r.waitMaxs).toBeGreaterThan(fast.r.waitMaxs + 15);
  });

  it('reproduces the steady-workday figures docs/fleet.md quotes (seed 1)', async () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs', 'fleet.md'), 'utf8');
    const trace = parseTrace(readFileSync(join(REPO_ROOT, 'test', 'traces', 'steady-workday.csv'), 'utf8'));
    const run = (adaptive: boolean, idleCount: number) =>
      simulate(trace, { policy: policyFrom(new Map(), adaptive, idleCount), seed: 1 });
    const adaptive = await run(true, 0);
    const static5 = await run(false, 5);
    const static4 = await run(false, 4);
    const n = (x: number) => x.toLocaleString('en-US');
    const h = (x: number) => x.toFixed(1);
    const full = (r: SimulationReport, idle: string) =>
      `${r.waitP50s} / ${r.waitP95s} / ${r.waitP99s} s | ${(r.warmShare * 100).toFixed(1)} % | ${idle} | ${n(r.instancesLaunched)} | ${r.peakInstances} | ${r.awsCallsPerJob} |`;
    expect(doc).toContain(
      `| steady workday | **adaptive** (floor 0) | ${full(adaptive, `**${h(adaptive.idleInstanceHours)}**`)}`,
    );
    expect(doc).toContain(
      `| steady workday | static idle_count 5 (smallest with p95 ≤ adaptive) | ${full(static5, h(static5.idleInstanceHours))}`,
    );
    expect(doc).toContain(
      `| steady workday | static idle_count 4 | p95 ${static4.waitP95s} s | | ${h(static4.idleInstanceHours)} | | | |`,
    );
    // The claims drawn from them: static 4 misses the adaptive p95, and the saving quoted.
    expect(static4.waitP95s).toBeGreaterThan(adaptive.waitP95s);
    expect(static5.waitP95s).toBeLessThanOrEqual(adaptive.waitP95s);
    const saving = Math.round((1 - adaptive.idleInstanceHours / static5.idleInstanceHours) * 100);
    expect(doc).toContain(`**${saving} % fewer idle instance-hours**`);
    // Three simulated workdays through the real provider and SDK: minutes on a loaded machine.
  }, 1_800_000);
});
