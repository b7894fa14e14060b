// The JSON control endpoint (`/__fake/<name>`) for when the fake runs as its own process (soak
// test, manual use): the same knobs as the TypeScript methods, one route per method.

import type http from 'node:http';
import type { AutoScalingGroupSeed, AwsFake, CapacityRule, Timing, VanishCause } from './fake.js';
import type { LaunchTemplateData } from './world.js';

type Json = Record<string, unknown>;
type Route = (fake: AwsFake, body: Json) => unknown | Promise<unknown>;

const strings = (v: unknown): string[] | undefined => (Array.isArray(v) ? v.map(String) : undefined);
const number = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
const text = (v: unknown, name: string): string => {
  if (typeof v !== 'string' || v === '') throw new ControlError(`"${name}" (string) is required`);
  return v;
};

class ControlError extends Error {}

export const routes: Record<string, Route> = {
  health: () => ({ ok: true }),
  calls: (f, b) => f.calls(typeof b.action === 'string' ? b.action : undefined),
  callCount: (f, b) => ({ count: f.callCount(text(b.action, 'action')) }),
  clearCalls: (f) => f.clearCalls(),
  instances: (f) => f.instances(),
  userData: (f, b) => ({ userData: f.userData(text(b.instanceId, 'instanceId')) ?? null }),
  endpoint: (f, b) => f.endpoint(text(b.instanceId, 'instanceId')) ?? null,
  group: (f, b) => f.group(text(b.name, 'name')) ?? null,
  throttle: (f, b) =>
    f.throttle(text(b.action, 'action'), { count: number(b.count), forMs: number(b.forMs) }),
  failNext: (f, b) =>
    f.failNext(text(b.action, 'action'), {
      code: text(b.code, 'code'),
      message: typeof b.message === 'string' ? b.message : undefined,
      status: number(b.status),
      count: number(b.count),
    }),
  insufficientCapacity: (f, b) => f.insufficientCapacity(b as CapacityRule),
  stuckPending: (f, b) => f.stuckPending({ count: number(b.count), instanceTypes: strings(b.instanceTypes) }),
  failBoot: (f, b) => f.failBoot({ count: number(b.count), instanceTypes: strings(b.instanceTypes) }),
  vanish: (f, b) =>
    f.vanish(text(b.instanceId, 'instanceId'), (b.cause as VanishCause | undefined) ?? 'spot'),
  timing: (f, b) => f.setTiming(b as Partial<Timing>),
  latency: (f, b) => f.setLatency(number(b.ms) ?? 0, typeof b.action === 'string' ? b.action : '*'),
  deny: (f, b) => f.deny(...(strings(b.actions) ?? [])),
  allow: (f, b) => f.allow(...(strings(b.actions) ?? [])),
  pageSize: (f, b) => f.setDescribePageSize(number(b.size) ?? 1000),
  clearFaults: (f) => f.clearFaults(),
  advance: (f, b) => f.advance(number(b.ms) ?? 0),
  launchTemplate: (f, b) =>
    f.addLaunchTemplate(
      text(b.name, 'name'),
      (b.data ?? {}) as LaunchTemplateData | LaunchTemplateData[],
      number(b.defaultVersion),
    ),
  autoScalingGroup: (f, b) => f.addAutoScalingGroup(b as unknown as AutoScalingGroupSeed),
  parameter: (f, b) =>
    f.putParameter(
      text(b.name, 'name'),
      text(b.value, 'value'),
      (b.type as 'String' | 'SecureString' | undefined) ?? 'String',
    ),
  bucket: (f, b) => f.addBucket(text(b.name, 'name')),
};

export async function handleControl(
  fake: AwsFake,
  method: string,
  name: string,
  body: string,
  res: http.ServerResponse,
): Promise<void> {
  const send = (status: number, json: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(json ?? { ok: true }));
  };
  const route = Object.hasOwn(routes, name) ? routes[name] : undefined;
  if (!route) return send(404, { error: `unknown control route '${name}'`, routes: Object.keys(routes) });
  if (method !== 'POST' && method !== 'GET') return send(405, { error: 'use POST (GET for reads)' });
  let input: Json = {};
  try {
    const parsed: unknown = body ? JSON.parse(body) : {};
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
      throw new ControlError('body must be a JSON object');
    input = parsed as Json;
  } catch (err) {
    return send(400, { error: err instanceof Error ? err.message : String(err) });
  }
  try {
    send(200, await route(fake, input));
  } catch (err) {
    send(400, { error: err instanceof Error ? err.message : String(err) });
  }
}
