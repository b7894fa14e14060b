/**
 * The AWS provider against the wire-level fake, with every fake instance backed by a real sshd.
 *
 * The backing reads the SSH material from the instance's user data (as cloud-init would apply it)
 * and serves it: the host key the manager pinned, the client key it will log in with. Each sshd
 * listens on a random port on 127.0.0.1; a small TCP relay on the instance's own private address
 * (127.0.x.y, from the fake's subnets) and the configured `ssh_port` forwards to it, so the
 * provider connects exactly as on EC2: private IP, one port for every instance.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { AutoScalingClient } from '@aws-sdk/client-auto-scaling';
import { EC2Client } from '@aws-sdk/client-ec2';
import pino from 'pino';
import { AwsProvider, type AwsProviderOptions } from '../../manager/providers/aws/aws-provider.js';
import { type AwsConfig, awsConfigSchema } from '../../manager/providers/aws/config.js';
import { noCapacityRetries } from '../../manager/providers/aws/retry.js';
import { type AwsFake, DEFAULT_SUBNETS, AwsFake as Fake, type FakeInstance } from '../fakes/aws/fake.js';
import { type Sshd, startSshd } from '../support/sshd.js';

export const SUBNETS = DEFAULT_SUBNETS.map((s) => s.subnetId);
export const GROUP = 'runner-fleet-jobs';
export const TEMPLATE = 'runner-fleet-job';

/** The fake accepts any key, but the SDK wants one: this process has them, a daemon child gets these. */
export const AWS_ENV = { AWS_ACCESS_KEY_ID: 'AKIAFAKEFAKEFAKEFAKE', AWS_SECRET_ACCESS_KEY: 'fake-secret' };
process.env.AWS_ACCESS_KEY_ID ??= AWS_ENV.AWS_ACCESS_KEY_ID;
process.env.AWS_SECRET_ACCESS_KEY ??= AWS_ENV.AWS_SECRET_ACCESS_KEY;

/** Host key and client key the user data installs, as the instance would apply them. */
export function sshMaterialFromUserData(userData: string): {
  hostPrivateKey: string;
  hostPublicKey: string;
  clientPublicKey: string;
} {
  const priv =
    /printf '%s' '(-----BEGIN OPENSSH PRIVATE KEY-----\n[\s\S]*?-----END OPENSSH PRIVATE KEY-----\n)'/.exec(
      userData,
    )?.[1];
  const hostPub = /printf '%s\\n' '(ssh-ed25519 \S+) runner-fleet-host'/.exec(userData)?.[1];
  const client = /printf '%s\\n' '(ssh-ed25519 \S+) runner-fleet-manager'/.exec(userData)?.[1];
  if (!priv || !hostPub || !client) throw new Error('user data lacks the SSH material');
  return { hostPrivateKey: priv, hostPublicKey: hostPub, clientPublicKey: client };
}

export interface AwsWorld {
  readonly fake: AwsFake;
  readonly sshPort: number;
  readonly templateId: string;
  readonly backed: Map<string, Sshd>;
  /**
   * Cut every TCP connection to the instance's SSH address (the relay) while the instance and its
   * sshd stay up, as a network blip would; new connections are accepted again. False if unknown.
   */
  cutConnections(instanceId: string): boolean;
  /**
   * The instance goes silent, as one that vanished without closing anything: its open
   * connections stay open but carry nothing more either way, and stay so after the instance is
   * terminated (no FIN, no RST) until the world closes. False if unknown.
   */
  silence(instanceId: string): boolean;
  close(): Promise<void>;
}

