/**
 * The daemon: wires config, provider, fleet and control socket together, and owns the process
 * life cycle (signals, clean stop). The logic lives in the modules it wires.
 */
import { mkdirSync } from 'node:fs';
import type { Server } from 'node:net';
import type { Logger } from 'pino';
import type { ContainerSettings } from '../executor/container/spec.js';
import type { Config } from './config/schema.js';
import { JobSecrets } from './control/job-secrets.js';
import { ensureOperatorToken } from './control/operator-token.js';
import type { ControlRequest, ExecutorConfig, JobInfo, Lease, StatusReport } from './control/protocol.js';
import { ControlError, listenControl } from './control/server.js';
import { type IdTokenVerifier, selectCredentials, verifierFor } from './credentials/index.js';
import { type CredentialChoice, Fleet, FleetError, type FleetTuning } from './fleet/fleet.js';
import { gitlabJobChecker, jobCheckUrl } from './fleet/job-check.js';
import { LeaseJournal } from './fleet/lease-journal.js';
import { loadLaunchKey } from './fleet/provenance.js';
import { launchShapeOf } from './fleet/shape.js';
import { fleetTuningFrom } from './fleet/tuning.js';
import { FleetMetrics, instrumentProvider } from './metrics/metrics.js';
import { type MetricsServer, startMetricsServer } from './metrics/server.js';
import { createProvider } from './providers/create.js';
import type { LaunchShape, Provider } from './providers/provider.js';
import { version } from './version.js';

export interface RunningDaemon {
  readonly fleet: Fleet;
  readonly provider: Provider;
  stop(reason: string): Promise<void>;
}

