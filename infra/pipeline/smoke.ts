/**
 * The smoke test a deploy job runs after `cdk deploy` (.gitlab-ci.yml): is the stage serving?
 *
 * 1. GitLab through the load balancer: GET /users/sign_in over TLS, connecting to the NLB's DNS
 *    name (from the stack outputs) with the stage's host name as SNI and Host, so it works before
 *    DNS points at the NLB and proves listener, certificate, target and Rails. /-/readiness itself
 *    answers 404 from outside: GitLab's monitoring_whitelist admits the VPC only (gitlab-rb.ts),
 *    and widening it would also expose /-/metrics to every CI job behind the NAT gateways.
 * 2. GitLab's /-/readiness (every component: database, Redis, Gitaly) on the GitLab instances,
 *    and 3. the manager's /healthz, both through SSM Run Command with the stage's health-check
 *    documents (infra/shared/health-check.ts), which fetch one loopback URL and nothing else.
 *
 * AWS calls sit here rather than in manager/providers/aws: this is a deploy tool of the
 * infrastructure, never loaded by the daemon or the hooks.
 */

import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type DescribeInstancesCommandOutput,
  type EC2Client,
  paginateDescribeInstances,
} from '@aws-sdk/client-ec2';
import { GetCommandInvocationCommand, SendCommandCommand, type SSMClient } from '@aws-sdk/client-ssm';
import {
  type DeployStage,
  HEALTH_CHECK_TAG,
  type HealthCheckTarget,
  healthCheckDocumentName,
  healthCheckTagValue,
} from './names.js';

export interface CheckResult {
  ok: boolean;
  detail: string;
}

export interface Wait {
  /** How many times a failing check is tried before the smoke test fails. */
  attempts: number;
  /** Pause between two tries. */
  intervalMs: number;
}

export type Log = (line: string) => void;

/** The stack outputs the smoke test needs (load-balancer.ts defines them). */
export interface StageOutputs {
  gitlabUrl: string;
  loadBalancerDnsName: string;
}

/**
 * Outputs of one stage from `cdk deploy --outputs-file` ({stackName: {OutputKey: value}}): the
 * stack that has GitlabUrl, which is that stage's GitLab stack.
 */
export function stageOutputs(file: unknown, source: string): StageOutputs {
  const stacks = typeof file === 'object' && file !== null ? Object.entries(file) : [];
  const found = stacks.filter(
    ([, o]) =>
      typeof o === 'object' && o !== null && typeof (o as Record<string, unknown>).GitlabUrl === 'string',
  );
  if (found.length !== 1)
    throw new Error(
      `${source}: expected the outputs of exactly one GitLab stack (GitlabUrl), found ${found.length}; deploy one stage per run`,
    );
  const [stack, o] = found[0] as [string, Record<string, unknown>];
  if (typeof o.LoadBalancerDnsName !== 'string')
    throw new Error(`${source}: stack ${stack} has no LoadBalancerDnsName output`);
  return { gitlabUrl: o.GitlabUrl as string, loadBalancerDnsName: o.LoadBalancerDnsName };
}

/**
 * GET `path` of `baseUrl` through `via` (host or host:port): TLS names and checks the URL's host,
 * the TCP connection goes to `via`, as `curl --connect-to` does.
 */
