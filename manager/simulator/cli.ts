/**
 * `npm run simulate -- --trace FILE [options]`: replay a job-arrival trace against the real fleet
 * and AWS provider code on a simulated EC2 in virtual time and print the report. `--compare` runs the adaptive warm pool and then
 * static idle_count values until one matches its p95 wait, to show what each costs in idle hours.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDuration } from '../config/duration.js';
import type { PoolPolicy } from '../fleet/policy.js';
import { seededRng } from './random.js';
import { type SimulationOptions, type SimulationReport, simPolicy, simulate } from './run.js';
import { burstyDay, formatTrace, parseTrace, steadyWorkday, type TraceJob } from './trace.js';

const USAGE = `Usage: npm run simulate -- --trace FILE [options]

  --trace FILE         CSV of "arrival,duration" in seconds (see test/traces/)
  --idle-count N       static warm pool (default 0); with --adaptive, the floor
  --adaptive           size the warm pool from the recent arrival rate
  --window DUR         adaptive: arrival-rate window (default 30m)
  --headroom Z         adaptive: standard deviations above mean demand (default 2)
  --idle-time DUR      idle_time (default 5m)
  --scale-factor F     scale_factor (default 0); --scale-factor-limit N caps it
  --max-instances N    max_instances (default 400)
  --mode fleet|asg     the AWS provider's [aws] mode (default fleet)
  --launch-rate R      [aws] launch_rate, launches per second (default 2)
  --launch-burst N     [aws] launch_burst (default 5)
  --compare            adaptive vs the smallest static idle_count with the same or better p95
  --seed N             random seed (default 1)
  --json               print the report(s) as JSON
  --generate DIR       write the shipped traces (steady-workday.csv, bursty.csv) to DIR
`;

function flags(argv: string[]): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith('--')) throw new Error(`unexpected argument "${arg}"`);
    const name = arg.slice(2);
    const next = argv[i + 1];
    if (['adaptive', 'compare', 'json', 'help'].includes(name)) out.set(name, true);
    else if (next === undefined) throw new Error(`--${name} needs a value`);
    else {
      out.set(name, next);
      i++;
    }
  }
  return out;
}

function num(f: Map<string, string | true>, name: string, fallback: number): number {
  const v = f.get(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number`);
  return n;
}

function dur(f: Map<string, string | true>, name: string, fallback: string): number {
  const v = f.get(name);
  const ms = parseDuration(typeof v === 'string' ? v : fallback);
  if (ms === undefined) throw new Error(`--${name} must be a duration like 5m`);
  return ms;
}

export function policyFrom(f: Map<string, string | true>, adaptive: boolean, idleCount: number): PoolPolicy {
  return simPolicy({
    idleCount,
    idleTimeMs: dur(f, 'idle-time', '5m'),
    scaleFactor: num(f, 'scale-factor', 0),
    scaleFactorLimit: num(f, 'scale-factor-limit', 0),
    maxInstances: num(f, 'max-instances', 400),
    ...(adaptive
      ? {
          adaptive: {
            enabled: true,
            windowMs: dur(f, 'window', '30m'),
            leadTimeMs: 0,
            headroom: num(f, 'headroom', 2),
            maxIdle: 0,
          },
        }
      : {}),
  });
}

/** The provider settings a run uses: mode and `[aws]` launch rate. */
export function providerFrom(f: Map<string, string | true>): Pick<SimulationOptions, 'mode' | 'aws'> {
  const mode = f.get('mode') ?? 'fleet';
  if (mode !== 'fleet' && mode !== 'asg') throw new Error('--mode must be fleet or asg');
  const aws: Record<string, unknown> = {};
  if (f.has('launch-rate')) aws.launch_rate = num(f, 'launch-rate', 2);
  if (f.has('launch-burst')) aws.launch_burst = num(f, 'launch-burst', 5);
  return { mode, aws };
}

/** Static idle_count values tried by --compare, smallest first. */
export const STATIC_SWEEP = [
  0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 200, 240,
];

export interface Comparison {
  adaptive: SimulationReport;
  static: { idleCount: number; report: SimulationReport } | undefined;
  tried: Array<{ idleCount: number; waitP95s: number; idleInstanceHours: number }>;
}