export async function startDaemon(config: Config, log: Logger): Promise<RunningDaemon> {
  mkdirSync(config.state_dir, { recursive: true, mode: 0o700 });
  const startedAt = new Date();
  // Metrics only when asked for: then every provider call is counted on its way through.
  const metrics = config.metrics.listen ? new FleetMetrics({ processMetrics: true }) : undefined;
  const rawProvider = await createProvider(config, log);
  const provider = metrics
    ? instrumentProvider(rawProvider, (op, error) => metrics.operation(op, error))
    : rawProvider;
  const journal = new LeaseJournal(config.state_dir);
  const checkUrl = jobCheckUrl(config);
  if (!checkUrl)
    log.warn(
      'job checks are off: no [gitlab] url (nor [credentials] gitlab_url), so leases of jobs that ended without cleanup end only at max_job_lifetime',
    );
  const fleet = new Fleet({
    provider,
    journal,
    log,
    fleetName: config.fleet_name,
    managerId: config.manager_id,
    tuning: fleetTuning(config),
    // Kept across restarts: instances launched before one must still prove they are ours.
    launchKey: loadLaunchKey(config.state_dir),
    ...(checkUrl
      ? { jobChecker: gitlabJobChecker({ gitlabUrl: checkUrl, timeoutMs: config.pool.job_check_timeout }) }
      : {}),
    ...(metrics ? { observer: metrics } : {}),
  });
  metrics?.attach(fleet);

  const verifier = verifierFor(config.credentials);
  // No job outlives its instance (dead-man switch) plus the wait for it; a day more for slack.
  const secrets = new JobSecrets(
    config.state_dir,
    config.pool.max_instance_lifetime + config.pool.instance_acquire_timeout + 86_400_000,
  );
  const busy = (jobId: string) => fleet.leaseOf(jobId) !== undefined;
  const stopWatching = new AbortController();

  /** Every op but ping proves who sends it: the job's own secret, or the operator's token. */
  const authorize = (request: ControlRequest) => {
    switch (request.op) {
      case 'ping':
      case 'config':
        return;
      case 'acquire':
        return secrets.check(request.job.id, request.jobSecret);
      case 'release':
      case 'lease':
      case 'fate':
        return secrets.check(request.jobId, request.jobSecret);
      case 'status':
      case 'drain':
        if (!operator.check(request.operatorToken))
          throw new ControlError(
            `${request.op} is an operator op: it needs the operator token from ${operator.path} (readable by root and the daemon's user), not a job's credentials`,
            'unauthorized',
          );
    }
  };

  const handle = async (
    request: ControlRequest,
    reply: { progress(message: string): void; signal: AbortSignal },
  ): Promise<unknown> => {
    authorize(request);
    switch (request.op) {
      case 'ping':
        // Also what a second daemon started on this state by mistake names in its refusal.
        return { pid: process.pid, version: version(), config: config.source };
      case 'config':
        return {
          ...executorConfig(config, provider, request.jobId),
          jobSecret: secrets.mint(request.jobId, Date.now(), busy, request.jobSecret),
        };
      case 'acquire': {
        const jobLog = log.child({ jobId: request.job.id });
        jobLog.info(
          { projectPath: request.job.projectPath, projectId: request.job.projectId },
          'acquire requested',
        );
        const credentials = await chooseCredentials(config, verifier, request.job);
        jobLog.info(
          { credentialClass: credentials.credentialClass, rule: credentials.ruleName },
          'credentials chosen',
        );
        try {
          const grant = await fleet.acquire(request.job, credentials, reply.progress, reply.signal);
          const lease: Lease = {
            jobId: grant.jobId,
            instanceId: grant.instanceId,
            provider: provider.name,
            connect: grant.connect,
            leasedAt: new Date(grant.leasedAt).toISOString(),
            killGraceMs: config.executor.kill_grace,
            notes: [...credentials.notes, `Waited ${(grant.waitedMs / 1000).toFixed(1)} s for the instance`],
          };
          return lease;
        } catch (error) {
          if (error instanceof FleetError) throw new ControlError(error.message, error.code);
          throw error;
        }
      }
      case 'release': {
        const result = await fleet.release(request.jobId, request.reason ?? 'cleanup', request.instanceId);
        secrets.released(request.jobId);
        return result;
      }
      case 'lease': {
        const entry = fleet.leaseOf(request.jobId);
        if (!entry) throw new ControlError(`job ${request.jobId} holds no lease`, 'no-lease');
        const lease: Lease = {
          jobId: entry.jobId,
          instanceId: entry.instanceId,
          provider: provider.name,
          connect: await fleet.connectInfo(entry.instanceId),
          leasedAt: entry.leasedAt,
          killGraceMs: config.executor.kill_grace,
          notes: [],
        };
        return lease;
      }
      case 'fate': {
        // Asked by a run hook whose stage failed as a system failure (name the cause if we can),
        // or held open by one during a stage (`wait`: answer when the listing reports the
        // instance gone, so a stage on a silent, vanished instance ends then).
        const entry = fleet.leaseOf(request.jobId);
        if (!entry) return { cause: undefined };
        const loss = request.wait
          ? await fleet.watchLoss(request.jobId, AbortSignal.any([reply.signal, stopWatching.signal]))
          : fleet.lossOf(request.jobId);
        // `waited`: this daemon understood `wait` (an older one answers at once, without it).
        if (request.wait && !loss) return { cause: undefined, waited: true };
        const explained = await Promise.race([
          provider.explainGone?.(entry.instanceId).catch(() => undefined),
          new Promise<undefined>((r) => setTimeout(() => r(undefined), 4000).unref()),
        ]);
        const cause = explained ?? (loss ? `the instance is gone: ${loss.why}` : undefined);
        if (cause)
          log.warn({ jobId: entry.jobId, instanceId: entry.instanceId, cause }, 'job lost its instance');
        return { instanceId: entry.instanceId, cause };
      }
      case 'status':
        return statusReport(config, fleet, provider, startedAt);
      case 'drain':
        fleet.drain();
        if (request.wait) {
          while (fleet.leasedCount() > 0 && !reply.signal.aborted) {
            reply.progress(`waiting for ${fleet.leasedCount()} running job(s)`);
            await new Promise((r) => setTimeout(r, 1000));
          }
        }
        return { draining: true, leased: fleet.leasedCount() };
    }
  };

  // Claim the control socket before touching any instance: a second daemon started on the same
  // state by mistake must refuse before its first listing, not after adopting or scaling anything.
  // Requests that arrive meanwhile wait until the fleet has rebuilt its view.
  let fleetStarted!: () => void;
  const started = new Promise<void>((resolve) => {
    fleetStarted = resolve;
  });
  const server: Server = await listenControl(
    config.socket,
    async (request, reply) => {
      await started;
      return handle(request, reply);
    },
    log.child({ module: 'control' }),
  );
  // After the socket is ours (a second daemon must not replace the token), before any request is
  // handled (they wait for `started`).
  const operator = ensureOperatorToken(config.socket);
  try {
    await fleet.start();
  } catch (error) {
    server.close();
    throw error;
  }
  fleetStarted();
  let metricsServer: MetricsServer | undefined;
  if (metrics) {
    try {
      metricsServer = await startMetricsServer(
        config.metrics.listen,
        metrics.registry,
        () => fleet.health(),
        log.child({ module: 'metrics' }),
      );
    } catch (error) {
      server.close();
      await fleet.stop();
      throw new Error(`cannot listen for metrics on ${config.metrics.listen}: ${(error as Error).message}`);
    }
  }
  log.info(
    {
      version: version(),
      provider: provider.name,
      fleet: config.fleet_name,
      managerId: config.manager_id,
      socket: config.socket,
      stateDir: config.state_dir,
      config: config.source,
    },
    'runner-fleet daemon started',
  );

  let stopping: Promise<void> | undefined;
  const stop = (reason: string) => {
    // Held `fate` waits end now, or closing the socket would wait for every running stage.
    stopWatching.abort();
    stopping ??= (async () => {
      log.info(
        { reason, leased: fleet.leasedCount() },
        'daemon stopping; instances and leases stay for the next start',
      );
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (config.pool.delete_instances_on_shutdown) {
        log.warn({ leased: fleet.leasedCount() }, 'delete_instances_on_shutdown: terminating every instance');
        await fleet.terminateAll();
      }
      await fleet.stop();
      await metricsServer?.close();
      log.info('daemon stopped');
    })();
    return stopping;
  };
  return { fleet, provider, stop };
}

