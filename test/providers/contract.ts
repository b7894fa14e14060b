/**
 * The one contract every provider keeps, whatever cloud is behind it. contract.test.ts runs it
 * over the local provider and the AWS provider (both modes) on the wire-level fake.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { LaunchRequest, Provider, ProviderInstance, Tags } from '../../manager/providers/provider.js';
import { TAG } from '../../manager/providers/tags.js';

export interface ContractSubject {
  /** The provider under test (manager "manager-a" of fleet "contract"). */
  readonly provider: Provider;
  /** Same fleet, another manager: its instances must stay invisible and untouched. */
  readonly other: Provider;
  cleanup(): Promise<void>;
}

export const FLEET = 'contract';

export function tagsFor(managerId: string, extra: Tags = {}): Tags {
  return {
    [TAG.fleet]: FLEET,
    [TAG.manager]: managerId,
    [TAG.state]: 'booting',
    [TAG.createdAt]: new Date().toISOString(),
    ...extra,
  };
}

async function until<T>(probe: () => Promise<T>, ok: (value: T) => boolean, ms = 120_000): Promise<T> {
  const deadline = Date.now() + ms;
  let value = await probe();
  while (!ok(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    value = await probe();
  }
  return value;
}

const alive = (list: ProviderInstance[], id: string) => list.some((i) => i.id === id && i.status !== 'gone');

/**
 * Launch one instance and return its id. A provider either names it at once (`launched`) or, like
 * an Auto Scaling group, only asks for it (`requested`): then it shows up in a later listing.
 */
async function launchOne(p: Provider, request: LaunchRequest): Promise<string> {
  const before = new Set((await p.list()).map((i) => i.id));
  const result = await p.launch(request);
  expect(result.failures).toEqual([]);
  const direct = result.launched[0]?.id;
  if (direct) return direct;
  expect(result.requested).toBe(1);
  expect(p.awaitingLaunch?.()).toBeGreaterThanOrEqual(1);
  const listed = await until(
    () => p.list(),
    (l) => l.some((i) => !before.has(i.id) && i.status !== 'gone'),
  );
  const id = listed.find((i) => !before.has(i.id) && i.status !== 'gone')?.id;
  if (!id) throw new Error('the requested instance never showed up in a listing');
  return id;
}

export function providerContract(make: () => Promise<ContractSubject>): void {
  let s: ContractSubject;
  beforeAll(async () => {
    s = await make();
    await s.provider.start?.();
    await s.other.start?.();
  });
  afterAll(async () => {
    await s?.cleanup();
  });

  it('launches with tags, and list shows them', async () => {
    const token = randomUUID();
    const id = await launchOne(s.provider, {
      count: 1,
      token,
      tags: tagsFor('manager-a', { 'contract:note': 'first' }),
    });
    const listed = await until(
      () => s.provider.list(),
      (l) => alive(l, id),
    );
    const instance = listed.find((i) => i.id === id)!;
    expect(instance.tags[TAG.fleet]).toBe(FLEET);
    expect(instance.tags[TAG.manager]).toBe('manager-a');
    expect(instance.tags['contract:note']).toBe('first');
    expect(instance.tags[TAG.launchToken]).toBe(token);
  });

  it('launching twice with the same token creates no second instance', async () => {
    const token = randomUUID();
    const before = new Set((await s.provider.list()).map((i) => i.id));
    const first = await s.provider.launch({ count: 1, token, tags: tagsFor('manager-a') });
    const second = await s.provider.launch({ count: 1, token, tags: tagsFor('manager-a') });
    expect(second.launched.map((i) => i.id)).toEqual(first.launched.map((i) => i.id));
    expect(second.requested ?? 0).toBe(0);
    const fresh = (l: ProviderInstance[]) => l.filter((i) => !before.has(i.id) && i.status !== 'gone');
    const listed = await until(
      () => s.provider.list(),
      (l) => fresh(l).length > 0 && (s.provider.awaitingLaunch?.() ?? 0) === 0,
    );
    expect(fresh(listed)).toHaveLength(1);
  });

  it('writes tags and removes tags set to ""', async () => {
    const id = await launchOne(s.provider, { count: 1, token: randomUUID(), tags: tagsFor('manager-a') });
    await until(
      () => s.provider.list(),
      (l) => alive(l, id),
    );
    await s.provider.setTags(id, { [TAG.state]: 'idle', [TAG.jobId]: '42' });
    let tags = (await s.provider.list()).find((i) => i.id === id)!.tags;
    expect(tags[TAG.state]).toBe('idle');
    expect(tags[TAG.jobId]).toBe('42');
    await s.provider.setTags(id, { [TAG.jobId]: '' });
    tags = (await s.provider.list()).find((i) => i.id === id)!.tags;
    expect(tags[TAG.jobId]).toBeUndefined();
    expect(tags[TAG.state]).toBe('idle');
  });

  it('terminates exactly the instances it names; unknown ids are no error', async () => {
    const a = {
      id: await launchOne(s.provider, { count: 1, token: randomUUID(), tags: tagsFor('manager-a') }),
    };
    const b = {
      id: await launchOne(s.provider, { count: 1, token: randomUUID(), tags: tagsFor('manager-a') }),
    };
    await until(
      () => s.provider.list(),
      (l) => alive(l, a.id) && alive(l, b.id),
    );
    await s.provider.terminate([a.id]);
    await s.provider.terminate([a.id]);
    const listed = await until(
      () => s.provider.list(),
      (l) => !alive(l, a.id),
    );
    expect(alive(listed, a.id)).toBe(false);
    expect(alive(listed, b.id)).toBe(true);
  });

  it("never lists or touches another manager's instances", async () => {
    const theirs = {
      id: await launchOne(s.other, { count: 1, token: randomUUID(), tags: tagsFor('manager-b') }),
    };
    await until(
      () => s.other.list(),
      (l) => alive(l, theirs.id),
    );
    const ours = await s.provider.list();
    expect(ours.some((i) => i.id === theirs.id)).toBe(false);
    await s.provider.terminate(ours.map((i) => i.id));
    const after = (await s.other.list()).find((i) => i.id === theirs.id);
    expect(after?.status, JSON.stringify(after?.detail)).not.toBe('gone');
  });

  it('reports an instance ready eventually', async () => {
    const id = await launchOne(s.provider, { count: 1, token: randomUUID(), tags: tagsFor('manager-a') });
    const check = await until(
      () => s.provider.checkReady(id),
      (c) => c.ready,
      30_000,
    );
    expect(check, JSON.stringify(check)).toEqual({ ready: true });
    const connect = await s.provider.connectInfo(id);
    expect(['local', 'ssh']).toContain(connect.kind);
  });
}
