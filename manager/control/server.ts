/**
 * The daemon's control socket: newline-delimited JSON over a unix socket that only the daemon's
 * user can open (0600 socket in a 0700 directory). One request per connection.
 */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { ControlRequest, ControlResponse } from './protocol.js';

/** Requests larger than this are refused: the protocol carries ids and one token, never scripts. */
const MAX_REQUEST_BYTES = 64 * 1024;

export type RequestHandler = (
  request: ControlRequest,
  reply: { progress(message: string): void; signal: AbortSignal },
) => Promise<unknown>;

export class ControlError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export async function listenControl(
  socketPath: string,
  handler: RequestHandler,
  log: Logger,
): Promise<Server> {
  mkdirSync(dirname(socketPath), { recursive: true, mode: 0o700 });
  if (existsSync(socketPath)) {
    if (await isAlive(socketPath)) {
      throw new Error(
        `another runner-fleet daemon is already serving ${socketPath}; two daemons on one state would fight over the same instances`,
      );
    }
    unlinkSync(socketPath); // A stale socket from a daemon that died.
  }
  const server = createServer((socket) => serve(socket, handler, log));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // umask makes the socket 0600 from its first moment, not just after a chmod.
    const previous = process.umask(0o177);
    server.listen(socketPath, () => {
      process.umask(previous);
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(socketPath, 0o600);
  return server;
}

function serve(socket: Socket, handler: RequestHandler, log: Logger): void {
  let buffer = '';
  let handled = false;
  const controller = new AbortController();
  socket.setEncoding('utf8');
  const send = (response: ControlResponse) => {
    if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
  };
  socket.on('close', () => controller.abort());
  socket.on('error', () => controller.abort());
  socket.on('data', (chunk: string) => {
    if (handled) return;
    buffer += chunk;
    if (buffer.length > MAX_REQUEST_BYTES) {
      handled = true;
      send({ type: 'error', code: 'bad-request', message: 'request too large' });
      socket.end();
      return;
    }
    const newline = buffer.indexOf('\n');
    if (newline < 0) return;
    handled = true;
    let request: ControlRequest;
    try {
      request = parseRequest(buffer.slice(0, newline));
    } catch (error) {
      log.warn({ error: (error as Error).message }, 'malformed control request');
      send({ type: 'error', code: 'bad-request', message: (error as Error).message });
      socket.end();
      return;
    }
    handler(request, {
      progress: (message) => send({ type: 'progress', message }),
      signal: controller.signal,
    })
      .then((data) => send({ type: 'ok', ...(data === undefined ? {} : { data }) }))
      .catch((error: Error & { code?: string }) => {
        send({ type: 'error', message: error.message, ...(error.code ? { code: error.code } : {}) });
      })
      .finally(() => socket.end());
  });
}

const OPS = new Set(['ping', 'config', 'acquire', 'release', 'lease', 'fate', 'status', 'drain']);

function parseRequest(line: string): ControlRequest {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw new Error('request is not JSON');
  }
  const op = (value as { op?: unknown })?.op;
  if (typeof op !== 'string' || !OPS.has(op)) throw new Error(`unknown op ${JSON.stringify(op)}`);
  const v = value as Record<string, unknown>;
  const needString = (key: string, from: Record<string, unknown> = v) => {
    const field = from[key];
    if (typeof field !== 'string' || field === '' || field.length > 256)
      throw new Error(`${op}: "${key}" must be a non-empty string`);
  };
  if (op === 'config' || op === 'release' || op === 'lease' || op === 'fate') needString('jobId');
  if (op === 'acquire') {
    if (typeof v.job !== 'object' || v.job === null) throw new Error('acquire: "job" must be an object');
    needString('id', v.job as Record<string, unknown>);
  }
  return value as ControlRequest;
}

function isAlive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    const done = (alive: boolean) => {
      socket.destroy();
      resolve(alive);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    setTimeout(() => done(false), 1000).unref();
  });
}