export function fleetTuning(config: Config): FleetTuning {
  return fleetTuningFrom(config);
}

/**
 * The job's credential class and instance profile, from the verified claims of its GitLab ID
 * token only (job variables prove nothing). Reuse isolation keys on the verified project, or on
 * the project id from gitlab-runner's job response, never on a job variable.
 */
async function chooseCredentials(
  config: Config,
  verifier: IdTokenVerifier | undefined,
  job: JobInfo,
): Promise<CredentialChoice & { ruleName?: string }> {
  const verification =
    job.idToken && verifier
      ? await verifier.verify(job.idToken, {
          jobId: job.id,
          projectPath: job.projectPath ?? '',
          ...(job.projectId ? { projectId: job.projectId } : {}),
        })
      : job.idToken
        ? { ok: false as const, reason: 'ID tokens are not checked: [credentials] gitlab_url is not set' }
        : undefined;
  if (
    verification &&
    !verification.ok &&
    verification.transient &&
    config.credentials.whenJwksUnavailable === 'fail'
  ) {
    // A deploy job run without its role fails later and less clearly; GitLab can retry this one.
    throw new ControlError(
      `the job's ID token could not be checked (${verification.reason}); [credentials] when_jwks_unavailable = "fail"`,
      'credentials-unavailable',
    );
  }
  const selection = selectCredentials(config.credentials, verification);
  const project = selection.verifiedProject ?? (job.projectId ? `project-id:${job.projectId}` : undefined);
  // The rule's launch template, subnets and instance type decide where the job's instance runs.
  const shape = launchShapeOf(selection.overrides);
  return {
    credentialClass: selection.credentialClass,
    ...(selection.instanceProfile ? { instanceProfile: selection.instanceProfile } : {}),
    // Containers reach the instance profile through IMDSv2 one hop further; bare jobs keep theirs.
    hopLimit: job.container ? Math.max(2, selection.hopLimit) : selection.hopLimit,
    ...(project ? { reuseScope: project } : {}),
    ...(shape ? { shape } : {}),
    ...(selection.ruleName ? { ruleName: selection.ruleName } : {}),
    notes: [selection.logLine],
  };
}

