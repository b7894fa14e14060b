/**
 * The run hook's mid-stage `fate` wait (watchLoss) must let go the moment its stage ends: the hook
 * has no process.exit, so anything still pending keeps it alive, and gitlab-runner waits for
 * the hook's exit before the next stage. A retry pause left behind after the abort used to add
 * WATCH_RETRY_MS (5 s) to every SSH stage of every job.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { watchLoss } from '../../executor/hooks/run.js';

let server: Server | undefined;
let dir: string | undefined;
afterEach(async () => {
  vi.useRealTimers();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  if (dir) rmSync(dir, { recursive: true, force: true });
  [server, dir] = [undefined, undefined];
});

it('a fate wait held by the daemon leaves no timer behind once the stage ends', async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-watch-loss-'));
  const socketPath = join(dir, 'control.sock');
  // A daemon that holds the wait open, as it does while the instance runs.
  let held: ((socket: Socket) => void) | undefined;
  const asked = new Promise<Socket>((resolve) => {
    held = resolve;
  });
  server = createServer((socket) => {
    socket.once('data', () => held?.(socket));
  });
  await new Promise<void>((r) => server!.listen(socketPath, () => r()));

  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  const stageOver = new AbortController();
  let lost = false;
  void watchLoss('901', undefined, socketPath, stageOver.signal).then(() => {
    lost = true;
  });
  const socket = await asked;
  const closed = new Promise((r) => socket.once('close', r));
  stageOver.abort();
  await closed;
  // Let the aborted request's rejection run through the loop.
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));

  expect(vi.getTimerCount()).toBe(0);
  expect(lost).toBe(false);
});

it('while the stage runs, a daemon that is away is asked again after a pause', async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-watch-loss-'));
  const socketPath = join(dir, 'control.sock');
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  const stageOver = new AbortController();
  void watchLoss('902', undefined, socketPath, stageOver.signal);
  // No socket yet (a daemon restarting): the client retries within its restart window, then
  // watchLoss pauses before asking again. Either way a timer is pending while the stage runs.
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  expect(vi.getTimerCount()).toBeGreaterThan(0);
  stageOver.abort();
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
  await vi.runAllTimersAsync();
  expect(vi.getTimerCount()).toBe(0);
});
