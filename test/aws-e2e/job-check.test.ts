/**
 * The job check on the AWS path (the local provider's is test/job/job-check.test.ts): the real
 * daemon on the wire fake asks only the GitLab of its config about a running job, never the
 * CI_SERVER_URL the job sets, so the job token never reaches a server the job author chose.
 */
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { awsDaemonConfig, awsToml } from '../providers/aws-harness.js';
import { runJob } from '../support/gitlab-runner.js';
import { awsE2eLifecycle } from './aws-e2e-harness.js';

const e2e = awsE2eLifecycle();

async function recorder(onRequest: () => void = () => {}) {
  const requests: Array<{ url: string | undefined; token: string | undefined }> = [];
  const server: Server = createServer((req, res) => {
    requests.push({ url: req.url, token: req.headers['job-token'] as string | undefined });
    onRequest();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  e2e.onStop(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

describe('job liveness on AWS (fleet mode)', () => {
  it('sends the job token only to [gitlab] url, never to the CI_SERVER_URL the job sets', async () => {
    const { w, scratch } = await e2e.start('rf-aws-job-check-');
    chmodSync(scratch, 0o755); // the job's shell on the instance must see the flag
    const flag = join(scratch, 'asked');
    const configured = await recorder(() => writeFileSync(flag, ''));
    const attacker = await recorder();
    const d = await e2e.daemon(
      awsDaemonConfig({
        scratch,
        pool: 'job_check_interval = "1s"',
        sections: `[gitlab]\nurl = "${configured.url}"`,
        aws: awsToml(w, 'fleet'),
      }),
    );
    const token = 'glcbt-64_aws-job-check-token-778';
    const result = await runJob(d.entry(), {
      id: '778',
      variables: { CI_SERVER_URL: attacker.url, CI_JOB_TOKEN: token },
      // The job runs until the configured GitLab has been asked about it (bounded: 120 s).
      script: `for i in $(seq 1 1200); do [ -e ${flag} ] && exit 0; sleep 0.1; done; echo never asked; exit 1`,
    });
    expect(result.outcome, result.log).toBe('success');
    expect(existsSync(flag)).toBe(true);
    expect(configured.requests).toContainEqual({ url: '/api/v4/job', token });
    expect(attacker.requests).toEqual([]);
  }, 240_000);
});
