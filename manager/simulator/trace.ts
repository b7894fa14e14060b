/**
 * Job-arrival traces: CSV with a header and two columns, `arrival` (seconds from the start of the
 * trace) and `duration` (seconds the job runs once it has an instance). Lines starting with `#`
 * are comments. The generators below made the traces shipped in test/traces/.
 */
import { exponential, logNormal, type Rng } from './random.js';

export interface TraceJob {
  readonly arrivalMs: number;
  readonly durationMs: number;
}

export function parseTrace(text: string, source = 'trace'): TraceJob[] {
  const jobs: TraceJob[] = [];
  let header = true;
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const cells = line.split(',').map((c) => c.trim());
    if (header && cells[0] === 'arrival') {
      header = false;
      return;
    }
    header = false;
    const arrival = Number(cells[0]);
    const duration = Number(cells[1]);
    if (
      cells.length < 2 ||
      !Number.isFinite(arrival) ||
      !Number.isFinite(duration) ||
      arrival < 0 ||
      duration < 0
    )
      throw new Error(`${source}:${index + 1}: expected "arrival,duration" in seconds, got "${line}"`);
    jobs.push({ arrivalMs: arrival * 1000, durationMs: duration * 1000 });
  });
  return jobs.sort((a, b) => a.arrivalMs - b.arrivalMs);
}

export function formatTrace(jobs: readonly TraceJob[], comment: string): string {
  const lines = comment.split('\n').map((l) => `# ${l}`);
  lines.push('arrival,duration');
  for (const j of jobs) lines.push(`${(j.arrivalMs / 1000).toFixed(1)},${(j.durationMs / 1000).toFixed(1)}`);
  return `${lines.join('\n')}\n`;
}

/** Non-homogeneous Poisson arrivals (thinning) for a rate profile in jobs per hour. */
function poisson(
  rng: Rng,
  fromMs: number,
  toMs: number,
  perHour: (ms: number) => number,
  peak: number,
): number[] {
  const out: number[] = [];
  let t = fromMs;
  for (;;) {
    t += exponential(rng, 3_600_000 / peak);
    if (t >= toMs) return out;
    if (rng() * peak <= perHour(t)) out.push(t);
  }
}

const HOUR = 3_600_000;

/**
 * A steady workday: a few jobs an hour at night, a ramp from 07:00, about 150 jobs an hour
 * during office hours with a lunch dip, a tail in the evening. Jobs run 2–20 min (median 6).
 */
export function steadyWorkday(rng: Rng): TraceJob[] {
  const profile = (ms: number) => {
    const h = ms / HOUR;
    if (h < 7) return 4;
    if (h < 9) return 4 + ((h - 7) / 2) * 146;
    if (h < 12) return 150;
    if (h < 13) return 90;
    if (h < 17) return 150;
    if (h < 20) return 150 - ((h - 17) / 3) * 130;
    return 8;
  };
  return poisson(rng, 0, 24 * HOUR, profile, 150).map((arrivalMs) => ({
    arrivalMs,
    durationMs: Math.min(40 * 60_000, Math.max(60_000, logNormal(rng, 6 * 60_000, 0.5))),
  }));
}

/**
 * Bursty: a trickle of 6 jobs an hour, and three big pipelines after quiet periods, each 200 jobs
 * within one minute, then a second stage of 80 jobs when the first finishes (~5 min later) and a
 * third of 20 (~10 min later). Burst jobs run 3–5 min.
 */
export function burstyDay(rng: Rng): TraceJob[] {
  const jobs: TraceJob[] = poisson(rng, 0, 8 * HOUR, () => 6, 6).map((arrivalMs) => ({
    arrivalMs,
    durationMs: logNormal(rng, 5 * 60_000, 0.4),
  }));
  for (const start of [1 * HOUR, 3.5 * HOUR, 6 * HOUR]) {
    const stage = (at: number, count: number, spreadMs: number) => {
      for (let n = 0; n < count; n++)
        jobs.push({ arrivalMs: at + rng() * spreadMs, durationMs: 3 * 60_000 + rng() * 2 * 60_000 });
    };
    stage(start, 200, 60_000);
    stage(start + 5.5 * 60_000, 80, 90_000);
    stage(start + 11 * 60_000, 20, 60_000);
  }
  return jobs.sort((a, b) => a.arrivalMs - b.arrivalMs);
}

/** The scale run: `perHour` jobs an hour for `hours`, durations set so ~`concurrent` run at once. */
export function scaleTrace(rng: Rng, perHour: number, hours: number, concurrent: number): TraceJob[] {
  const meanMs = (concurrent / perHour) * HOUR;
  return poisson(rng, 0, hours * HOUR, () => perHour, perHour).map((arrivalMs) => ({
    arrivalMs,
    durationMs: Math.max(30_000, logNormal(rng, meanMs * 0.94, 0.35)),
  }));
}
