/**
 * Found by the soak run: a daemon SIGKILLed while a prepare hook waited for its lease sometimes
 * reset the connection (ECONNRESET) instead of closing it, and the hook failed the job at once
 * instead of retrying as it does for a closed connection. Acquire and release are idempotent by
 * job id, so asking the restarted daemon again is safe.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { request } from '../../manager/control/client.js';

let server: Server | undefined;
let dir: string | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('control client when the daemon dies mid-request', () => {
  it('retries after a connection reset, within connectWaitMs', async () => {
    dir = mkdtempSync(join(tmpdir(), 'rf-client-'));
    const socketPath = join(dir, 'control.sock');
    let connections = 0;
    // pauseOnConnect: the first request stays unread, so closing that connection resets it (as a
    // SIGKILLed daemon's kernel does when the request is still in its buffer).
    server = createServer({ pauseOnConnect: true }, (socket) => {
      connections++;
      if (connections === 1) {
        setTimeout(() => socket.destroy(), 100);
        return;
      }
      socket.resume();
      socket.once('data', () => socket.end(`${JSON.stringify({ type: 'ok', data: { pid: 1 } })}\n`));
    });
    await new Promise<void>((resolve) => server?.listen(socketPath, () => resolve()));
    const answer = await request<{ pid: number }>(socketPath, { op: 'ping' }, { connectWaitMs: 5_000 });
    expect(answer.pid).toBe(1);
    expect(connections).toBe(2);
  });
});
