/**
 * A GitLab API stand-in on 127.0.0.1 for register and doctor: `POST /api/v4/user/runners` (with
 * PRIVATE-TOKEN and the create_runner scope), `POST /api/v4/runners/verify`, `DELETE /runners/:id`.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeGitlab {
  url: string;
  /** Access tokens and their scopes. */
  accessTokens: Map<string, string[]>;
  /** Runner tokens GitLab accepts, by token → runner id. */
  runnerTokens: Map<string, number>;
  requests: Array<{ method: string; path: string; headers: http.IncomingHttpHeaders; body: string }>;
  close(): Promise<void>;
}

export async function startFakeGitlab(): Promise<FakeGitlab> {
  let nextId = 100;
  const fake: Omit<FakeGitlab, 'url' | 'close'> = {
    accessTokens: new Map(),
    runnerTokens: new Map(),
    requests: [],
  };
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      const path = req.url ?? '/';
      fake.requests.push({ method: req.method ?? '', path, headers: req.headers, body });
      const send = (status: number, json?: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(json === undefined ? '' : JSON.stringify(json));
      };
      const input = (() => {
        try {
          return JSON.parse(body || '{}') as Record<string, unknown>;
        } catch {
          return {};
        }
      })();
      if (req.method === 'POST' && path === '/api/v4/runners/verify') {
        const id = fake.runnerTokens.get(String(input.token));
        return id === undefined
          ? send(403, { message: '403 Forbidden' })
          : send(200, { id, token_expires_at: null });
      }
      const pat = String(req.headers['private-token'] ?? '');
      const scopes = fake.accessTokens.get(pat);
      if (req.method === 'POST' && path === '/api/v4/user/runners') {
        if (!scopes) return send(401, { message: '401 Unauthorized' });
        if (!scopes.includes('create_runner')) return send(403, { message: '403 Forbidden' });
        if (input.runner_type === 'group_type' && input.group_id === undefined)
          return send(400, { message: 'group_id is missing' });
        const id = nextId++;
        const token = `glrt-fake${id}xxxxxxxxxxxxxxxx`;
        fake.runnerTokens.set(token, id);
        return send(201, { id, token, token_expires_at: null });
      }
      const del = /^\/api\/v4\/runners\/(\d+)$/.exec(path);
      if (req.method === 'DELETE' && del) {
        if (!scopes) return send(401, { message: '401 Unauthorized' });
        for (const [t, id] of fake.runnerTokens) if (id === Number(del[1])) fake.runnerTokens.delete(t);
        return send(204);
      }
      send(404, { message: '404 Not Found' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    ...fake,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  } as FakeGitlab;
}