export function fetchThrough(
  baseUrl: string,
  path: string,
  via: string,
  options: { ca?: string | Buffer; timeoutMs?: number } = {},
): Promise<{ status: number; body: string }> {
  const url = new URL(path, baseUrl);
  const [host, port] = via.split(':');
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host,
        port: port ? Number(port) : 443,
        path: url.pathname + url.search,
        method: 'GET',
        servername: url.hostname,
        headers: { host: url.host, 'user-agent': 'runner-fleet-smoke' },
        timeout: options.timeoutMs ?? 20_000,
        ...(options.ca ? { ca: options.ca } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (body.length < 4096) body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeoutMs ?? 20_000} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export async function checkThroughLoadBalancer(
  outputs: StageOutputs,
  options: { ca?: string | Buffer } = {},
): Promise<CheckResult> {
  const what = `${outputs.gitlabUrl}/users/sign_in through ${outputs.loadBalancerDnsName}`;
  try {
    const { status } = await fetchThrough(
      outputs.gitlabUrl,
      '/users/sign_in',
      outputs.loadBalancerDnsName,
      options,
    );
    return status === 200
      ? { ok: true, detail: `${what}: HTTP 200` }
      : { ok: false, detail: `${what}: HTTP ${status}` };
  } catch (error) {
    return { ok: false, detail: `${what}: ${(error as Error).message}` };
  }
}

/** Statuses after which GetCommandInvocation's answer no longer changes. */
const FINAL = new Set(['Success', 'Failed', 'TimedOut', 'Cancelled', 'Undeliverable', 'Terminated']);

/**
 * Run the stage's health-check document for `target` on every running instance tagged for it
 * and wait for each answer (bounded by `polls` × `pollMs`).
 */
export async function checkOnInstances(
  clients: { ec2: EC2Client; ssm: SSMClient },
  stage: DeployStage,
  target: HealthCheckTarget,
  options: { polls?: number; pollMs?: number } = {},
): Promise<CheckResult> {
  const tag = `${HEALTH_CHECK_TAG}=${healthCheckTagValue(stage, target)}`;
  const instanceIds: string[] = [];
  const pages = paginateDescribeInstances(
    { client: clients.ec2 },
    {
      Filters: [
        { Name: `tag:${HEALTH_CHECK_TAG}`, Values: [healthCheckTagValue(stage, target)] },
        { Name: 'instance-state-name', Values: ['running'] },
      ],
    },
  );
  for await (const page of pages as AsyncIterable<DescribeInstancesCommandOutput>) {
    for (const r of page.Reservations ?? [])
      for (const i of r.Instances ?? []) if (i.InstanceId) instanceIds.push(i.InstanceId);
  }
  if (instanceIds.length === 0) return { ok: false, detail: `${target}: no running instance tagged ${tag}` };

  const document = healthCheckDocumentName(stage, target);
  const sent = await clients.ssm.send(
    new SendCommandCommand({
      DocumentName: document,
      InstanceIds: instanceIds,
      TimeoutSeconds: 60,
      Comment: `runner-fleet smoke test (${target})`,
    }),
  );
  const commandId = sent.Command?.CommandId;
  if (!commandId) return { ok: false, detail: `${target}: SendCommand returned no command id` };

  const polls = options.polls ?? 60;
  const pollMs = options.pollMs ?? 2_000;
  const results: string[] = [];
  let ok = true;
  for (const instanceId of instanceIds) {
    let status = 'Pending';
    let output = '';
    for (let poll = 0; poll < polls && !FINAL.has(status); poll++) {
      if (poll > 0) await sleep(pollMs);
      try {
        const answer = await clients.ssm.send(
          new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }),
        );
        status = answer.Status ?? 'Pending';
        output = `${answer.StandardOutputContent ?? ''}${answer.StandardErrorContent ?? ''}`.trim();
      } catch (error) {
        // Right after SendCommand the invocation may not exist yet: ask again.
        if ((error as { name?: string }).name !== 'InvocationDoesNotExist') throw error;
      }
    }
    if (status !== 'Success') ok = false;
    const shown = output.length > 600 ? `${output.slice(0, 600)}…` : output;
    results.push(
      `${instanceId} ${FINAL.has(status) ? status : `still ${status}`}${shown ? `: ${shown}` : ''}`,
    );
  }
  return { ok, detail: `${target} (${document}): ${results.join('; ')}` };
}

/** Try `check` until it passes or `wait.attempts` are spent; each failure is logged. */
export async function retry(
  name: string,
  check: () => Promise<CheckResult>,
  wait: Wait,
  log: Log,
): Promise<CheckResult> {
  let last: CheckResult = { ok: false, detail: `${name}: not tried` };
  for (let attempt = 1; attempt <= wait.attempts; attempt++) {
    if (attempt > 1) await sleep(wait.intervalMs);
    try {
      last = await check();
    } catch (error) {
      last = { ok: false, detail: `${name}: ${(error as Error).message}` };
    }
    log(`${last.ok ? 'ok' : 'not yet'} (${attempt}/${wait.attempts}) ${last.detail}`);
    if (last.ok) return last;
  }
  return last;
}

export interface SmokeOptions {
  stage: DeployStage;
  outputs: StageOutputs;
  clients: { ec2: EC2Client; ssm: SSMClient };
  wait: Wait;
  log: Log;
  ca?: string | Buffer;
  polls?: number;
  pollMs?: number;
}

/** Every check, each retried on its own; true when all of them passed. */
export async function smoke(o: SmokeOptions): Promise<boolean> {
  const checks: [string, () => Promise<CheckResult>][] = [
    ['load balancer', () => checkThroughLoadBalancer(o.outputs, { ca: o.ca })],
    ['gitlab readiness', () => checkOnInstances(o.clients, o.stage, 'gitlab', o)],
    ['manager healthz', () => checkOnInstances(o.clients, o.stage, 'manager', o)],
  ];
  const failed: string[] = [];
  for (const [name, check] of checks) {
    const result = await retry(name, check, o.wait, o.log);
    if (!result.ok) failed.push(result.detail);
  }
  if (failed.length > 0) o.log(`smoke test FAILED:\n  ${failed.join('\n  ')}`);
  else o.log(`smoke test passed: ${o.stage} serves ${o.outputs.gitlabUrl}`);
  return failed.length === 0;
}
