/**
 * The job check asks only the GitLab in our config. A job sets CI_SERVER_URL to a server of its
 * own: that server must never see a request (and so never the job token), while the configured
 * GitLab is asked with the job's token during the job.
 */
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';

interface Recorder {
  server: Server;
  url: string;
  requests: Array<{ url: string | undefined; token: string | undefined }>;
}

async function recorder(onRequest: (req: IncomingMessage) => void = () => {}): Promise<Recorder> {
  const requests: Recorder['requests'] = [];
  const server = createServer((req, res) => {
    requests.push({ url: req.url, token: req.headers['job-token'] as string | undefined });
    onRequest(req);
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

let configured: Recorder;
let attacker: Recorder;
let daemon: TestDaemon;
let dir: string;
let flag: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rf-job-check-'));
  chmodSync(dir, 0o755); // the job may run as an unprivileged user: it must see the flag
  flag = join(dir, 'asked');
  configured = await recorder(() => writeFileSync(flag, ''));
  attacker = await recorder();
  daemon = await startTestDaemon(`
[gitlab]
url = "${configured.url}"
[pool]
reconcile_interval = "1s"
job_check_interval = "1s"
`);
});
afterAll(async () => {
  await daemon?.cleanup();
  for (const r of [configured, attacker])
    await new Promise<void>((resolve) => r?.server.close(() => resolve()));
  rmSync(dir, { recursive: true, force: true });
});

it('sends the job token only to [gitlab] url, never to the CI_SERVER_URL the job sets', async () => {
  const token = 'glcbt-64_job-check-token-777';
  const result = await runJob(daemon.entry(), {
    id: '777',
    variables: { CI_SERVER_URL: attacker.url, CI_JOB_TOKEN: token },
    // The job runs until the configured GitLab has been asked about it (bounded: 120 s).
    script: `for i in $(seq 1 1200); do [ -e ${flag} ] && exit 0; sleep 0.1; done; echo never asked; exit 1`,
  });
  expect(result.outcome, result.log).toBe('success');
  expect(existsSync(flag)).toBe(true);
  expect(configured.requests).toContainEqual({ url: '/api/v4/job', token });
  expect(attacker.requests).toEqual([]);
});
