/**
 * The manager's health timer (infra/fleet/health-metrics.ts) as the manager runs it: the rendered
 * script under bash against a real daemon's /healthz and /metrics, with `aws` replaced by a
 * recorder of its arguments; and its units checked by systemd-analyze.
 */
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderHealthMetricsScript, renderHealthMetricsUnits } from '../../infra/fleet/health-metrics.js';
import { FLEET_METRICS_NAMESPACE } from '../../infra/shared/alarms.js';
import { eventually, startTestDaemon, type TestDaemon } from '../support/daemon.js';

interface Datum {
  MetricName: string;
  Value: number;
  Unit: string;
  Dimensions: { Name: string; Value: string }[];
}

let dir: string;
let d: TestDaemon;
let listen: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-health-'));
  d = await startTestDaemon('[metrics]\nlisten = "127.0.0.1:0"\n');
  listen = await eventually(
    'the metrics address in the log',
    async () => /"address":"(127\.0\.0\.1:\d+)"[^\n]*metrics listening/.exec(d.output())?.[1] ?? '',
    (a) => a !== '',
  );
});
afterAll(async () => {
  await d?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs the rendered script once; returns the put-metric-data arguments the fake aws received.
 * Asynchronous: a stand-in server in this process must keep answering while bash runs.
 */
async function runOnce(name: string, address: string): Promise<{ args: string[]; data: Datum[] }> {
  const record = join(dir, `${name}.args`);
  const aws = join(dir, `${name}-aws`);
  writeFileSync(aws, `#!/bin/bash\nprintf '%s\\n' "$@" > '${record}'\n`);
  chmodSync(aws, 0o755);
  const script = join(dir, `${name}.sh`);
  writeFileSync(
    script,
    renderHealthMetricsScript({ fleetName: 'ci-dev', region: 'eu-west-1', listen: address, awsCli: aws }),
  );
  const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile('bash', [script], { timeout: 60_000 }, (error, _stdout, stderr) =>
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
  expect(r.code, r.stderr).toBe(0);
  const args = readFileSync(record, 'utf8').trimEnd().split('\n');
  const data = JSON.parse(args[args.indexOf('--metric-data') + 1]!) as Datum[];
  return { args, data };
}

const values = (data: Datum[]) => Object.fromEntries(data.map((x) => [x.MetricName, x.Value]));

describe('the health timer script', () => {
  it('reports a healthy daemon and its foreign and stuck counts, per fleet', async () => {
    const { args, data } = await runOnce('up', listen);
    expect(args.slice(0, 2)).toEqual(['cloudwatch', 'put-metric-data']);
    expect(args).toEqual(
      expect.arrayContaining(['--namespace', FLEET_METRICS_NAMESPACE, '--region', 'eu-west-1']),
    );
    expect(values(data)).toEqual({ ManagerHealthy: 1, ForeignInstances: 0, StuckInstances: 0 });
    for (const x of data) {
      expect(x.Unit).toBe('Count');
      expect(x.Dimensions).toEqual([{ Name: 'Fleet', Value: 'ci-dev' }]);
    }
  });

  it('sums every label set of a family from the scrape', async () => {
    // A stand-in daemon whose /metrics has stuck instances in two states and a 503 /healthz.
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      if (req.url === '/healthz') return void res.writeHead(503).end('{"ok":false}');
      res.end(
        [
          '# TYPE runner_fleet_stuck_instances gauge',
          'runner_fleet_stuck_instances{state="booting"} 2',
          'runner_fleet_stuck_instances{state="terminating"} 3',
          'runner_fleet_stuck_instances_other 40',
          '# TYPE runner_fleet_foreign_instances gauge',
          'runner_fleet_foreign_instances 1',
          '',
        ].join('\n'),
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const { port } = server.address() as { port: number };
      expect(values((await runOnce('sum', `127.0.0.1:${port}`)).data)).toEqual({
        ManagerHealthy: 0,
        ForeignInstances: 1,
        StuckInstances: 5,
      });
    } finally {
      server.close();
    }
  });

  it('reports unhealthy, and no counts, when the daemon is gone', async () => {
    await d.stop();
    expect(values((await runOnce('down', listen)).data)).toEqual({ ManagerHealthy: 0 });
  });
});

describe('the health timer units', () => {
  // .ci/run installs systemd; a machine without systemd-analyze fails here rather than skipping.
  it('pass systemd-analyze verify', () => {
    const script = join(dir, 'runner-fleet-health-metrics');
    writeFileSync(script, '#!/bin/bash\n');
    chmodSync(script, 0o755);
    const units = renderHealthMetricsUnits(script);
    writeFileSync(join(dir, 'runner-fleet-health-metrics.service'), units.service);
    writeFileSync(join(dir, 'runner-fleet-health-metrics.timer'), units.timer);
    const r = spawnSync('systemd-analyze', ['verify', join(dir, 'runner-fleet-health-metrics.timer')], {
      encoding: 'utf8',
      timeout: 60_000,
      cwd: dir,
    });
    // verify also reports on units ours name (runner-fleet.service is not installed here).
    const problems = `${r.stdout}\n${r.stderr}`
      .split('\n')
      .filter((l) => l.includes('runner-fleet-health-metrics') && !/runner-fleet\.service/.test(l));
    expect(problems, `${r.stdout}${r.stderr}`).toEqual([]);
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});
