/**
 * The soak run, short: a fixed set of jobs with no deadline (a slow machine takes longer, it does
 * not run fewer jobs), every fault kind twice (daemon SIGKILLs at launch, acquire, stage and
 * release; throttling; capacity; slow and never-ready boots; spot reclaim, sshd crash and cut
 * connections mid-stage; cancels in prepare and in the build), a second manager on the same
 * account, and the same invariants as `npm run soak`. Faults strike on events of the job they
 * belong to (its acquire reached the daemon, its script runs), so each one fires on any machine.
 */
import { describe, expect, it } from 'vitest';
import { FAULT_KINDS } from './plan.js';
import { formatReport } from './report.js';
import { runSoak } from './soak.js';

/** Struck by the next launch any job causes, so the last planned one may find no launch left. */
const ON_NEXT_LAUNCH = new Set(['daemon-kill-launch', 'launch-answer-lost']);

describe('soak (short)', () => {
  it('absorbs or names every fault: no wrong outcome, leak, double launch, reuse or secret', async () => {
    const progress: string[] = [];
    const report = await runSoak({
      progress: (line) => progress.push(line),
      seed: 4242,
      jobs: 32,
      secondManagerJobs: 6,
      concurrency: 6,
      secondConcurrency: 1,
      // Two of each kind of fault, nothing more: 28 of the 32 jobs.
      faultRate: 0,
      minPerKind: 2,
      maxWallMs: Number.POSITIVE_INFINITY,
      // Bounds that only turn a hang into a failure: a clean run ends the drain at once.
      drainMs: 300_000,
      jobTimeoutMs: 600_000,
    });
    const text = `${formatReport(report)}\n\nprogress:\n${progress.join('\n')}`;
    expect(report.jobsRun, text).toEqual({ a: 32, b: 6 });
    for (const kind of FAULT_KINDS) {
      expect(report.faultsPlanned[kind], `${kind} planned\n${text}`).toBe(2);
      if (ON_NEXT_LAUNCH.has(kind))
        expect(report.faultsInjected[kind], `${kind} fired\n${text}`).toBeGreaterThanOrEqual(1);
      else expect(report.faultsInjected[kind], `${kind} fired\n${text}`).toBe(2);
    }
    // Every daemon kill restarted the daemon.
    const kills = ['daemon-kill-launch', 'daemon-kill-acquire', 'daemon-kill-stage', 'daemon-kill-release'];
    expect(report.daemonRestarts, text).toBe(kills.reduce((n, k) => n + (report.faultsInjected[k] ?? 0), 0));
    expect(report.wrongOutcomes, text).toBe(0);
    expect(report.hungJobs, text).toBe(0);
    expect(report.leaks, text).toEqual({ instances: 0, leases: 0 });
    expect(report.launches.doubleLaunches, text).toBe(0);
    expect(report.launches.beyondDemand, text).toBe(0);
    expect(report.reuseViolations, text).toBe(0);
    expect(report.otherManagerTouched, text).toBe(0);
    expect(report.secretHits, text).toBe(0);
    expect(
      report.invariants.filter((i) => !i.ok),
      text,
    ).toEqual([]);
    expect(report.ok, text).toBe(true);
  }, 900_000);
});
