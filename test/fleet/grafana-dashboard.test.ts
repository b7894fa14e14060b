/**
 * docs/grafana/runner-fleet.json against the real daemon: every PromQL expression of the
 * dashboard (panels and template variables) must select only metrics that the daemon's own
 * /metrics exports, scraped from a running daemon on the local provider.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, REPO_ROOT, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { exportedFamilies, isExported, metricNames } from '../support/promql.js';

const DASHBOARD = join(REPO_ROOT, 'docs', 'grafana', 'runner-fleet.json');

interface Panel {
  title?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Every query of a dashboard: panel targets (rows included) and query variables. */
function dashboardQueries(dashboard: {
  panels?: Panel[];
  templating?: { list?: { type?: string; name?: string; query?: unknown }[] };
}): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Panel[] = []) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query;
    // label_values(metric, label) and query_result(expr): the selector inside is PromQL.
    const inner = q && /^(?:label_values|query_result)\((.*)\)$/.exec(q.trim());
    if (inner) {
      const args = inner[1]!;
      out.push({
        where: `variable $${v.name}`,
        expr: q!.startsWith('label_values') ? args.split(',')[0]! : args,
      });
    }
  }
  return out;
}

/** Names a dashboard selects that the scrape does not export, with where they are used. */
function unknownMetrics(dashboard: Parameters<typeof dashboardQueries>[0], body: string): string[] {
  const families = exportedFamilies(body);
  const problems: string[] = [];
  for (const { where, expr } of dashboardQueries(dashboard)) {
    const names = metricNames(expr);
    if (names.length === 0) problems.push(`${where}: no metric in ${expr}`);
    for (const name of names) if (!isExported(name, families)) problems.push(`${where}: ${name}`);
  }
  return problems;
}

describe('PromQL metric names', () => {
  it('finds the selected metrics, not functions, labels, keywords, numbers or variables', () => {
    expect(
      metricNames(
        'histogram_quantile(0.95, sum by (le, source) (rate(a_seconds_bucket{instance=~"$instance"}[$__rate_interval])))',
      ),
    ).toEqual(['a_seconds_bucket']);
    expect(metricNames('sum(rate(x_sum[5m])) / sum(rate(x_count[5m])) * 1e3 > bool 2')).toEqual([
      'x_sum',
      'x_count',
    ]);
    expect(metricNames('a + on (job) group_left (state) b offset 5m')).toEqual(['a', 'b']);
  });

  it('maps histogram suffixes to their family and refuses the bare histogram name', () => {
    const families = new Map([
      ['h', 'histogram'],
      ['c_total', 'counter'],
      ['s', 'summary'],
    ]);
    expect(
      ['h_bucket', 'h_sum', 'h_count', 'c_total', 's_sum', 's'].map((n) => isExported(n, families)),
    ).toEqual([true, true, true, true, true, false]);
    expect(isExported('h', families)).toBe(false);
    expect(isExported('c', families)).toBe(false);
    expect(isExported('s_bucket', families)).toBe(false);
  });
});

describe('docs/grafana/runner-fleet.json', () => {
  let d: TestDaemon;
  let body: string;
  beforeAll(async () => {
    d = await startTestDaemon('[metrics]\nlisten = "127.0.0.1:0"\n');
    const address = await eventually(
      'the metrics address in the log',
      async () => /"address":"(127\.0\.0\.1:\d+)"[^\n]*metrics listening/.exec(d.output())?.[1],
      (a) => a !== undefined,
    );
    body = await (await fetch(`http://${address}/metrics`)).text();
  });
  afterAll(async () => {
    await d?.cleanup();
  });

  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'));

  it('queries only metrics the daemon exports', () => {
    const queries = dashboardQueries(dashboard);
    expect(queries.length).toBeGreaterThan(20);
    expect(unknownMetrics(dashboard, body)).toEqual([]);
  });

  it('graphs every runner_fleet_* family the fleet exports (process metrics aside)', () => {
    const used = new Set(
      dashboardQueries(dashboard).flatMap(({ expr }) =>
        metricNames(expr).map((n) => n.replace(/_(bucket|sum|count)$/, '')),
      ),
    );
    const fleetFamilies = [...exportedFamilies(body).keys()].filter(
      (n) => n.startsWith('runner_fleet_') && !/^runner_fleet_(process|nodejs)_/.test(n),
    );
    expect(fleetFamilies.filter((n) => !used.has(n))).toEqual([]);
  });

  it('fails on a metric name the daemon does not export', () => {
    const wrong = JSON.parse(
      JSON.stringify(dashboard).replace(/runner_fleet_stuck_instances/g, 'runner_fleet_stuck_instance'),
    );
    expect(unknownMetrics(wrong, body)).toEqual(['panel "Stuck instances": runner_fleet_stuck_instance']);
  });
});
