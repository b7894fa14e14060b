/**
 * Provenance: the launch-token MAC, the launch key on disk, the rule in adoption.ts, and the
 * fleet's treatment of instances that carry our tags but were not launched by us (never adopted,
 * leased, reaped or terminated; logged once; counted), in virtual time and on the local provider.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { provenanceOf, TOKEN_LAUNCH_WINDOW_MS } from '../../manager/fleet/adoption.js';
import { Fleet } from '../../manager/fleet/fleet.js';
import { MemoryLeaseStore } from '../../manager/fleet/lease-journal.js';
import { LAUNCH_KEY_FILE, LaunchSigner, loadLaunchKey } from '../../manager/fleet/provenance.js';
import { LocalProvider } from '../../manager/providers/local/local-provider.js';
import type { ProviderInstance } from '../../manager/providers/provider.js';
import { TAG } from '../../manager/providers/tags.js';
import type { VirtualClock } from '../../manager/simulator/virtual-clock.js';
import {
  cred,
  job,
  MemoryProvider,
  MIN,
  makeFleet,
  noop,
  startClock,
  TEST_LAUNCH_KEY,
  tuning,
} from './support.js';

async function advance(clock: VirtualClock, ms: number): Promise<void> {
  await clock.runUntil(clock.now() + ms);
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'rf-prov-'));
  dirs.push(d);
  return d;
}

describe('launch tokens', () => {
  const signer = new LaunchSigner(Buffer.alloc(32, 1), 'blue\nm1');
  const now = Date.parse('2026-01-01T00:00:00Z');

  it('verifies exactly the tokens a provider derives from a minted one, and dates them', () => {
    const one = signer.mint(1, now);
    expect(one.length).toBeLessThanOrEqual(45);
    expect(one).toMatch(/^[A-Za-z0-9-]+$/);
    expect(signer.verify(one)).toEqual({ ok: true, mintedAt: now });
    const three = signer.mint(3, now);
    for (const i of [0, 1, 2]) expect(signer.verify(`${three}-${i}`).ok).toBe(true);
    // Suffixes nobody launched with: a copied token cannot make a new, unused one.
    expect(signer.verify(`${three}-3`).ok).toBe(false);
    expect(signer.verify(three).ok).toBe(false);
    expect(signer.verify(`${one}-0`).ok).toBe(false);
    expect(signer.verify(`${one}-od`).ok).toBe(false);
    // Capacity failover attempts: their own idempotency token, still provably ours.
    expect(signer.verify(`${one}-f1`).ok).toBe(true);
    expect(signer.verify(`${three}-2-f12`).ok).toBe(true);
    expect(signer.verify(`${three}-f1`).ok).toBe(false);
    expect(signer.verify(`${one}-f0`).ok).toBe(false);
  });

  it('refuses tokens of another key or another manager, tampered ones, and EC2 Fleet tokens', () => {
    const token = signer.mint(1, now);
    expect(new LaunchSigner(Buffer.alloc(32, 2), 'blue\nm1').verify(token)).toMatchObject({ ok: false });
    expect(new LaunchSigner(Buffer.alloc(32, 1), 'blue\nm2').verify(token)).toMatchObject({ ok: false });
    const [time, nonce, count, mac] = token.split('-');
    const later = `${(Number.parseInt(time as string, 36) + 1).toString(36)}-${nonce}-${count}-${mac}`;
    expect(signer.verify(later)).toMatchObject({ ok: false, why: expect.stringMatching(/launch key/) });
    expect(signer.verify('fleet-1fb4718e-e78e-4e3e-0c18-ad80e56dbf97-0')).toMatchObject({ ok: false });
  });
});

describe('the launch key', () => {
  it('is created once, 0600, and read back the same after a restart', () => {
    const dir = scratch();
    const first = loadLaunchKey(dir);
    const path = join(dir, LAUNCH_KEY_FILE);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadLaunchKey(dir).equals(first)).toBe(true);
    expect(readFileSync(path, 'utf8')).toMatch(/^[0-9a-f]{64}$/);
  });

  it('is refused when others can read it, naming the file and the fix', () => {
    const dir = scratch();
    loadLaunchKey(dir);
    chmodSync(join(dir, LAUNCH_KEY_FILE), 0o644);
    expect(() => loadLaunchKey(dir)).toThrow(/launch-key has mode 644.*chmod 600/);
  });
});

describe('provenanceOf', () => {
  const signer = new LaunchSigner(Buffer.alloc(32, 1), 'blue\nm1');
  const at = Date.parse('2026-01-01T00:00:00Z');
  const ourTags = { [TAG.fleet]: 'blue', [TAG.manager]: 'm1', [TAG.state]: 'idle' };
  const listed = (extra: Partial<ProviderInstance> = {}): ProviderInstance => ({
    id: 'i-0123456789abcdef0',
    status: 'running',
    tags: ourTags,
    launchedAt: new Date(at),
    ...extra,
  });

  it('accepts the launch journal, the lease journal, or a valid launch token recorded at launch', () => {
    const journal = new MemoryLeaseStore();
    expect(provenanceOf(listed(), journal, signer)).toMatchObject({ ours: false });
    journal.addLaunched(['i-0123456789abcdef0'], at);
    expect(provenanceOf(listed(), journal, signer)).toEqual({ ours: true, proof: 'launch journal' });
    const empty = new MemoryLeaseStore();
    empty.addRetiring(['i-0123456789abcdef0']);
    expect(provenanceOf(listed(), empty, signer)).toEqual({ ours: true, proof: 'lease journal' });
    const token = signer.mint(1, at + 5_000);
    expect(provenanceOf(listed({ clientToken: token }), new MemoryLeaseStore(), signer)).toEqual({
      ours: true,
      proof: 'launch token',
    });
  });

  it('refuses tags alone, foreign tokens, and a valid token on an instance launched much later', () => {
    const journal = new MemoryLeaseStore();
    // Even our own launch token copied into a tag proves nothing: only the recorded one counts.
    const token = signer.mint(1, at);
    expect(provenanceOf(listed({ tags: { ...ourTags, [TAG.launchToken]: token } }), journal, signer)).toEqual(
      {
        ours: false,
        why: "this manager's launch journal does not list it, and the provider reports no launch token for it",
      },
    );
    expect(provenanceOf(listed({ clientToken: 'my-own-token' }), journal, signer)).toMatchObject({
      ours: false,
      why: expect.stringMatching(/not one runner-fleet makes/),
    });
    const late = listed({ clientToken: token, launchedAt: new Date(at + TOKEN_LAUNCH_WINDOW_MS + 1000) });
    expect(provenanceOf(late, journal, signer)).toMatchObject({
      ours: false,
      why: expect.stringMatching(/minted at 2026-01-01T00:00:00.000Z but it was launched at/),
    });
  });
});

describe('provenanceOf with a token used over a span (asg key window)', () => {
  const signer = new LaunchSigner(Buffer.alloc(32, 1), 'blue\nm1');
  const at = Date.parse('2026-01-01T00:00:00Z');
  const hour = 3_600_000;
  const token = signer.mint(1, at);
  const listed = (launchedAt: number, until?: number): ProviderInstance => ({
    id: 'i-0123456789abcdef0',
    status: 'running',
    tags: { [TAG.fleet]: 'blue', [TAG.manager]: 'm1' },
    launchedAt: new Date(launchedAt),
    clientToken: token,
    ...(until !== undefined ? { tokenInUseUntil: new Date(until) } : {}),
  });
  const journal = new MemoryLeaseStore();

  it('accepts launches until an hour after the span ended, measured from its end', () => {
    // Launched five hours after the window opened, while it was still $Latest (ended at 6 h).
    expect(provenanceOf(listed(at + 5 * hour, at + 6 * hour), journal, signer)).toEqual({
      ours: true,
      proof: 'launch token',
    });
    // Without the span, the same launch is too late for its token.
    expect(provenanceOf(listed(at + 5 * hour), journal, signer)).toMatchObject({ ours: false });
  });

  it('refuses launches more than an hour after the span ended, or long before the token', () => {
    expect(provenanceOf(listed(at + 7 * hour + 1000, at + 6 * hour), journal, signer)).toMatchObject({
      ours: false,
    });
    expect(provenanceOf(listed(at - 2 * hour, at + 6 * hour), journal, signer)).toMatchObject({
      ours: false,
    });
  });
});

describe('an instance a third party tagged as ours', () => {
  function plant(provider: MemoryProvider, clock: VirtualClock, id: string, tags: Record<string, string>) {
    provider.instances.set(id, {
      id,
      tags: { [TAG.fleet]: 'test', [TAG.manager]: 'm1', ...tags },
      launchedAt: clock.now() - 60 * MIN,
      readyAt: clock.now() - 59 * MIN,
      gone: false,
      clientToken: 'attacker-chose-this',
    });
  }

  it('is never adopted, leased, reaped or terminated; it is logged once, counted and reported', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock, undefined, 10_000);
    // Tagged to look idle, leased long ago (an orphan to reap), and half-terminated.
    plant(provider, clock, 'i-evil-idle', { [TAG.state]: 'idle' });
    plant(provider, clock, 'i-evil-leased', {
      [TAG.state]: 'leased',
      [TAG.jobId]: '666',
      [TAG.leasedAt]: new Date(clock.now() - 24 * 60 * MIN).toISOString(),
    });
    plant(provider, clock, 'i-evil-draining', { [TAG.state]: 'draining' });
    const lines: Array<Record<string, unknown>> = [];
    const log = pino(
      { level: 'info' },
      { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    );
    const journal = new MemoryLeaseStore();
    const fleet = new Fleet({
      provider,
      journal,
      log,
      fleetName: 'test',
      managerId: 'm1',
      launchKey: TEST_LAUNCH_KEY,
      clock,
      tuning: tuning(
        { reap: { bootGraceMs: 5 * MIN, maxJobLifetimeMs: 60 * MIN, recheckAfterMs: MIN } },
        { idleCount: 1, idleTimeMs: MIN },
      ),
    });
    await fleet.start();
    // A job arrives: it must get the instance the fleet launches, not the "idle" planted one.
    const grant = await new Promise<{ instanceId: string }>((resolve, reject) => {
      fleet.acquire(job('1'), cred, noop).then(resolve, reject);
      void advance(clock, MIN);
    });
    expect(grant.instanceId).not.toMatch(/evil/);
    await fleet.release('1', 'done');
    await advance(clock, 30 * MIN);

    const evil = ['i-evil-draining', 'i-evil-idle', 'i-evil-leased'];
    expect(provider.terminated.filter((id) => id.includes('evil'))).toEqual([]);
    // Leases live in the journal: this run writes no tags at all, on theirs or ours.
    expect(provider.calls.filter((c) => c === 'setTags')).toEqual([]);
    expect(provider.alive()).toEqual(expect.arrayContaining(evil));
    const snapshot = fleet.snapshot();
    expect(snapshot.instances.map((i) => i.id).filter((id) => id.includes('evil'))).toEqual([]);
    expect(snapshot.foreign.map((f) => f.id).sort()).toEqual(evil);
    expect(snapshot.foreign[0]?.why).toMatch(/launch journal does not list it.*not one runner-fleet makes/);
    expect(fleet.gauges().foreign).toBe(3);
    // Loudly, but once per instance however many ticks saw it.
    const refusals = lines.filter((l) => String(l.msg).includes('was not launched by it'));
    expect(refusals.map((l) => l.instanceId).sort()).toEqual(evil);
    expect(refusals.every((l) => l.level === 50)).toBe(true);

    // Gone from the listing: no longer counted.
    provider.instances.delete('i-evil-idle');
    await fleet.reconcile();
    expect(fleet.gauges().foreign).toBe(2);
    await fleet.stop();
  });

  it('our own instances stay ours across a restart with a lost journal (the launch token) but not with another key', async () => {
    const clock = startClock();
    const provider = new MemoryProvider(clock, undefined, 10_000);
    const first = makeFleet(clock, provider, tuning({}, { idleCount: 2, idleTimeMs: 60 * MIN }));
    await first.fleet.start();
    await advance(clock, MIN);
    const ours = first.fleet.snapshot().instances.map((i) => i.id);
    expect(ours).toHaveLength(2);
    await first.fleet.stop();

    // New journal (as after a crash before it was written): the recorded launch token proves them.
    const second = makeFleet(clock, provider, tuning({}, { idleCount: 2, idleTimeMs: 60 * MIN }));
    await second.fleet.start();
    expect(
      second.fleet
        .snapshot()
        .instances.map((i) => i.id)
        .sort(),
    ).toEqual([...ours].sort());
    expect(second.fleet.gauges().foreign).toBe(0);
    await second.fleet.stop();

    // A manager with another key (same tags) has no claim on them.
    const other = makeFleet(clock, provider, tuning({}, { idleCount: 0 }), {
      launchKey: Buffer.alloc(32, 9),
    });
    await other.fleet.start();
    await advance(clock, 10 * MIN);
    expect(
      other.fleet
        .snapshot()
        .foreign.map((f) => f.id)
        .sort(),
    ).toEqual([...ours].sort());
    expect(provider.terminated).toEqual([]);
    await other.fleet.stop();
  });
});

describe('local provider provenance', () => {
  it('refuses a local instance whose tags were rewritten to ours by someone else', async () => {
    const root = scratch();
    const ours = new LocalProvider({ root, fleetName: 'blue', managerId: 'm1', bootTimeMs: 0 });
    const theirs = new LocalProvider({ root, fleetName: 'blue', managerId: 'm2', bootTimeMs: 0 });
    await ours.start();
    await theirs.start();
    const signerOf = (manager: string) => new LaunchSigner(Buffer.alloc(32, 3), `blue\n${manager}`);
    const theirToken = signerOf('m2').mint(1, Date.now());
    const [planted] = (
      await theirs.launch({ count: 1, token: theirToken, tags: { [TAG.fleet]: 'blue', [TAG.manager]: 'm2' } })
    ).launched;
    await theirs.setTags(planted!.id, { [TAG.manager]: 'm1', [TAG.state]: 'idle' });
    const ourToken = signerOf('m1').mint(2, Date.now());
    await ours.launch({ count: 2, token: ourToken, tags: { [TAG.fleet]: 'blue', [TAG.manager]: 'm1' } });

    const listed = await ours.list();
    expect(listed).toHaveLength(3);
    const verdicts = new Map(
      listed.map((l) => [l.id, provenanceOf(l, new MemoryLeaseStore(), signerOf('m1')).ours]),
    );
    expect(verdicts.get(planted!.id)).toBe(false);
    expect([...verdicts.values()].filter(Boolean)).toHaveLength(2);
  });
});
