/**
 * AWS calls per job on the wire, both modes, a burst of 100 jobs and a steady stream: the real
 * Fleet and AwsProvider against the wire-level fake (see test/providers/wire-calls.ts for what is
 * counted and how time is scaled). Target: ≤ 3 per job. Beside each, the simulator's figure for
 * the same job stream at the wire run's pace (the same provider on the simulated cloud).
 */
import { BURST, STEADY, simulatedCalls, wireCalls, wireTiming } from '../test/providers/wire-calls.js';

export async function benchAwsCalls(): Promise<Record<string, number | string>> {
  const out: Record<string, number | string> = {};
  for (const mode of ['fleet', 'asg'] as const) {
    for (const scenario of [BURST, STEADY]) {
      const r = await wireCalls(mode, scenario);
      const sim = await simulatedCalls(mode, scenario, wireTiming(r));
      const label = `${mode}, ${scenario.name} (${r.jobs} jobs)`;
      out[`${label}: calls per job`] = r.perJob;
      out[`${label}: calls by action`] = Object.entries(r.byAction)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      out[`${label}: simulator, same stream`] = sim.perJob;
    }
  }
  return out;
}