/** A fake with a job launch template (and an Auto Scaling group on `$Latest`) and sshd backings. */
export async function startAwsWorld(
  options: {
    backing?: boolean;
    azRebalanceSuspended?: boolean;
    pageSize?: number;
    port?: number;
    /** EC2 eventual consistency: a new instance is unknown to Describe calls and CreateTags this long. */
    eventualConsistencyMs?: number;
    /** The job group's MaxSize (default 20). */
    maxGroupSize?: number;
  } = {},
): Promise<AwsWorld> {
  const fake = await Fake.start({
    timing: { pendingMs: 50, shuttingDownMs: 50, eventualConsistencyMs: options.eventualConsistencyMs ?? 0 },
    ...(options.port ? { port: options.port } : {}),
    ...(options.pageSize ? { describeDefaultPageSize: options.pageSize } : {}),
  });
  const template = addJobGroup(fake, '', {
    ...(options.azRebalanceSuspended !== undefined
      ? { azRebalanceSuspended: options.azRebalanceSuspended }
      : {}),
    ...(options.maxGroupSize ? { maxSize: options.maxGroupSize } : {}),
  });
  const sshPort = await freePort();
  const backed = new Map<string, Sshd>();
  const relays = new Map<string, Relay>();
  const silenced: Relay[] = [];
  if (options.backing !== false) {
    fake.setBacking({
      async onRunning(instance: Readonly<FakeInstance>) {
        const userData = fake.userData(instance.InstanceId);
        // Someone else's instance (no runner-fleet user data): it runs, and nothing of ours can
        // log in to it.
        if (!userData?.includes('runner-fleet-host'))
          return { host: instance.PrivateIpAddress, port: sshPort };
        const m = sshMaterialFromUserData(userData);
        const sshd = await startSshd({
          hostKey: { privateKey: m.hostPrivateKey, publicKey: m.hostPublicKey },
          authorizedKeys: [m.clientPublicKey],
        });
        backed.set(instance.InstanceId, sshd);
        const host = instance.PrivateIpAddress;
        relays.set(instance.InstanceId, await relay(host, sshPort, sshd.port));
        return { host, port: sshPort };
      },
      async onTerminated(instance: Readonly<FakeInstance>) {
        await relays.get(instance.InstanceId)?.close();
        relays.delete(instance.InstanceId);
        await backed.get(instance.InstanceId)?.stop();
        backed.delete(instance.InstanceId);
      },
    });
  }
  return {
    fake,
    sshPort,
    templateId: template.LaunchTemplateId,
    backed,
    cutConnections(instanceId: string) {
      const r = relays.get(instanceId);
      if (!r) return false;
      r.cut();
      return true;
    },
    silence(instanceId: string) {
      const r = relays.get(instanceId);
      if (!r) return false;
      r.silence();
      silenced.push(r);
      return true;
    },
    async close() {
      await fake.close();
      for (const r of silenced) r.release();
      await Promise.all([...relays.values()].map((r) => r.close()));
      await Promise.all([...backed.values()].map((s) => s.stop()));
    },
  };
}

/**
 * A job launch template and an Auto Scaling group on its `$Latest` version, as the CDK stack makes
 * them (new instances protected from scale-in). One per manager: a manager's key window is the
 * template's latest version. `suffix` names a second pair (`runner-fleet-jobs-b`).
 */
export function addJobGroup(
  fake: AwsFake,
  suffix: string,
  options: { azRebalanceSuspended?: boolean; maxSize?: number } = {},
): { LaunchTemplateId: string } {
  const template = fake.addLaunchTemplate(`${TEMPLATE}${suffix}`, {
    ImageId: 'ami-0123456789abcdef0',
    InstanceType: 't3.micro',
    // Deliberately weak: the provider must enforce its own settings over the template's.
    MetadataOptions: { HttpTokens: 'optional', HttpPutResponseHopLimit: 2 },
    InstanceInitiatedShutdownBehavior: 'stop',
  });
  fake.addAutoScalingGroup({
    name: `${GROUP}${suffix}`,
    minSize: 0,
    maxSize: options.maxSize ?? 20,
    launchTemplate: { LaunchTemplateName: `${TEMPLATE}${suffix}`, Version: '$Latest' },
    subnetIds: SUBNETS,
    newInstancesProtectedFromScaleIn: true,
    suspendedProcesses: options.azRebalanceSuspended === false ? [] : ['AZRebalance'],
  });
  return template;
}

/** The `[aws]` TOML for a daemon pointed at this world. */
export function awsToml(world: AwsWorld, mode: 'asg' | 'fleet', extra = ''): string {
  return `[aws]
region = "${world.fake.world.region}"
mode = "${mode}"
endpoint = "${world.fake.url}"
${mode === 'asg' ? `asg_name = "${GROUP}"` : `launch_template = "${TEMPLATE}"\ninstance_types = ["t3.micro", "t3a.micro"]\nsubnets = ${JSON.stringify(SUBNETS)}`}
ssh_user = "${userInfo().username}"
ssh_port = ${world.sshPort}
instance_ready_command = "true"
${extra}
`;
}

export interface AwsDaemonConfig {
  /** Default "e2e". */
  fleet?: string;
  /** The job dirs (builds_dir, cache_dir) go below it. */
  scratch: string;
  /** More lines of [executor]. */
  executor?: string;
  /** More lines of [pool]. */
  pool?: string;
  /** Whole further sections ([credentials], [metrics], [container]). */
  sections?: string;
  /** The [aws] section: awsToml(world, …), possibly edited. */
  aws: string;
}

/**
 * A daemon config on the AWS provider as the end-to-end tests run it: the job dirs under a
 * scratch dir, and a pool that reconciles every second and gives an instance 30 s to be ready.
 */
