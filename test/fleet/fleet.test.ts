/**
 * The real Fleet in virtual time against an in-memory provider: acquire without provider calls,
 * arrival order, the lease-versus-scale-in race, timeouts, restart from tags and journal, and
 * two-phase orphan reaping against a fake GitLab on 127.0.0.1.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetError, type LeaseGrant } from '../../manager/fleet/fleet.js';
import { gitlabJobChecker } from '../../manager/fleet/job-check.js';
import { MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import { TAG } from '../../manager/providers/tags.js';
import { seededRng } from '../../manager/simulator/random.js';
import { settle, type VirtualClock } from '../../manager/simulator/virtual-clock.js';
import { cred, job, MemoryProvider, MIN, makeFleet, noop, startClock, tuning } from './support.js';

async function advance(clock: VirtualClock, ms: number): Promise<void> {
  await clock.runUntil(clock.now() + ms);
}

function idleIds(
  provider: MemoryProvider,
  fleet: { snapshot(): { instances: { id: string; state: string }[] } },
) {
  return fleet
    .snapshot()
    .instances.filter((i) => i.state === 'idle')
    .map((i) => i.id)
    .filter((id) => provider.alive().includes(id));
}

describe('acquire', () => {
  it('hands an idle instance over without waiting on any provider call', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const { fleet } = makeFleet(clock, provider, tuning({}, { idleCount: 1 }));
    await fleet.start();
    await advance(clock, MIN);
    const [idle] = idleIds(provider, fleet);
    expect(idle).toBeDefined();
    // From here every provider call would hang forever: the grant must not depend on one.
    provider.hang = true;
    const before = provider.calls.length;
    let grant: LeaseGrant | undefined;
    void fleet.acquire(job('1'), cred, noop).then((g) => {
      grant = g;
    });
    for (let n = 0; n < 5 && !grant; n++) await settle();
    expect(grant?.instanceId).toBe(idle);
    expect(grant?.waitedMs).toBe(0);
    expect(grant?.connect).toEqual({ kind: 'local', root: `/mem/${idle}` });
    // No call at all: the lease is in the journal, not in a tag (two calls per job).
    expect(provider.calls.slice(before)).toEqual([]);
    provider.hang = false;
  });

  it('serves waiting jobs in arrival order, whichever instance is ready first', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock, undefined, 60_000);
    const { fleet } = makeFleet(clock, provider, tuning());
    await fleet.start();
    const order: string[] = [];
    const grants = new Map<string, string>();
    const take = (id: string) =>
      fleet.acquire(job(id), cred, noop).then((g) => {
        order.push(id);
        grants.set(id, g.instanceId);
      });
    const a = take('a');
    await advance(clock, 1000); // a's instance launches, slow to boot
    provider.bootMs = 5_000; // the next ones boot fast and are ready first
    const b = take('b');
    await advance(clock, 100);
    const c = take('c');
    await advance(clock, 2 * MIN);
    await Promise.all([a, b, c]);
    expect(order).toEqual(['a', 'b', 'c']);
    expect(new Set(grants.values()).size).toBe(3);
  });

  it('ends a wait after instance_acquire_timeout with a clear timeout error', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock, undefined, 60 * MIN);
    const { fleet } = makeFleet(
      clock,
      provider,
      tuning({ acquireTimeoutMs: MIN, readyTimeoutMs: 2 * 60 * MIN }),
    );
    await fleet.start();
    const outcome = fleet.acquire(job('slow'), cred, noop).catch((e: unknown) => e);
    await advance(clock, MIN + 1000);
    const error = await outcome;
    expect(error).toBeInstanceOf(FleetError);
    expect((error as FleetError).code).toBe('timeout');
    expect((error as FleetError).message).toMatch(/instance_acquire_timeout \(60 s\)/);
  });
});

describe('scale-in versus lease', () => {
  it('a lease taken while the scale-in tick lists wins: the instance is not terminated', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const { fleet } = makeFleet(clock, provider, tuning({}, { idleCount: 1, idleTimeMs: 5 * MIN }));
    await fleet.start();
    await advance(clock, MIN);
    const [x] = idleIds(provider, fleet);
    expect(x).toBeDefined();
    // The pool shrinks to 0: x goes once it has been idle for idle_time, at a later tick.
    fleet.updateTuning(tuning({}, { idleCount: 0, idleTimeMs: 5 * MIN }));
    expect(provider.alive()).toContain(x);
    // Hold the next listing open: the tick that would scale x in is now in flight.
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    const list = provider.list.bind(provider);
    provider.list = async () => {
      await gate;
      return list();
    };
    await advance(clock, 5 * MIN);
    const grant = await fleet.acquire(job('racer'), cred, noop);
    expect(grant.instanceId).toBe(x);
    openGate();
    await fleet.reconcile();
    await advance(clock, 2000);
    expect(provider.terminated).not.toContain(x);
    expect(fleet.snapshot().instances.find((i) => i.id === x)?.state).toBe('leased');
    await fleet.release('racer', 'done');
    await advance(clock, 2000);
    expect(provider.terminated).toContain(x); // worn out (max_use_count 1), now it may go
  });

  it('an instance scaled in first is never leased: the job gets another one', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const { fleet } = makeFleet(clock, provider, tuning({}, { idleCount: 1, idleTimeMs: 0 }));
    await fleet.start();
    await advance(clock, MIN);
    const [x] = idleIds(provider, fleet);
    fleet.updateTuning(tuning({}, { idleCount: 0, idleTimeMs: 0 }));
    const grant = await new Promise<LeaseGrant>((resolve, reject) => {
      fleet.acquire(job('late'), cred, noop).then(resolve, reject);
      void advance(clock, 2 * MIN);
    });
    expect(grant.instanceId).not.toBe(x);
    expect(provider.terminated).toContain(x);
  });

  it('never terminates an instance a job holds, under random churn of jobs and pool sizes', async () => {
    const clock = startClock();
    const rng = seededRng(7);
    const provider = new MemoryProvider(clock, undefined, 20_000);
    const { fleet } = makeFleet(
      clock,
      provider,
      tuning({ maxUseCount: 3 }, { idleCount: 2, idleTimeMs: MIN, maxInstances: 15 }),
    );
    const held = new Map<string, string>();
    const violations: string[] = [];
    provider.onTerminate = (ids) => {
      for (const id of ids) if (held.has(id)) violations.push(`${id} held by ${held.get(id)}`);
    };
    await fleet.start();
    let done = 0;
    const total = 300;
    for (let n = 0; n < total; n++) {
      const id = `j${n}`;
      clock.setTimeout(
        () => {
          void fleet.acquire(job(id), cred, noop).then(
            (g) => {
              held.set(g.instanceId, id);
              clock.setTimeout(
                () => {
                  held.delete(g.instanceId);
                  void fleet.release(id, 'done').then(() => done++);
                },
                MIN + rng() * 9 * MIN,
              );
            },
            () => done++,
          );
        },
        rng() * 120 * MIN,
      );
    }
    for (let k = 0; k < 14; k++)
      clock.setTimeout(
        () =>
          fleet.updateTuning(
            tuning({ maxUseCount: 3 }, { idleCount: k % 4, idleTimeMs: MIN, maxInstances: 15 }),
          ),
        k * 10 * MIN,
      );
    for (let step = 0; step < 200 && done < total; step++) await advance(clock, MIN);
    expect(done).toBe(total);
    expect(violations).toEqual([]);
    expect(provider.terminated.length).toBeGreaterThan(50);
  });
});

describe('restart', () => {
  it('adopts leased and idle instances from tags and journal, and finishes a termination cut short', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const journal = new MemoryLeaseStore();
    const first = makeFleet(clock, provider, tuning({}, { idleCount: 3 }), { journal }).fleet;
    await first.start();
    await advance(clock, MIN);
    const grant = await first.acquire(job('running'), cred, noop);
    await advance(clock, 1000);
    await first.stop();
    // A crash after deciding to retire an instance but before the terminate call went out.
    const doomed = provider.alive().find((id) => id !== grant.instanceId) as string;
    journal.addRetiring([doomed]);

    const second = makeFleet(clock, provider, tuning({}, { idleCount: 1 }), { journal }).fleet;
    await second.start();
    await advance(clock, 2000);
    const after = second.snapshot().instances;
    expect(after.find((i) => i.id === grant.instanceId)).toMatchObject({ state: 'leased', jobId: 'running' });
    expect(provider.terminated).toContain(doomed);
    // The lease came from the journal: no tag ever said so.
    expect(provider.instances.get(grant.instanceId)?.tags[TAG.state]).toBe('booting');
    expect(await second.release('running', 'cleanup after restart')).toMatchObject({
      released: true,
      instanceId: grant.instanceId,
    });
    await advance(clock, 2000);
    expect(provider.terminated).toContain(grant.instanceId);
    // Nothing leaked: once idle_time has passed, what is left is the warm pool of 1.
    await advance(clock, 6 * MIN);
    expect(provider.alive()).toHaveLength(1);
    await second.stop();
  });
});

describe('restart without a readable journal', () => {
  it('treats every adopted instance as leased by an unknown job, never hands one to a new job', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const first = makeFleet(clock, provider, tuning({}, { idleCount: 2 })).fleet;
    await first.start();
    await advance(clock, MIN);
    const grant = await first.acquire(job('running'), cred, noop);
    await first.stop();

    class Unreadable extends MemoryLeaseStore {
      readonly loadProblem = 'lease journal is corrupt';
    }
    const second = makeFleet(clock, provider, tuning({}, { idleCount: 0 }), {
      journal: new Unreadable(),
    }).fleet;
    await second.start();
    const states = second.snapshot().instances.map((i) => i.state);
    expect(states).toEqual(['leased', 'leased']);
    expect(second.snapshot().instances.some((i) => i.id === grant.instanceId)).toBe(true);
    await second.stop();
  });
});

describe('readiness', () => {
  it('probes an instance once more at the deadline instead of failing it unasked', async () => {
    const clock = startClock();
    // Boot takes exactly the ready timeout: a probe schedule that sleeps past the deadline
    // without a last look would replace a healthy instance.
    const provider = new MemoryProvider(clock, undefined, 10_000);
    const { fleet } = makeFleet(clock, provider, tuning({ readyTimeoutMs: 10_000 }, { idleCount: 1 }));
    await fleet.start();
    await advance(clock, 11_000);
    expect(provider.terminated).toEqual([]);
    expect(fleet.snapshot().instances.map((i) => i.state)).toEqual(['idle']);
    await fleet.stop();
  });

  it('probes again as soon as the provider says a probe was free, instead of backing off', async () => {
    const readyAfter = async (freeProbeMs: number | undefined) => {
      const clock = startClock();
      const provider = new MemoryProvider(clock, undefined, 1_200);
      provider.freeProbeMs = freeProbeMs;
      const { fleet } = makeFleet(clock, provider, tuning({}, { idleCount: 1 }));
      await fleet.start();
      const started = clock.now();
      let readyAt: number | undefined;
      for (let n = 0; n < 200 && readyAt === undefined; n++) {
        await advance(clock, 50);
        if (fleet.snapshot().instances.some((i) => i.state === 'idle')) readyAt = clock.now() - started;
      }
      await fleet.stop();
      return { readyAt, probes: provider.calls.filter((c) => c === 'checkReady').length };
    };
    // Back-off: probes at 0, 1 and 3 s, so a 1.2 s boot is seen at 3 s.
    const backedOff = await readyAfter(undefined);
    expect(backedOff.readyAt).toBeGreaterThanOrEqual(3_000);
    expect(backedOff.probes).toBe(3);
    // Free probes every 250 ms: seen at the first probe after 1.2 s.
    const free = await readyAfter(250);
    expect(free.readyAt).toBeLessThanOrEqual(1_500);
    expect(free.probes).toBe(6);
  });

  it('gives an instance adopted after a restart time to answer, even past its original deadline', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock, undefined, 60_000);
    const first = makeFleet(clock, provider, tuning({ readyTimeoutMs: 20_000 }, { idleCount: 1 })).fleet;
    await first.start();
    await advance(clock, 5_000);
    await first.stop();
    // The daemon was down while the instance booted (60 s boot, 20 s ready timeout): when the new
    // daemon adopts it at 65 s, its original deadline is long past, but it is ready.
    await advance(clock, 60_000);
    const second = makeFleet(clock, provider, tuning({ readyTimeoutMs: 20_000 }, { idleCount: 1 })).fleet;
    await second.start();
    await advance(clock, 3_000);
    expect(provider.terminated).toEqual([]);
    expect(second.snapshot().instances.map((i) => i.state)).toEqual(['idle']);
    await second.stop();
  });
});

describe('a leased instance the provider reports gone', () => {
  it("wakes the job's loss watchers with the cause, once; an aborted watch ends quietly; release forgets it", async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const { fleet } = makeFleet(clock, provider, tuning({}, { idleCount: 2 }));
    await fleet.start();
    await advance(clock, MIN);
    let grant: LeaseGrant | undefined;
    void fleet.acquire(job('1'), cred, noop).then((g) => {
      grant = g;
    });
    for (let n = 0; n < 5 && !grant; n++) await settle();
    const id = grant?.instanceId ?? '';
    const watching = fleet.watchLoss('1', new AbortController().signal);
    const other = new AbortController();
    const aborted = fleet.watchLoss('1', other.signal);
    other.abort();
    expect(await aborted).toBeUndefined();
    let heard: unknown;
    void watching.then((loss) => {
      heard = loss;
    });
    await fleet.reconcile();
    await settle();
    // Alive and listed: nothing to hear.
    expect(heard).toBeUndefined();
    expect(fleet.lossOf('1')).toBeUndefined();
    // Reclaimed: the next listing reports it gone.
    provider.instances.get(id)!.gone = true;
    await fleet.reconcile();
    await settle();
    expect(heard).toEqual({ instanceId: id, why: 'the provider reports it terminated' });
    expect(fleet.lossOf('1')).toEqual(heard);
    // A watch started after the loss hears it at once.
    expect(await fleet.watchLoss('1', new AbortController().signal)).toEqual(heard);
    await fleet.release('1', 'cleanup');
    expect(fleet.lossOf('1')).toBeUndefined();
    await fleet.stop();
  });
});

describe('orphan reaping against GitLab', () => {
  let gitlab: Server;
  let url: string;
  const asked: string[] = [];
  beforeAll(async () => {
    gitlab = createServer((req, res) => {
      const token = String(req.headers['job-token'] ?? '');
      asked.push(token);
      const status =
        req.url === '/api/v4/job'
          ? (({ 'tok-running': 200, 'tok-over': 401, 'tok-forbidden': 403 } as Record<string, number>)[
              token
            ] ?? 503)
          : 404;
      res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
    });
    await new Promise<void>((resolve) => gitlab.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(gitlab.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => gitlab.close(() => resolve())));

  it('marks, re-checks, then terminates only leases whose job is over; never one GitLab says runs', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock);
    const t = tuning(
      {
        reap: { bootGraceMs: 15 * MIN, maxJobLifetimeMs: 60 * MIN, recheckAfterMs: MIN },
        jobCheckIntervalMs: 5 * MIN,
      },
      { idleCount: 5 },
    );
    const { fleet, journal } = makeFleet(clock, provider, t, {
      jobChecker: gitlabJobChecker({ gitlabUrl: url, timeoutMs: 5000 }),
    });
    await fleet.start();
    await advance(clock, MIN);
    const lease = async (id: string, jobToken?: string) =>
      (await fleet.acquire(job(id, jobToken ? { jobToken } : {}), cred, noop)).instanceId;
    const over = await lease('over', 'tok-over');
    const forbidden = await lease('forbidden', 'tok-forbidden');
    const running = await lease('running', 'tok-running');
    const silent = await lease('silent'); // no token: only max_job_lifetime can end it
    const flaky = await lease('flaky', 'tok-503');
    const tick = async (ms: number) => {
      await advance(clock, ms);
      await fleet.reconcile();
      await advance(clock, 1500); // batched terminations go out
    };

    await tick(4 * MIN); // leases younger than job_check_interval are not asked about
    expect(asked).toEqual([]);
    await tick(2 * MIN);
    expect(new Set(asked)).toEqual(new Set(['tok-over', 'tok-forbidden', 'tok-running', 'tok-503']));
    const marked = () =>
      fleet
        .snapshot()
        .instances.filter((i) => i.orphanMarkedAt !== undefined)
        .map((i) => i.id)
        .sort();
    expect(marked()).toEqual([over, forbidden].sort());
    expect(provider.instances.get(over)?.tags[TAG.orphanMarkedAt]).toBeDefined();
    expect(provider.terminated).toEqual([]); // first phase only marks

    await tick(30_000); // re-checked, but the mark is younger than orphan_recheck
    expect(provider.terminated).toEqual([]);
    await tick(MIN);
    expect(provider.terminated.sort()).toEqual([over, forbidden].sort());
    expect(journal.get('over')).toBeUndefined();
    expect(asked.filter((t) => t === 'tok-over').length).toBeGreaterThanOrEqual(2);

    // Past max_job_lifetime: the silent and the flaky lease go (after their own re-check); the
    // one GitLab says is running stays, however old.
    await tick(60 * MIN);
    expect(marked()).toEqual([flaky, silent].sort());
    await tick(MIN);
    expect(provider.terminated).toEqual(expect.arrayContaining([silent, flaky]));
    expect(provider.terminated).not.toContain(running);
    expect(fleet.snapshot().instances.find((i) => i.id === running)?.state).toBe('leased');
    expect(journal.get('running')).toBeDefined();
    await fleet.stop();
  });
});
