/**
 * The pipeline's smoke test (infra/pipeline/smoke.ts) against real servers on 127.0.0.1: an HTTPS
 * "load balancer" with a certificate for the stage's host name, GitLab's /-/readiness and the
 * manager's /healthz answering over plain HTTP, and SSM/EC2 through the wire-level AWS fake, whose
 * SendCommand runs the health-check document's own shell lines (curl) against those servers.
 */

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EC2Client } from '@aws-sdk/client-ec2';
import { SSMClient } from '@aws-sdk/client-ssm';
import { Template } from 'aws-cdk-lib/assertions';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DeployTargetStack } from '../../infra/pipeline/deploy-target-stack.js';
import { HEALTH_CHECK_TAG, healthCheckDocumentName } from '../../infra/pipeline/names.js';
import {
  checkThroughLoadBalancer,
  type SmokeOptions,
  smoke,
  stageOutputs,
} from '../../infra/pipeline/smoke.js';
import { parseSmokeArgs } from '../../infra/pipeline/smoke-cli.js';
import { healthCheckDocumentContent } from '../../infra/shared/health-check.js';
import { AwsFake } from '../fakes/aws/fake.js';
import { appWithContext } from './cdk-context.js';

const HOST = 'gitlab.dev.example.com';
const dir = mkdtempSync(join(tmpdir(), 'smoke-test-'));
const certFile = join(dir, 'cert.pem');
const keyFile = join(dir, 'key.pem');

/** Status codes a server answers in turn; the last one repeats. */
class Script {
  private answers: { status: number; body: string }[] = [{ status: 200, body: 'ok' }];
  hits = 0;
  set(...answers: { status: number; body?: string }[]) {
    this.answers = answers.map((a) => ({ status: a.status, body: a.body ?? '' }));
    this.hits = 0;
  }
  next() {
    const answer = this.answers[Math.min(this.hits, this.answers.length - 1)]!;
    this.hits++;
    return answer;
  }
}

const signIn = new Script();
const readiness = new Script();
const healthz = new Script();
let lb: https.Server;
let local: http.Server;
let lbPort: number;
let localPort: number;
let fake: AwsFake;
let clients: SmokeOptions['clients'];
const lines: string[] = [];

const listen = async (server: http.Server | https.Server) => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
};

beforeAll(async () => {
  const subject = ['-subj', `/CN=${HOST}`, '-addext', `subjectAltName=DNS:${HOST}`];
  const files = ['-keyout', keyFile, '-out', certFile];
  const args = ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', ...files, ...subject];
  execFileSync('openssl', args, { stdio: 'ignore' });
  lb = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (req, res) => {
    // What the NLB forwards: the Host the client asked for; GitLab's sign-in page is on that host.
    const a =
      req.url === '/users/sign_in' && req.headers.host === HOST ? signIn.next() : { status: 404, body: '' };
    res.writeHead(a.status).end(a.body);
  });
  local = http.createServer((req, res) => {
    const a =
      req.url === '/-/readiness'
        ? readiness.next()
        : req.url === '/healthz'
          ? healthz.next()
          : { status: 404, body: '' };
    res.writeHead(a.status, { 'content-type': 'application/json' }).end(a.body);
  });
  lbPort = await listen(lb);
  localPort = await listen(local);
});

afterAll(async () => {
  await Promise.all([lb, local].map((s) => new Promise((r) => s?.close(r))));
  rmSync(dir, { recursive: true, force: true });
});

/** A group of one, like the stacks' GitLab and manager groups, its instances tagged at launch. */
async function group(name: string, tagValue: string) {
  const template = fake.addLaunchTemplate(`${name}-lt`, {
    ImageId: 'ami-0123456789abcdef0',
    InstanceType: 't3.small',
  });
  fake.addAutoScalingGroup({
    name,
    maxSize: 1,
    desiredCapacity: 1,
    launchTemplate: { LaunchTemplateId: template.LaunchTemplateId, Version: '$Default' },
    tags: [{ Key: HEALTH_CHECK_TAG, Value: tagValue, PropagateAtLaunch: true }],
  });
}

