/**
 * Tiny client for the control socket, used by the hooks on every stage: node:net only, so the
 * hooks start fast.
 */
import { existsSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import type { ControlRequest, ControlResponse } from './protocol.js';

export class DaemonUnreachableError extends Error {
  override name = 'DaemonUnreachableError';
  constructor(
    message: string,
    /** The daemon answered at least one line on this connection before it went away. */
    readonly heard = false,
  ) {
    super(message);
  }
}

export class DaemonError extends Error {
  override name = 'DaemonError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

export interface RequestOptions {
  onProgress?: (message: string) => void;
  /** Give up connecting after this long (the daemon may be restarting). */
  connectWaitMs?: number;
  signal?: AbortSignal;
}

/**
 * Every way a connection fails while the daemon restarts (SIGKILL, then systemd starts it again):
 * nobody listens yet (ENOENT, ECONNREFUSED), the accept backlog is full (EAGAIN), or the dying
 * daemon resets a connection still queued in its backlog or half-served (ECONNRESET, EPIPE), before
 * or after our connect completed.
 */
const RESTART_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN', 'ECONNRESET', 'EPIPE', 'ECONNABORTED']);

/**
 * Send one request and resolve with the final `ok` payload; progress lines go to onProgress.
 * A daemon that goes away is asked again until it has been gone for connectWaitMs: every op is
 * idempotent by job id (acquire answers the lease the job already has, release twice is fine), so
 * a request the dead daemon had already applied is safe to repeat.
 */
export async function request<T = unknown>(
  socketPath: string,
  message: ControlRequest,
  options: RequestOptions = {},
): Promise<T> {
  const waitMs = options.connectWaitMs ?? 0;
  // The window opens when the daemon goes away, not when the request started: an acquire may
  // wait many minutes for an instance before a restart cuts it.
  let windowEnd: number | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      return await requestOnce<T>(socketPath, message, options);
    } catch (error) {
      // No state directory at all means no daemon ever ran here: waiting for a restart is pointless.
      const retriable =
        error instanceof DaemonUnreachableError &&
        !options.signal?.aborted &&
        existsSync(dirname(socketPath));
      if (!retriable) throw error;
      if (windowEnd === undefined || error.heard) {
        windowEnd = Date.now() + waitMs;
        attempt = 0;
      }
      const left = windowEnd - Date.now();
      if (left <= 0) throw error;
      await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 1000, left)));
    }
  }
}

function requestOnce<T>(socketPath: string, message: ControlRequest, options: RequestOptions): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = connect(socketPath);
    let buffer = '';
    let settled = false;
    let connected = false;
    let heard = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      fn();
    };
    const onAbort = () => finish(() => reject(new Error('request aborted')));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(message)}\n`);
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      heard ||= chunk.includes('\n');
      for (let newline = buffer.indexOf('\n'); newline >= 0; newline = buffer.indexOf('\n')) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        let response: ControlResponse;
        try {
          response = JSON.parse(line) as ControlResponse;
        } catch {
          finish(() => reject(new DaemonError('daemon sent a malformed reply', 'protocol')));
          return;
        }
        if (response.type === 'progress') options.onProgress?.(response.message);
        else if (response.type === 'ok') finish(() => resolve(response.data as T));
        else finish(() => reject(new DaemonError(response.message, response.code)));
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? '';
      finish(() =>
        reject(
          RESTART_CODES.has(code)
            ? new DaemonUnreachableError(
                connected
                  ? `runner-fleet daemon closed the connection before answering (${code})`
                  : `runner-fleet daemon is not reachable at ${socketPath} (${code}): is it running? (systemctl status runner-fleet)`,
                heard,
              )
            : code === 'EACCES'
              ? new Error(`permission denied on ${socketPath}: run the hooks as the user the daemon serves`)
              : error,
        ),
      );
    });
    socket.on('close', () =>
      finish(() =>
        reject(
          new DaemonUnreachableError(
            connected
              ? 'runner-fleet daemon closed the connection before answering'
              : `runner-fleet daemon is not reachable at ${socketPath}`,
            heard,
          ),
        ),
      ),
    );
  });
}
