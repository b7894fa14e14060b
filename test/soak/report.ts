/** The soak report as people read it (the CLI prints it; the README quotes it). */
import type { SoakReport } from './soak.js';

export function formatReport(r: SoakReport): string {
  const kv = (o: Record<string, number>) =>
    Object.entries(o)
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ') || 'none';
  const lines = [
    `runner-fleet soak — seed ${r.seed}, ${r.wallSeconds} s`,
    `jobs run            ${r.jobsRun.a + r.jobsRun.b} of ${r.jobsPlanned} (manager A ${r.jobsRun.a}, second manager B ${r.jobsRun.b})`,
    `faults injected     ${Object.values(r.faultsInjected).reduce((a, b) => a + b, 0)}: ${kv(r.faultsInjected)}`,
    `daemon restarts     ${r.daemonRestarts} (SIGKILL)`,
    `outcomes            ${kv(r.outcomes)}`,
    `system failures by fault  ${kv(r.systemFailureCauses)}`,
    `wrong outcomes      ${r.wrongOutcomes}   hung jobs ${r.hungJobs}`,
    `leaks               ${r.leaks.instances} instances, ${r.leaks.leases} leases`,
    `launches            ${r.launches.instances} instances for ${r.launches.acquires} acquires (+${r.launches.neverReady} boot faults); ${r.launches.runInstancesCalls} RunInstances calls, ${r.launches.clientTokens} client tokens`,
    `double launches     ${r.launches.doubleLaunches}   beyond demand ${r.launches.beyondDemand}`,
    `reuse violations    ${r.reuseViolations}`,
    `other manager hit   ${r.otherManagerTouched}`,
    `secret hits         ${r.secretHits}`,
    `daemon RSS (MB)     first ${r.memoryMb.first}, last ${r.memoryMb.last}, max ${r.memoryMb.max} (${r.memoryMb.samples} samples)`,
    `job overhead (ms)   p50 ${r.overheadMs.p50}, p95 ${r.overheadMs.p95}, max ${r.overheadMs.max} over ${r.overheadMs.n} completed jobs; jobs hit by an absorbed fault: p50 ${r.overheadFaultedMs.p50}, p95 ${r.overheadFaultedMs.p95} (n=${r.overheadFaultedMs.n})`,
    '',
    'invariants:',
    ...r.invariants.map(
      (i) => `  ${i.ok ? 'ok  ' : 'FAIL'} ${i.name}: ${i.value}${i.detail ? ` (${i.detail})` : ''}`,
    ),
  ];
  if (r.failures.length > 0) {
    lines.push('', 'wrong outcomes:');
    for (const f of r.failures.slice(0, 20)) {
      lines.push(
        `  job ${f.id} [${f.manager}] fault ${f.fault ?? 'none'}${f.injected ? '' : ' (not fired)'}: ${f.why ?? ''}`,
      );
    }
  }
  lines.push('', r.ok ? 'SOAK PASSED' : 'SOAK FAILED');
  return lines.join('\n');
}
