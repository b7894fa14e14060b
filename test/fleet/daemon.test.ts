/**
 * Restart and upgrade safety and metrics, against real daemon processes on the local provider:
 * drain for rolling upgrades, a second daemon on the same state refused, two managers on one
 * provider keeping apart, delete_instances_on_shutdown, and the /metrics and /healthz endpoint.
 */
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from '../../manager/control/client.js';
import { Fleet } from '../../manager/fleet/fleet.js';
import { MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import { LocalProvider } from '../../manager/providers/local/local-provider.js';
import { TAG } from '../../manager/providers/tags.js';
import { CLI, eventually, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';
import { cred, job, noop, tuning } from './support.js';

const daemons: TestDaemon[] = [];
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.cleanup();
});
async function daemon(body: string): Promise<TestDaemon> {
  const d = await startTestDaemon(body);
  daemons.push(d);
  return d;
}

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const localInstances = (d: TestDaemon) => {
  const dir = join(d.stateDir, 'local', 'instances');
  return existsSync(dir) ? readdirSync(dir).filter((n) => !n.startsWith('.')) : [];
};

describe('restart and upgrade safety', () => {
  it('drain --wait lets the running job finish, refuses new jobs, and terminates what is left', async () => {
    const d = await daemon('[pool]\nidle_count = 1\nreconcile_interval = "1s"\n');
    const entry = d.entry();
    let drained: Promise<{ code: number | null; stdout: string }> | undefined;
    const result = await runJob(entry, {
      id: '7001',
      script: 'for i in 1 2 3 4; do echo tick $i; sleep 0.5; done',
      onBuildStarted: () => {
        drained = runCli(['drain', '--wait', '--socket', d.socket]);
      },
    });
    expect(result.outcome).toBe('success');
    const drain = await drained;
    expect(drain?.code).toBe(0);
    expect(drain?.stdout).toMatch(/drained: no job is running/);
    const refused = await runJob(entry, { id: '7002', script: 'true' });
    expect(refused.outcome).toBe('system-failure');
    expect(refused.log).toMatch(/draining/);
    const status = await eventually(
      'every instance gone after drain',
      () => d.status(),
      (s) => s.instances.length === 0,
    );
    expect(status.manager.draining).toBe(true);
    expect(status.instances).toEqual([]);
  });

  it('a second daemon on the same state refuses to start and the first keeps serving', async () => {
    const d = await daemon('[pool]\nidle_count = 1\nreconcile_interval = "1s"\n');
    await eventually(
      'an idle instance',
      () => d.status(),
      (s) => s.instances.some((i) => i.state === 'idle'),
    );
    const second = await runCli(['daemon', '--config', d.configPath]);
    expect(second.code).not.toBe(0);
    // It names the daemon it found, so the operator knows which one to stop.
    expect(`${second.stdout}${second.stderr}`).toContain(
      `another runner-fleet daemon is already serving ${d.socket} (pid ${d.pid()}, version `,
    );
    expect(`${second.stdout}${second.stderr}`).toContain(`config ${d.configPath})`);
    // It refused before its first listing: it adopted, launched and terminated nothing.
    expect(second.stdout).not.toMatch(/adopted instance|instance launched|terminating instance/);
    expect(await request(d.socket, { op: 'ping' })).toMatchObject({ pid: expect.any(Number) });
  });

  it('never takes over a socket path another program holds, nor a file that is not a socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-foreign-'));
    const state = join(dir, 'state');
    mkdirSync(state, { mode: 0o700 });
    const config = join(dir, 'config.toml');
    writeFileSync(config, `state_dir = "${state}"\n`);
    const socket = join(state, 'control.sock');
    // Something else listens there and answers in its own protocol.
    const foreign = createServer((c) => c.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    await new Promise<void>((r) => foreign.listen(socket, () => r()));
    try {
      const refused = await runCli(['daemon', '--config', config]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain(`${socket} is in use by a program that is not a runner-fleet daemon`);
      expect(existsSync(socket)).toBe(true);
    } finally {
      foreign.close();
      foreign.unref();
    }
    rmSync(socket, { force: true });
    writeFileSync(socket, 'not a socket');
    const file = await runCli(['daemon', '--config', config]);
    expect(file.code).not.toBe(0);
    expect(file.stderr).toContain(`${socket} exists and is not a socket`);
    expect(readFileSync(socket, 'utf8')).toBe('not a socket');
    rmSync(dir, { recursive: true, force: true });
  });

  it('delete_instances_on_shutdown terminates every instance when the daemon stops', async () => {
    const d = await daemon(
      '[pool]\nidle_count = 2\nreconcile_interval = "1s"\ndelete_instances_on_shutdown = true\n',
    );
    await eventually(
      'two idle instances',
      () => d.status(),
      (s) => s.instances.filter((i) => i.state === 'idle').length === 2,
    );
    expect(localInstances(d)).toHaveLength(2);
    expect(await d.stop()).toBe(0);
    expect(localInstances(d)).toEqual([]);
  });

  it('without it, instances survive a stop and are adopted by the next start', async () => {
    const d = await daemon('[pool]\nidle_count = 2\nreconcile_interval = "1s"\n');
    const before = await eventually(
      'two idle instances',
      () => d.status(),
      (s) => s.instances.filter((i) => i.state === 'idle').length === 2,
    );
    expect(await d.stop()).toBe(0);
    expect(localInstances(d)).toHaveLength(2);
    await d.start();
    const after = await d.status();
    expect(after.instances.map((i) => i.id).sort()).toEqual(before.instances.map((i) => i.id).sort());
  });
});

