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

/** Send one request and resolve with the final `ok` payload; progress lines go to onProgress. */
export async function request<T = unknown>(
  socketPath: string,
  message: ControlRequest,
  options: RequestOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.connectWaitMs ?? 0);
  for (let attempt = 0; ; attempt++) {
    try {
      return await requestOnce<T>(socketPath, message, options);
    } catch (error) {
      // No state directory at all means no daemon ever ran here: waiting for a restart is pointless.
      const retriable =
        error instanceof DaemonUnreachableError &&
        !options.signal?.aborted &&
        existsSync(dirname(socketPath));
      if (!retriable || Date.now() >= deadline) throw error;
      await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** attempt, 2000)));
    }
  }
}

function requestOnce<T>(socketPath: string, message: ControlRequest, options: RequestOptions): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const socket = connect(socketPath);
    let buffer = '';
    let settled = false;
    let connected = false;
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
      // A daemon that dies mid-request resets the connection rather than closing it when our
      // request is still unread: the same as a close before the answer, so the same retry.
      const unreachable =
        (!connected && ['ENOENT', 'ECONNREFUSED', 'EAGAIN'].includes(error.code ?? '')) ||
        (connected && ['ECONNRESET', 'EPIPE'].includes(error.code ?? ''));
      finish(() =>
        reject(
          unreachable
            ? new DaemonUnreachableError(
                connected
                  ? `runner-fleet daemon closed the connection before answering (${error.code})`
                  : `runner-fleet daemon is not reachable at ${socketPath} (${error.code}): is it running? (systemctl status runner-fleet)`,
              )
            : error.code === 'EACCES'
              ? new DaemonUnreachableError(
                  `permission denied on ${socketPath}: run the hooks as the user the daemon serves`,
                )
              : error,
        ),
      );
    });
    socket.on('close', () =>
      finish(() =>
        reject(
          connected
            ? new DaemonUnreachableError('runner-fleet daemon closed the connection before answering')
            : new DaemonUnreachableError(`runner-fleet daemon is not reachable at ${socketPath}`),
        ),
      ),
    );
  });
}
