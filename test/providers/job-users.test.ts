/** Host-wide uid claims for local jobs: one instance per uid, stale claims reclaimed, named users skipped. */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import {
  claimJobUid,
  holdsJobUid,
  passwdUids,
  reclaimJobUid,
  releaseJobUid,
} from '../../manager/providers/local/job-users.js';

let dir: string;
let claims: string;
const range = { base: 5000, count: 3 };
const none = new Set<number>();

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rf-uids-'));
  claims = join(dir, 'claims');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const instance = (name: string) => {
  const path = join(dir, name);
  mkdirSync(path);
  return path;
};

it('hands each uid to one instance at a time, skipping named users, and frees it on release', () => {
  const a = instance('a');
  const b = instance('b');
  const c = instance('c');
  expect(claimJobUid(range, a, none, claims)).toBe(5000);
  expect(claimJobUid(range, b, new Set([5001]), claims)).toBe(5002);
  expect(() => claimJobUid(range, c, new Set([5001]), claims)).toThrow(/no free job uid in 5000..5002/);
  expect(holdsJobUid(5000, a, claims)).toBe(true);
  expect(holdsJobUid(5000, b, claims)).toBe(false);
  releaseJobUid(5000, b, claims); // not b's: stays a's
  expect(holdsJobUid(5000, a, claims)).toBe(true);
  releaseJobUid(5000, a, claims);
  expect(claimJobUid(range, c, none, claims)).toBe(5000);
  expect(reclaimJobUid(5000, a, claims)).toBe(false);
  expect(reclaimJobUid(5000, c, claims)).toBe(true);
});

it('takes over a claim whose instance directory is gone (a crash between terminate and release)', () => {
  const gone = instance('gone');
  expect(claimJobUid(range, gone, none, claims)).toBe(5000);
  rmSync(gone, { recursive: true });
  const next = instance('next');
  expect(claimJobUid(range, next, none, claims)).toBe(5000);
  expect(holdsJobUid(5000, next, claims)).toBe(true);
});

it('reads the uids /etc/passwd names', () => {
  expect(passwdUids().has(0)).toBe(true);
});
