import { request } from '../control/client.js';
import { readOperatorToken } from '../control/operator-token.js';
import type { StatusReport } from '../control/protocol.js';
import { socketOrReport } from './load-config.js';

export async function statusCommand(options: {
  json: boolean;
  config: string | undefined;
  socket: string | undefined;
}): Promise<number> {
  const socket = socketOrReport(options);
  if (typeof socket === 'number') return socket;
  let report: StatusReport;
  try {
    report = await request<StatusReport>(socket, { op: 'status', operatorToken: readOperatorToken(socket) });
  } catch (error) {
    process.stderr.write(`runner-fleet status: ${(error as Error).message}\n`);
    return 1;
  }
  process.stdout.write(
    options.json ? `${JSON.stringify(report, null, 2)}\n` : renderStatus(report, Date.now()),
  );
  return 0;
}

export function renderStatus(report: StatusReport, now: number): string {
  const m = report.manager;
  const out: string[] = [
    `manager ${m.id}  fleet ${m.fleet}  provider ${m.provider}  version ${m.version}  pid ${m.pid}  up ${age(m.startedAt, now)}${m.draining ? '  DRAINING' : ''}`,
  ];
  const counts = new Map<string, number>();
  for (const i of report.instances) counts.set(i.state, (counts.get(i.state) ?? 0) + 1);
  out.push(
    `instances ${report.instances.length} (${[...counts].map(([s, n]) => `${n} ${s}`).join(', ') || 'none'}), jobs waiting ${report.waiting}`,
    '',
  );
  if (report.instances.length > 0) {
    const rows = [
      ['INSTANCE', 'STATE', 'JOB', 'AGE', 'READY IN', 'LEASED FOR', 'USES', 'DETAIL'],
      // Jobs first (oldest lease first), then the pool by age: the rows ops look for on top.
      ...[...report.instances]
        .sort(
          (a, b) =>
            order(a) - order(b) ||
            Date.parse(a.leasedAt ?? a.createdAt) - Date.parse(b.leasedAt ?? b.createdAt),
        )
        .map((i) => [
          i.id,
          i.state,
          i.jobId ?? '-',
          age(i.createdAt, now),
          i.readyAt ? span(Date.parse(i.readyAt) - Date.parse(i.createdAt)) : '-',
          i.leasedAt ? age(i.leasedAt, now) : '-',
          String(i.useCount),
          Object.entries({ ...(i.shape && i.shape !== 'default' ? { shape: i.shape } : {}), ...i.detail })
            .filter(([k]) => k !== 'root')
            .map(([k, v]) => `${k}=${v}`)
            .join(' ') || '-',
        ]),
    ];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    for (const row of rows)
      out.push(
        row
          .map((cell, c) => cell.padEnd(widths[c]!))
          .join('  ')
          .trimEnd(),
      );
  }
  const foreign = report.foreign ?? [];
  if (foreign.length > 0) {
    out.push(
      '',
      `FOREIGN: ${foreign.length} instance(s) carry this manager's tags but were not launched by it; runner-fleet never uses nor terminates them (docs/security.md, "Provenance"):`,
      ...foreign.map((f) => `  ${f.id}  launched ${age(f.launchedAt, now)} ago  ${f.why}`),
    );
  }
  const shapes = report.shapes ?? [];
  if (shapes.length > 0) {
    out.push(
      '',
      'LAUNCH SHAPES (credential rules that launch with their own settings):',
      ...shapes.map((s) =>
        [
          `  ${s.key}  rules ${s.rules.join(', ')}`,
          s.launchTemplate ? `template ${s.launchTemplate}` : '',
          s.subnets?.length ? `subnets ${s.subnets.join(',')}` : '',
          s.instanceTypes?.length ? `types ${s.instanceTypes.join(',')}` : '',
        ]
          .filter(Boolean)
          .join('  '),
      ),
    );
  }
  return `${out.join('\n')}\n`;
}

const STATE_ORDER = ['leased', 'idle', 'booting', 'creating', 'draining', 'terminating', 'failed'];
function order(i: { state: string }): number {
  const n = STATE_ORDER.indexOf(i.state);
  return n < 0 ? STATE_ORDER.length : n;
}

function age(iso: string, now: number): string {
  return span(now - Date.parse(iso));
}

function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