describe('two managers on one provider', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('never touch each other’s instances', async () => {
    const root = mkdtempSync(join(tmpdir(), 'rf-two-managers-'));
    dirs.push(root);
    const make = (managerId: string, idleCount: number) => {
      const provider = new LocalProvider({ root, fleetName: 'shared', managerId, bootTimeMs: 0 });
      const fleet = new Fleet({
        provider,
        journal: new MemoryLeaseStore(),
        log: pino({ level: 'silent' }),
        fleetName: 'shared',
        managerId,
        tuning: tuning(
          { reconcileIntervalMs: 200, reconcileFastIntervalMs: 100 },
          { idleCount, idleTimeMs: 0 },
        ),
      });
      return { provider, fleet };
    };
    const a = make('manager-a', 2);
    const b = make('manager-b', 1);
    await a.fleet.start();
    await b.fleet.start();
    const owners = async () => (await a.provider.listAll()).map((i) => i.tags[TAG.manager]).sort();
    await eventually(
      'instances owned by a, a and b',
      owners,
      (o) => o.join() === 'manager-a,manager-a,manager-b',
    );
    expect(await owners()).toEqual(['manager-a', 'manager-a', 'manager-b']);
    // b leases and releases its own instance, shrinks its pool to zero and shuts everything down.
    const grant = await b.fleet.acquire(job('b-job'), cred, noop);
    expect((await b.provider.list()).map((i) => i.id)).toContain(grant.instanceId);
    await b.fleet.release('b-job', 'done');
    b.fleet.updateTuning(
      tuning({ reconcileIntervalMs: 200, reconcileFastIntervalMs: 100 }, { idleCount: 0, idleTimeMs: 0 }),
    );
    await b.fleet.reconcile();
    await b.fleet.terminateAll();
    await b.fleet.stop();
    const left = await eventually("b's instances gone", owners, (o) => !o.includes('manager-b'));
    expect(left).toEqual(['manager-a', 'manager-a']);
    // a never adopted or counted b's instances.
    expect(a.fleet.snapshot().instances.every((i) => !i.id.includes(grant.instanceId))).toBe(true);
    await a.fleet.terminateAll();
    await a.fleet.stop();
  });
});

describe('metrics', () => {
  it('serves /metrics with the fleet families and /healthz', async () => {
    const d = await daemon(
      '[pool]\nidle_count = 1\nreconcile_interval = "1s"\n[metrics]\nlisten = "127.0.0.1:0"\n',
    );
    const address = await eventually(
      'the metrics address in the log',
      async () => /"address":"(127\.0\.0\.1:\d+)"[^\n]*metrics listening/.exec(d.output())?.[1],
      (a) => a !== undefined,
    );
    expect(address).toBeDefined();
    await eventually(
      'an idle instance',
      () => d.status(),
      (s) => s.instances.some((i) => i.state === 'idle'),
    );
    const result = await runJob(d.entry(), { id: '7101', script: 'true' });
    expect(result.outcome).toBe('success');
    const body = await (await fetch(`http://${address}/metrics`)).text();
    for (const family of [
      'runner_fleet_instances{state="idle"}',
      'runner_fleet_leases{state="acquired"}',
      'runner_fleet_leases{state="waiting"}',
      'runner_fleet_desired_instances',
      'runner_fleet_max_instances 10',
      'runner_fleet_provider_operations_total{operation="list"}',
      'runner_fleet_provider_operations_total{operation="launch"}',
      'runner_fleet_instance_creation_seconds_bucket',
      'runner_fleet_instance_readiness_seconds_bucket',
      'runner_fleet_acquire_wait_seconds_bucket{le="0",source="idle"}',
      'runner_fleet_instance_lifetime_seconds_bucket',
      'runner_fleet_process_resident_memory_bytes',
    ])
      expect(body).toContain(family);
    const health = await fetch(`http://${address}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, draining: false });
  });
});
