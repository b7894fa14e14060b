/**
 * A recording HTTP proxy in front of the AWS fake, one per manager daemon. The fake's call log
 * cannot tell which daemon made a call (both sign with the same fake keys), so each daemon gets
 * its own endpoint here: what passes through is that manager's calls, by action and parameters.
 * It also lets the soak SIGKILL a daemon at an exact point: after the fake answered a launch and
 * before the daemon reads the answer (the launch happened, the bookkeeping did not).
 */
import http from 'node:http';

export interface ProxiedCall {
  readonly at: number;
  readonly action: string;
  readonly params: Record<string, string>;
  readonly status: number;
}

export interface RecordingProxy {
  readonly url: string;
  calls(action?: string): ProxiedCall[];
  /**
   * Run `fn` once, after the fake answered the next call of `action` and before the answer is
   * passed on. The answer is dropped if `fn` returns 'drop' (the daemon is gone anyway).
   */
  onceAnswered(action: string, fn: () => Promise<'drop' | 'pass'>): void;
  close(): Promise<void>;
}

export async function startRecordingProxy(target: string): Promise<RecordingProxy> {
  const upstream = new URL(target);
  const calls: ProxiedCall[] = [];
  const hooks: Array<{ action: string; fn: () => Promise<'drop' | 'pass'> }> = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const params = actionParams(req, body.toString('utf8'));
      const forward = http.request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
        },
        (answer) => {
          const parts: Buffer[] = [];
          answer.on('data', (c: Buffer) => parts.push(c));
          answer.on('end', () => {
            calls.push({
              at: Date.now(),
              action: params.Action ?? '',
              params,
              status: answer.statusCode ?? 0,
            });
            const at = hooks.findIndex((h) => h.action === params.Action);
            const hook = at >= 0 ? hooks.splice(at, 1)[0] : undefined;
            const pass = () => {
              if (res.destroyed) return;
              res.writeHead(answer.statusCode ?? 502, answer.headers);
              res.end(Buffer.concat(parts));
            };
            if (!hook) return pass();
            void hook.fn().then(
              (verdict) => (verdict === 'drop' ? res.destroy() : pass()),
              () => pass(),
            );
          });
        },
      );
      forward.on('error', () => res.destroy());
      forward.end(body);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    calls: (action) => (action ? calls.filter((c) => c.action === action) : [...calls]),
    onceAnswered: (action, fn) => {
      hooks.push({ action, fn });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** EC2 and Auto Scaling speak the query protocol: the action and parameters are the form body. */
function actionParams(req: http.IncomingMessage, body: string): Record<string, string> {
  const out: Record<string, string> = {};
  const type = String(req.headers['content-type'] ?? '');
  if (type.includes('x-www-form-urlencoded')) {
    for (const [k, v] of new URLSearchParams(body)) out[k] = k.endsWith('UserData') ? '<redacted>' : v;
  } else {
    const target = String(req.headers['x-amz-target'] ?? '');
    if (target) out.Action = target.split('.').pop() ?? target;
  }
  return out;
}