export async function compare(
  trace: readonly TraceJob[],
  f: Map<string, string | true>,
  seed: number,
): Promise<Comparison> {
  const floor = num(f, 'idle-count', 0);
  const provider = providerFrom(f);
  const adaptive = await simulate(trace, { policy: policyFrom(f, true, floor), seed, ...provider });
  const tried: Comparison['tried'] = [];
  for (const idleCount of STATIC_SWEEP.filter((n) => n >= floor)) {
    const report = await simulate(trace, { policy: policyFrom(f, false, idleCount), seed, ...provider });
    tried.push({ idleCount, waitP95s: report.waitP95s, idleInstanceHours: report.idleInstanceHours });
    if (report.waitP95s <= adaptive.waitP95s) return { adaptive, static: { idleCount, report }, tried };
  }
  return { adaptive, static: undefined, tried };
}

export function renderReport(title: string, r: SimulationReport): string {
  const calls = Object.entries(r.calls)
    .sort()
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const other = Object.entries(r.otherCalls)
    .sort()
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const errors = Object.entries(r.errors)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `== ${title}
jobs                 ${r.jobs} (failed ${r.jobsFailed}, retried after spot interruption ${r.jobsRetried})
job wait             p50 ${r.waitP50s} s, p95 ${r.waitP95s} s, p99 ${r.waitP99s} s, max ${r.waitMaxs} s; ${(r.warmShare * 100).toFixed(1)}% found a warm instance
idle instance-hours  ${r.idleInstanceHours} (booting ${r.bootingInstanceHours}, all ${r.instanceHours})
instances launched   ${r.instancesLaunched}, peak ${r.peakInstances} at once (peak leased ${r.peakLeased})
AWS calls            ${r.awsCalls} = ${r.awsCallsPerJob} per job (${calls})
                     ${r.mode} mode, launch_rate ${r.launchRate}/s, burst ${r.launchBurst}
not AWS calls        ${other || 'none'}
faults injected      ${errors || 'none'}; spot interruptions ${r.interruptions}
simulated            ${r.simulatedHours} h in ${(r.wallMs / 1000).toFixed(1)} s
`;
}

async function main(argv: string[]): Promise<number> {
  const f = flags(argv);
  if (f.has('help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const seed = num(f, 'seed', 1);
  const generate = f.get('generate');
  if (typeof generate === 'string') {
    writeFileSync(
      join(generate, 'steady-workday.csv'),
      formatTrace(
        steadyWorkday(seededRng(20240603)),
        'steady workday: 4 jobs/h at night, ~150 jobs/h 09:00-17:00 with a lunch dip; durations 1-40 min, median 6 min',
      ),
    );
    writeFileSync(
      join(generate, 'bursty.csv'),
      formatTrace(
        burstyDay(seededRng(20240604)),
        'bursty: 6 jobs/h trickle; at 1h, 3.5h and 6h a pipeline of 200 jobs within 60 s, then stages of 80 and 20 jobs',
      ),
    );
    process.stdout.write(`wrote ${generate}/steady-workday.csv and ${generate}/bursty.csv\n`);
    return 0;
  }
  const file = f.get('trace');
  if (typeof file !== 'string') {
    process.stderr.write(USAGE);
    return 64;
  }
  const trace = parseTrace(readFileSync(file, 'utf8'), file);
  if (f.has('compare')) {
    const result = await compare(trace, f, seed);
    if (f.has('json')) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    else {
      process.stdout.write(
        renderReport(`adaptive warm pool (floor idle_count ${num(f, 'idle-count', 0)})`, result.adaptive),
      );
      for (const t of result.tried)
        process.stdout.write(
          `static idle_count ${String(t.idleCount).padStart(3)}: p95 ${t.waitP95s} s, idle ${t.idleInstanceHours} h\n`,
        );
      if (result.static)
        process.stdout.write(
          renderReport(
            `static idle_count ${result.static.idleCount} (smallest with p95 <= adaptive)`,
            result.static.report,
          ),
        );
      else process.stdout.write('no static idle_count tried reached the adaptive p95\n');
    }
    return 0;
  }
  const adaptive = f.has('adaptive');
  const idleCount = num(f, 'idle-count', 0);
  const report = await simulate(trace, {
    policy: policyFrom(f, adaptive, idleCount),
    seed,
    ...providerFrom(f),
  });
  process.stdout.write(
    f.has('json')
      ? `${JSON.stringify(report, null, 2)}\n`
      : renderReport(adaptive ? `adaptive (floor ${idleCount})` : `static idle_count ${idleCount}`, report),
  );
  return 0;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '\u0000')) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`simulate: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    },
  );
}
