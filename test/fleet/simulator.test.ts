/** The simulator itself: traces parse, runs are deterministic, and every job is accounted for. */
import { describe, expect, it } from 'vitest';
import { seededRng } from '../../manager/simulator/random.js';
import { simPolicy, simulate } from '../../manager/simulator/run.js';
import { burstyDay, formatTrace, parseTrace, steadyWorkday } from '../../manager/simulator/trace.js';
import { VirtualClock } from '../../manager/simulator/virtual-clock.js';

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
        provider: { interruptionsPerHour: 0 },
      });
    const a = await run();
    const b = await run();
    expect(a.jobs).toBe(7);
    expect(a.jobsFailed).toBe(0);
    expect(a.instancesLaunched).toBeGreaterThanOrEqual(7);
    expect(a.waitP50s).toBeGreaterThanOrEqual(0);
    expect(a.awsCalls).toBeGreaterThan(0);
    const { wallMs: _a, ...restA } = a;
    const { wallMs: _b, ...restB } = b;
    expect(restA).toEqual(restB);
  });
});
