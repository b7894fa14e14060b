/**
 * The daemon's control socket: newline-delimited JSON over a unix socket that only the daemon's
 * user can open (0600 socket in a 0700 directory). One request per connection.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
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
    // Never take over what is not ours: only a dead socket (a daemon that died) is replaced.
    if (!lstatSync(socketPath).isSocket()) {
      throw new Error(
        `${socketPath} exists and is not a socket: refusing to replace it; move it away, or set state_dir (or socket) in the config to another place`,
      );
    }
    const other = await identify(socketPath);
    if (other === 'runner-fleet' || typeof other === 'object') {
      const who =
        typeof other === 'object'
          ? ` (pid ${other.pid}, version ${other.version}${other.config ? `, config ${other.config}` : ''})`
          : '';
      throw new Error(
        `another runner-fleet daemon is already serving ${socketPath}${who}; two daemons on one state would fight over the same instances (stop it, or give this one its own state_dir)`,
      );
    }
    if (other === 'foreign') {
      throw new Error(
        `${socketPath} is in use by a program that is not a runner-fleet daemon: refusing to take it over; set state_dir (or socket) in the config to another place`,
      );
    }
    if (other === 'silent') {
      throw new Error(
        `something listens on ${socketPath} but does not answer a ping (a runner-fleet daemon still starting, or another program): refusing to take it over`,
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
  if (op === 'release' && v.instanceId !== undefined) needString('instanceId');
  if (op === 'config' && v.jobSecret !== undefined) needString('jobSecret');
  if (op === 'fate' && v.wait !== undefined && typeof v.wait !== 'boolean')
    throw new Error('fate: "wait" must be a boolean');
  if (op === 'acquire') {
    if (typeof v.job !== 'object' || v.job === null) throw new Error('acquire: "job" must be an object');
    needString('id', v.job as Record<string, unknown>);
  }
  return value as ControlRequest;
}

/**
 * Who answers at an existing socket: nobody (a stale socket), a runner-fleet daemon (its ping:
 * pid, version, config), or something else.
 */
function identify(
  socketPath: string,
): Promise<
  'dead' | 'foreign' | 'silent' | 'runner-fleet' | { pid: number; version: string; config?: string }
> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    let buffer = '';
    let connected = false;
    const done = (answer: Awaited<ReturnType<typeof identify>>) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    // A daemon answers a ping once its fleet has started (an AWS listing may take a while).
    const timer = setTimeout(() => done(connected ? 'silent' : 'dead'), 15_000);
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify({ op: 'ping' })}\n`);
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const newline = buffer.indexOf('\n');
      if (newline < 0) return;
      try {
        const reply = JSON.parse(buffer.slice(0, newline)) as ControlResponse;
        const data =
          reply.type === 'ok'
            ? (reply.data as { pid?: unknown; version?: unknown; config?: unknown })
            : undefined;
        if (data && typeof data.pid === 'number' && typeof data.version === 'string') {
          return done({
            pid: data.pid,
            version: data.version,
            ...(typeof data.config === 'string' ? { config: data.config } : {}),
          });
        }
        done(reply.type === 'error' ? 'runner-fleet' : 'foreign');
      } catch {
        done('foreign');
      }
    });
    socket.once('error', () => done(connected ? 'foreign' : 'dead'));
    socket.once('close', () => done(connected ? 'foreign' : 'dead'));
  });
}