export function awsDaemonConfig(o: AwsDaemonConfig): string {
  return [
    'provider = "aws"',
    `fleet_name = "${o.fleet ?? 'e2e'}"`,
    '[executor]',
    `builds_dir = "${o.scratch}/builds"`,
    `cache_dir = "${o.scratch}/cache"`,
    o.executor,
    '[pool]',
    o.pool,
    'reconcile_interval = "1s"',
    'reconcile_interval_fast = "200ms"',
    'instance_ready_timeout = "30s"',
    o.sections,
    o.aws,
  ]
    .filter((part) => part)
    .join('\n');
}

export function awsConfig(
  world: AwsWorld,
  mode: 'asg' | 'fleet',
  over: Record<string, unknown> = {},
): AwsConfig {
  return awsConfigSchema.parse({
    region: world.fake.world.region,
    mode,
    endpoint: world.fake.url,
    ...(mode === 'asg'
      ? { asg_name: GROUP }
      : { launch_template: TEMPLATE, instance_types: ['t3.micro', 't3a.micro'], subnets: SUBNETS }),
    ssh_user: userInfo().username,
    ssh_port: world.sshPort,
    instance_ready_command: 'true',
    ...over,
  });
}

export interface ProviderHandle {
  readonly provider: AwsProvider;
  readonly stateDir: string;
  cleanup(): void;
}

export function awsProvider(
  world: AwsWorld,
  mode: 'asg' | 'fleet',
  opts: {
    managerId?: string;
    fleetName?: string;
    config?: Record<string, unknown>;
    maxAttempts?: number;
    sshProbe?: AwsProviderOptions['sshProbe'];
    /** Another provider's state directory: a restart of that provider. */
    stateDir?: string;
    clock?: AwsProviderOptions['clock'];
  } = {},
): ProviderHandle {
  const stateDir = opts.stateDir ?? mkdtempSync(join(tmpdir(), 'rf-aws-provider-'));
  const config = awsConfig(world, mode, opts.config);
  const common = {
    region: config.region,
    endpoint: world.fake.url,
    retryMode: 'adaptive' as const,
    maxAttempts: opts.maxAttempts ?? 6,
  };
  const provider = new AwsProvider({
    config,
    fleetName: opts.fleetName ?? 'contract',
    managerId: opts.managerId ?? 'manager-a',
    stateDir,
    maxLifetimeMs: 7 * 3_600_000,
    ec2: new EC2Client({ ...common, retryStrategy: noCapacityRetries(common) }),
    ...(mode === 'asg' ? { autoscaling: new AutoScalingClient(common) } : {}),
    log: pino({ level: 'silent' }),
    readyCommandTimeoutMs: 10_000,
    asgLaunchWaitMs: 5_000,
    ...(opts.sshProbe ? { sshProbe: opts.sshProbe } : {}),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  return { provider, stateDir, cleanup: () => rmSync(stateDir, { recursive: true, force: true }) };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface Relay {
  /** Drop the open connections, keep listening. */
  cut(): void;
  /** Forward nothing more on the open connections and never end them (see AwsWorld.silence). */
  silence(): void;
  /** End the connections a silence kept open. */
  release(): void;
  close(): Promise<void>;
}

/** Forwards host:port to 127.0.0.1:target, byte for byte. */
async function relay(host: string, port: number, target: number): Promise<Relay> {
  const sockets = new Set<Socket>();
  let silent = false;
  const held: Socket[] = [];
  const server: Server = createServer((socket) => {
    const upstream = createConnection({ host: '127.0.0.1', port: target });
    sockets.add(socket);
    sockets.add(upstream);
    socket.pipe(upstream).pipe(socket);
    const end = () => {
      // A silent instance's peer hears nothing, not even that the connection ended.
      if (silent) return;
      socket.destroy();
      upstream.destroy();
      sockets.delete(socket);
      sockets.delete(upstream);
    };
    socket.on('error', end);
    upstream.on('error', end);
    socket.on('close', end);
    upstream.on('close', end);
  });
  // The fake hands a terminated instance's address to the next launch while the old relay may
  // still be closing: retry the bind for a moment.
  for (let attempt = 0; ; attempt++) {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 40) throw error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    cut: () => {
      for (const socket of [...sockets]) socket.destroy();
      sockets.clear();
    },
    silence: () => {
      silent = true;
      for (const socket of sockets) {
        socket.unpipe();
        socket.pause();
        held.push(socket);
      }
      sockets.clear();
    },
    release: () => {
      for (const socket of held.splice(0)) socket.destroy();
    },
    close: () =>
      new Promise<void>((resolve) => {
        // A vanished instance drops its connections too (unless it went silent: see silence()).
        for (const socket of sockets) socket.destroy();
        // Held connections would keep close() waiting: stop listening, do not wait for them.
        server.close(() => resolve());
        if (silent) resolve();
      }),
  };
}