function containerSettings(config: Config, buildsDir: string): ContainerSettings {
  const c = config.container;
  return {
    ...(c.default_image ? { defaultImage: c.default_image } : {}),
    allowedImages: c.allowed_images,
    allowedServices: c.allowed_services,
    allowedPullPolicies: c.allowed_pull_policies,
    pullPolicy: c.pull_policy,
    ...(c.docker_host ? { dockerHost: c.docker_host } : {}),
    serviceWaitMs: c.service_wait_timeout,
    ...(c.docker_auth_config_file ? { dockerAuthConfigFile: c.docker_auth_config_file } : {}),
    buildsDir,
  };
}

function executorConfig(
  config: Config,
  provider: Provider,
  jobId: string,
): Omit<ExecutorConfig, 'jobSecret'> {
  const paths = provider.jobPaths?.(jobId) ?? {
    buildsDir: config.executor.builds_dir,
    cacheDir: config.executor.cache_dir,
  };
  return {
    builds_dir: paths.buildsDir,
    cache_dir: paths.cacheDir,
    builds_dir_is_shared: false,
    hostname: `runner-fleet-${config.fleet_name}`,
    driver: { name: `runner-fleet (${provider.name})`, version: version() },
    shell: 'bash',
    idTokenVariable: config.credentials.tokenVariable,
    daemonWaitMs: config.executor.daemon_wait,
    container: containerSettings(config, paths.buildsDir),
  };
}

function statusReport(config: Config, fleet: Fleet, provider: Provider, startedAt: Date): StatusReport {
  const snapshot = fleet.snapshot();
  const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());
  return {
    manager: {
      id: config.manager_id,
      fleet: config.fleet_name,
      provider: provider.name,
      pid: process.pid,
      startedAt: startedAt.toISOString(),
      version: version(),
      draining: fleet.isDraining,
    },
    instances: snapshot.instances.map((i) => ({
      id: i.id,
      state: i.state,
      jobId: i.jobId ?? null,
      provider: provider.name,
      createdAt: new Date(i.createdAt).toISOString(),
      readyAt: iso(i.readyAt),
      leasedAt: iso(i.leasedAt),
      useCount: i.useCount,
      shape: i.shape,
      detail: i.detail,
    })),
    leases: snapshot.instances
      .filter((i) => i.state === 'leased' && i.jobId)
      .map((i) => ({ jobId: i.jobId as string, instanceId: i.id, leasedAt: iso(i.leasedAt) as string })),
    waiting: snapshot.waiting,
    foreign: snapshot.foreign.map((f) => ({
      id: f.id,
      why: f.why,
      seenAt: new Date(f.seenAt).toISOString(),
      launchedAt: new Date(f.launchedAt).toISOString(),
    })),
    shapes: ruleShapes(config),
  };
}

/** The launch shapes of the credential rules, each with the rules that launch with it. */
function ruleShapes(config: Config): NonNullable<StatusReport['shapes']> {
  const shapes = new Map<string, { shape: LaunchShape; rules: string[] }>();
  for (const rule of config.credentials.rules) {
    const shape = launchShapeOf(rule.overrides);
    if (!shape) continue;
    const entry = shapes.get(shape.key) ?? { shape, rules: [] };
    entry.rules.push(rule.name);
    shapes.set(shape.key, entry);
  }
  return [...shapes.values()].map(({ shape, rules }) => ({ ...shape, rules }));
}
