/**
 * `npm run soak`: the long run with default settings; prints the report, writes it as JSON to
 * .bench/soak.json, exits 1 if any invariant failed.
 *   npm run soak -- --seed 7 --jobs 100 --second 20 --concurrency 6 --minutes 5 --fault-rate 0.3 --min-per-kind 3
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../support/daemon.js';
import { formatReport } from './report.js';
import { DEFAULT_SOAK, runSoak } from './soak.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    jobs: { type: 'string' },
    second: { type: 'string' },
    concurrency: { type: 'string' },
    minutes: { type: 'string' },
    'fault-rate': { type: 'string' },
    'min-per-kind': { type: 'string' },
    out: { type: 'string' },
  },
});
const num = (v: string | undefined, fallback: number) => {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`soak: not a number: ${v}\n`);
    process.exit(64);
  }
  return n;
};

const started = Date.now();
const report = await runSoak({
  seed: num(values.seed, DEFAULT_SOAK.seed),
  jobs: num(values.jobs, DEFAULT_SOAK.jobs),
  secondManagerJobs: num(values.second, DEFAULT_SOAK.secondManagerJobs),
  concurrency: num(values.concurrency, DEFAULT_SOAK.concurrency),
  maxWallMs: num(values.minutes, DEFAULT_SOAK.maxWallMs / 60_000) * 60_000,
  faultRate: num(values['fault-rate'], DEFAULT_SOAK.faultRate),
  minPerKind: num(values['min-per-kind'], DEFAULT_SOAK.minPerKind),
  progress: (line) => process.stderr.write(`[soak ${Math.round((Date.now() - started) / 1000)}s] ${line}\n`),
});
process.stdout.write(`${formatReport(report)}\n`);
const out = values.out ?? join(REPO_ROOT, '.bench', 'soak.json');
mkdirSync(join(out, '..'), { recursive: true });
writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`report written to ${out}\n`);
process.exit(report.ok ? 0 : 1);
