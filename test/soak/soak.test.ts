/**
 * The soak run, short: enough jobs for every fault kind to fire a couple of times (daemon SIGKILLs
 * at launch, acquire, stage and release; throttling; capacity; slow and never-ready boots; spot
 * reclaim, sshd crash and cut connections mid-stage; cancels in prepare and in the build), a
 * second manager on the same account, and the same invariants as `npm run soak`.
 */
import { describe, expect, it } from 'vitest';
import { FAULT_KINDS } from './plan.js';
import { formatReport } from './report.js';
import { runSoak } from './soak.js';

describe('soak (short)', () => {
  it('absorbs or names every fault: no wrong outcome, leak, double launch, reuse or secret', async () => {
    const report = await runSoak({
      seed: 4242,
      jobs: 32,
      secondManagerJobs: 6,
      concurrency: 6,
      secondConcurrency: 1,
      // Two of each kind of fault, nothing more: 28 of the 32 jobs.
      faultRate: 0,
      minPerKind: 2,
      maxWallMs: 100_000,
      drainMs: 45_000,
      jobTimeoutMs: 150_000,
    });
    const text = formatReport(report);
    // Every kind was at least planned; the report says which fired.
    expect(Object.keys(report.faultsPlanned).length, text).toBe(FAULT_KINDS.length);
    expect(report.jobsRun.a + report.jobsRun.b, text).toBe(38);
    expect(report.wrongOutcomes, text).toBe(0);
    expect(report.hungJobs, text).toBe(0);
    expect(report.leaks, text).toEqual({ instances: 0, leases: 0 });
    expect(report.launches.doubleLaunches, text).toBe(0);
    expect(report.launches.beyondDemand, text).toBe(0);
    expect(report.reuseViolations, text).toBe(0);
    expect(report.otherManagerTouched, text).toBe(0);
    expect(report.secretHits, text).toBe(0);
    expect(report.daemonRestarts, text).toBeGreaterThanOrEqual(4);
    expect(
      report.invariants.filter((i) => !i.ok),
      text,
    ).toEqual([]);
  }, 240_000);
});
