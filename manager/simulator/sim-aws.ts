/**
 * The real AwsProvider for the simulator: real SDK clients whose requests the in-memory cloud
 * (sim-cloud.ts) answers on the virtual clock, and the provider's own clock set to it, so its
 * launch-rate bucket, Auto Scaling raise coalescing and launch deadlines run in virtual time.
 * What differs from the daemon, and why:
 *
 * - No HTTP and no XML: the cloud answers below the SDK's retry and signing layers.
 * - The SDK's retry decisions stay (retryable error types, attempts, the provider's refusal to
 *   retry capacity errors), but the back-off waits on the virtual clock: the SDK's own waits are
 *   real timers, which would let virtual time run past them. The back-off is the SDK's standard
 *   one (full jitter, base 1 s for throttling, 50 ms otherwise, cap 20 s); the adaptive mode's
 *   client-side rate limiter is not modelled.
 * - The SSH half of readiness is the cloud's answer for the instance's address (no sshd): the port
 *   closed (a free probe, repeated after 250 ms as the provider does) until EC2 says running, then
 *   the ready command failing until boot has finished.
 *
 * Everything else is production code: the listing and its filters, launch.ts, the key windows,
 * the SSH key files in a state directory (a temporary one, removed by `close`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoScalingClient } from '@aws-sdk/client-auto-scaling';
import { EC2Client } from '@aws-sdk/client-ec2';
import type { Logger } from 'pino';
import { sleep } from '../fleet/clock.js';
import { AwsProvider, PORT_PROBE_INTERVAL_MS } from '../providers/aws/aws-provider.js';
import { type AwsConfig, awsConfigSchema } from '../providers/aws/config.js';
import { noCapacityRetries, type RetryStrategyLike } from '../providers/aws/retry.js';
import { type Rng, seededRng } from './random.js';
import { SIM_GROUP, SIM_LAUNCH_TEMPLATE, SIM_SUBNETS, SimCloud, type SimCloudOptions } from './sim-cloud.js';
import type { VirtualClock } from './virtual-clock.js';

export type SimMode = 'fleet' | 'asg';

export interface SimAwsOptions {
  readonly mode: SimMode;
  readonly clock: VirtualClock;
  readonly seed: number;
  readonly cloud: Omit<SimCloudOptions, 'clock' | 'seed' | 'onInterrupt'>;
  /** `[aws]` keys over the simulator's defaults (e.g. launch_rate, launch_burst, asg_key_window). */
  readonly aws?: Record<string, unknown>;
  readonly fleetName: string;
  readonly managerId: string;
  readonly log: Logger;
  readonly maxLifetimeMs: number;
  /** asg mode: how long a raise may wait for the listing to show its instances. */
  readonly asgLaunchWaitMs?: number;
  readonly onInterrupt?: (id: string) => void;
}

export interface SimAws {
  readonly provider: AwsProvider;
  readonly cloud: SimCloud;
  readonly config: AwsConfig;
  /** SSH readiness probes the fleet asked for (not AWS calls). */
  probes: number;
  close(): void;
}

const MAX_ATTEMPTS = 6;

/** The `[aws]` section the simulator runs with, before overrides. */
export function simAwsConfig(mode: SimMode, over: Record<string, unknown> = {}): AwsConfig {
  return awsConfigSchema.parse({
    region: 'eu-west-1',
    mode,
    ...(mode === 'asg'
      ? { asg_name: SIM_GROUP }
      : {
          launch_template: SIM_LAUNCH_TEMPLATE,
          instance_types: ['t3.micro', 't3a.micro'],
          subnets: SIM_SUBNETS,
        }),
    ...over,
  });
}

export function simAws(o: SimAwsOptions): SimAws {
  const config = simAwsConfig(o.mode, o.aws);
  const cloud = new SimCloud({
    ...o.cloud,
    clock: o.clock,
    seed: o.seed,
    ...(o.onInterrupt ? { onInterrupt: o.onInterrupt } : {}),
  });
  const common = {
    region: config.region,
    credentials: { accessKeyId: 'AKIASIMULATOR0000000', secretAccessKey: 'simulated' },
    maxAttempts: MAX_ATTEMPTS,
  };
  const backoffRng = seededRng(o.seed * 7 + 5);
  const ec2 = new EC2Client({
    ...common,
    retryStrategy: noCapacityRetries(common, virtualRetries(o.clock, backoffRng)),
  });
  const autoscaling = new AutoScalingClient({
    ...common,
    retryStrategy: virtualRetries(o.clock, backoffRng) as never,
  });
  ec2.middlewareStack.add(cloud.middleware('ec2'), {
    step: 'deserialize',
    name: 'simCloud',
    priority: 'high',
  });
  autoscaling.middlewareStack.add(cloud.middleware('autoscaling'), {
    step: 'deserialize',
    name: 'simCloud',
    priority: 'high',
  });
  // tmpfs when there is one: the provider writes each instance's key files.
  const base = process.platform === 'linux' ? '/dev/shm' : tmpdir();
  const stateDir = mkdtempSync(join(base, 'rf-sim-'));
  const handle: SimAws = {
    cloud,
    config,
    probes: 0,
    provider: new AwsProvider({
      config,
      fleetName: o.fleetName,
      managerId: o.managerId,
      stateDir,
      maxLifetimeMs: o.maxLifetimeMs,
      ec2,
      ...(o.mode === 'asg' ? { autoscaling } : {}),
      log: o.log,
      clock: o.clock,
      ...(o.asgLaunchWaitMs !== undefined ? { asgLaunchWaitMs: o.asgLaunchWaitMs } : {}),
      // As the provider's own probe answers: a closed port is a free probe, repeated soon.
      sshProbe: async (info) => {
        handle.probes++;
        const state = cloud.sshState(info.host);
        if (state === 'ready') return { ready: true };
        return state === 'closed'
          ? { ready: false, reason: 'SSH port 22 not reachable yet', retryInMs: PORT_PROBE_INTERVAL_MS }
          : { ready: false, reason: 'instance_ready_command failed (exit 1)' };
      },
    }),
    close: () => {
      ec2.destroy();
      autoscaling.destroy();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  return handle;
}

interface Token {
  count: number;
  getRetryCount(): number;
  getRetryDelay(): number;
}

/**
 * The SDK's standard retry decisions with the back-off slept on the virtual clock. The token it
 * hands back says "no delay", so the SDK's own (real-time) wait is skipped.
 */
function virtualRetries(clock: VirtualClock, rng: Rng): RetryStrategyLike & { mode: string } {
  const token = (count: number): Token => ({
    count,
    getRetryCount: () => count,
    getRetryDelay: () => 0,
  });
  return {
    mode: 'standard',
    acquireInitialRetryToken: async () => token(0),
    refreshRetryTokenForRetry: async (t, info) => {
      const count = (t as Token).count;
      const type = (info as { errorType?: string }).errorType;
      if ((type !== 'THROTTLING' && type !== 'TRANSIENT') || count + 1 >= MAX_ATTEMPTS)
        throw new Error('no retry');
      const base = type === 'THROTTLING' ? 1000 : 50;
      await sleep(clock, rng() * Math.min(20_000, base * 2 ** count));
      return token(count + 1);
    },
    recordSuccess: () => undefined,
  };
}