async function waitRunning(count: number) {
  for (let i = 0; i < 200; i++) {
    if (fake.instances().filter((x) => x.State === 'running').length >= count) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('fake instances never ran');
}

beforeEach(async () => {
  lines.length = 0;
  signIn.set({ status: 200 });
  readiness.set({ status: 200, body: '{"status":"ok"}' });
  healthz.set({ status: 200, body: '{"status":"ok"}' });
  fake = await AwsFake.start();
  clients = {
    ec2: new EC2Client({ ...fake.clientConfig() }),
    ssm: new SSMClient({ ...fake.clientConfig() }),
  };
  // The documents exactly as the stacks render them, pointed at this test's loopback servers.
  fake.addDocument(
    healthCheckDocumentName('dev', 'gitlab'),
    healthCheckDocumentContent(`http://127.0.0.1:${localPort}/-/readiness`),
  );
  fake.addDocument(
    healthCheckDocumentName('dev', 'manager'),
    healthCheckDocumentContent(`http://127.0.0.1:${localPort}/healthz`),
  );
});

afterEach(async () => {
  clients.ec2.destroy();
  clients.ssm.destroy();
  await fake.close();
});

const options = (over: Partial<SmokeOptions> = {}): SmokeOptions => ({
  stage: 'dev',
  outputs: { gitlabUrl: `https://${HOST}`, loadBalancerDnsName: `127.0.0.1:${lbPort}` },
  clients,
  wait: { attempts: 3, intervalMs: 50 },
  log: (line) => lines.push(line),
  ca: readFileSync(certFile),
  polls: 100,
  pollMs: 50,
  ...over,
});

describe('smoke test', () => {
  it('passes when the load balancer, GitLab readiness and the manager healthz all answer', async () => {
    await group('gitlab', 'dev-gitlab');
    await group('manager', 'dev-manager');
    await waitRunning(2);
    expect(await smoke(options())).toBe(true);
    expect(signIn.hits).toBe(1);
    expect(readiness.hits).toBe(1);
    expect(healthz.hits).toBe(1);
    expect(fake.calls('SendCommand').map((c) => c.params.DocumentName)).toEqual([
      'runner-fleet-dev-gitlab-health',
      'runner-fleet-dev-manager-health',
    ]);
    expect(lines.at(-1)).toBe(`smoke test passed: dev serves https://${HOST}`);
  });

  it("fails on GitLab's failing readiness and shows its answer", async () => {
    await group('gitlab', 'dev-gitlab');
    await group('manager', 'dev-manager');
    await waitRunning(2);
    readiness.set({ status: 503, body: '{"status":"failed","db_check":[{"status":"failed"}]}' });
    expect(await smoke(options())).toBe(false);
    expect(readiness.hits).toBe(3);
    const failure = lines.at(-1)!;
    expect(failure).toMatch(/^smoke test FAILED/);
    expect(failure).toMatch(/gitlab \(runner-fleet-dev-gitlab-health\): i-\w+ Failed: .*"db_check"/);
    expect(failure).not.toMatch(/manager/);
  });

  it('waits for a load balancer that answers 502 while GitLab boots', async () => {
    await group('gitlab', 'dev-gitlab');
    await group('manager', 'dev-manager');
    await waitRunning(2);
    signIn.set({ status: 502 }, { status: 502 }, { status: 200 });
    expect(await smoke(options())).toBe(true);
    expect(signIn.hits).toBe(3);
    expect(lines.filter((l) => l.startsWith('not yet') && l.includes('HTTP 502'))).toHaveLength(2);
  });

  it('fails on an unhealthy manager, and when no instance carries the tag', async () => {
    await group('gitlab', 'dev-gitlab');
    await waitRunning(1);
    expect(await smoke(options({ wait: { attempts: 1, intervalMs: 10 } }))).toBe(false);
    expect(lines.at(-1)).toContain(
      'manager: no running instance tagged runner-fleet:health-check=dev-manager',
    );

    await group('manager', 'dev-manager');
    await waitRunning(2);
    lines.length = 0;
    healthz.set({ status: 503, body: '{"status":"unhealthy","reason":"reconcile stalled"}' });
    expect(await smoke(options({ wait: { attempts: 1, intervalMs: 10 } }))).toBe(false);
    expect(lines.at(-1)).toMatch(
      /manager \(runner-fleet-dev-manager-health\): i-\w+ Failed: .*reconcile stalled/,
    );
  });

  it('asks again when the invocation does not exist yet, as right after SendCommand on AWS', async () => {
    await group('gitlab', 'dev-gitlab');
    await group('manager', 'dev-manager');
    await waitRunning(2);
    fake.failNext('GetCommandInvocation', { code: 'InvocationDoesNotExist', count: 2 });
    expect(await smoke(options({ wait: { attempts: 1, intervalMs: 10 } }))).toBe(true);
  });

  it('checks the certificate against the stage host name: another name fails', async () => {
    const result = await checkThroughLoadBalancer(
      { gitlabUrl: 'https://gitlab.example.com', loadBalancerDnsName: `127.0.0.1:${lbPort}` },
      { ca: readFileSync(certFile) },
    );
    expect(result.ok).toBe(false);
    expect(result.detail).toMatch(/altnames|does not match|certificate/i);
  });
});

describe('the deploy role allows what the smoke test calls', () => {
  it('every AWS call of a passing smoke test is in the policy, and the policy allows no other action', async () => {
    await group('gitlab', 'dev-gitlab');
    await group('manager', 'dev-manager');
    await waitRunning(2);
    fake.clearCalls();
    expect(await smoke(options())).toBe(true);
    const called = new Set(fake.calls().flatMap((c) => c.iamActions));
    const app = appWithContext();
    const stack = new DeployTargetStack(app, 'Target', {
      env: { account: '222222222222', region: 'eu-west-1' },
      stage: 'dev',
      devopsAccount: '111111111111',
      cdkQualifier: 'hnb659fds',
    });
    const statements = Object.values(Template.fromStack(stack).findResources('AWS::IAM::Policy'))
      .flatMap(
        (p) =>
          (
            p as {
              Properties: {
                PolicyDocument: {
                  Statement: { Sid: string; Action: string | string[]; Resource: string | string[] }[];
                };
              };
            }
          ).Properties.PolicyDocument.Statement,
      )
      .filter((s) => s.Sid.startsWith('SmokeTest'));
    const allowed = new Set(statements.flatMap((s) => [s.Action].flat()));
    expect([...allowed].sort()).toEqual([...called].sort());
    // The documents sent are the ones named in the policy.
    const documents = statements
      .filter((s) => s.Sid === 'SmokeTestDocuments')
      .flatMap((s) => [s.Resource].flat());
    for (const call of fake.calls('SendCommand'))
      expect(documents).toContain(`arn:aws:ssm:eu-west-1:222222222222:document/${call.params.DocumentName}`);
  });
});

describe('smoke inputs', () => {
  it('reads the GitLab stack outputs of one stage from cdk deploy --outputs-file', () => {
    const file = {
      'Dev-GitLab': {
        GitlabUrl: `https://${HOST}`,
        LoadBalancerDnsName: 'nlb-1.elb.eu-west-1.amazonaws.com',
      },
      'Dev-Fleet': {},
    };
    expect(stageOutputs(file, 'o.json')).toEqual({
      gitlabUrl: `https://${HOST}`,
      loadBalancerDnsName: 'nlb-1.elb.eu-west-1.amazonaws.com',
    });
    expect(() => stageOutputs({}, 'o.json')).toThrow(
      /o.json: expected the outputs of exactly one GitLab stack/,
    );
    expect(() => stageOutputs({ 'Dev-GitLab': { GitlabUrl: 'x' } }, 'o.json')).toThrow(
      /no LoadBalancerDnsName/,
    );
  });

  it('parses its arguments and refuses bad ones', () => {
    expect(parseSmokeArgs(['--stage', 'prod', '--outputs', 'o.json'])).toEqual({
      stage: 'prod',
      outputsFile: 'o.json',
      waitMinutes: 20,
      intervalSeconds: 15,
    });
    expect(() => parseSmokeArgs(['--stage', 'qa', '--outputs', 'o.json'])).toThrow(
      /--stage must be dev or prod/,
    );
    expect(() => parseSmokeArgs(['--stage', 'dev'])).toThrow(/--outputs/);
    expect(() => parseSmokeArgs(['--stage', 'dev', '--outputs', 'o', '--wait-minutes', '0'])).toThrow(
      /positive/,
    );
  });
});

describe('smoke CLI (built), as the deploy job runs it', () => {
  const cli = new URL('../../dist/infra/pipeline/smoke-cli.js', import.meta.url).pathname;

  const run = (args: string[]) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [cli, ...args], {
        env: {
          PATH: process.env.PATH,
          AWS_ENDPOINT_URL: fake.clientConfig().endpoint,
          AWS_REGION: 'eu-west-1',
          AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE',
          AWS_SECRET_ACCESS_KEY: 'fake-secret',
          NODE_EXTRA_CA_CERTS: certFile,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('close', (code) => resolve({ code, out }));
    });

  it('exits 0 when the stage is healthy, 1 when it is not, 2 on a bad outputs file', async () => {
    expect(existsSync(cli), `${cli}: run npm run build first`).toBe(true);
    await group('gitlab', 'dev-gitlab');
    await group('manager', 'dev-manager');
    await waitRunning(2);
    const outputs = join(dir, 'outputs.json');
    writeFileSync(
      outputs,
      JSON.stringify({
        'Dev-GitLab': { GitlabUrl: `https://${HOST}`, LoadBalancerDnsName: `127.0.0.1:${lbPort}` },
      }),
    );
    const args = [
      '--stage',
      'dev',
      '--outputs',
      outputs,
      '--wait-minutes',
      '0.01',
      '--interval-seconds',
      '0.2',
    ];
    const ok = await run(args);
    expect(ok.out).toContain('smoke test passed');
    expect(ok.code).toBe(0);

    healthz.set({ status: 503, body: '{"status":"unhealthy"}' });
    const bad = await run(args);
    expect(bad.out).toMatch(/smoke test FAILED[\s\S]*manager/);
    expect(bad.code).toBe(1);

    writeFileSync(outputs, '{}');
    const unreadable = await run(args);
    expect(unreadable.out).toContain('expected the outputs of exactly one GitLab stack');
    expect(unreadable.code).toBe(2);
  });
});
