/**
 * SSH transport: runs each stage script on the instance through the OpenSSH client, so the
 * channel's throughput and per-stage cost are OpenSSH's own.
 *
 * - One connection per job: the first stage starts a ControlMaster (ControlPersist) whose socket
 *   lives in the job's TMPDIR; later stages, possibly other `run` processes, multiplex over it
 *   and `close()` (cleanup hook) ends it. The master runs in its own session, outside the hook's
 *   process group and outside the daemon, so neither a signal to the hook nor a daemon restart
 *   cuts it.
 * - Host key pinned: a one-line known_hosts with the lease's key under a fixed HostKeyAlias,
 *   StrictHostKeyChecking=yes, no ssh_config read.
 * - The script goes over the channel's stdin and is read by bash from a pipe: nothing lands on
 *   the instance's disk. stdout/stderr are the hook's own descriptors, handed to ssh (and by ssh
 *   to the master), so output is relayed in order and with back-pressure without passing
 *   through this process.
 * - Cancel: the stage's shell is a session leader on the instance and records its pid; a second
 *   ssh signals that session (TERM, then KILL after the grace period). Every wait is bounded,
 *   and if the instance cannot be reached the local ssh is killed.
 *
 * Imports node built-ins only: the run hook starts per stage and must stay light.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstatSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SshConnectInfo } from '../../manager/providers/provider.js';
import {
  type ClientTimings,
  cleanupCommand,
  clientOptions,
  DEFAULT_TIMINGS,
  type JobPaths,
  jobPaths,
  killCommand,
  knownHostsLine,
  remotePidName,
  scriptPrefix,
  stageCommand,
  type ValidConnectInfo,
  validateConnectInfo,
} from './ssh/args.js';
import { classifySshLog, describeFailure, type SshFailure } from './ssh/classify.js';
import type { StageOutcome, StageRequest, Transport } from './transport.js';

export interface SshTransportOptions {
  /** The OpenSSH client (default `ssh` from PATH). */
  readonly sshPath?: string;
  /** How long to keep retrying the first connection of a job, e.g. while the instance boots. */
  readonly connectBudgetMs?: number;
  /** Per-attempt connect timeout, keepalive interval and count. */
  readonly timings?: Partial<ClientTimings>;
  /** Idle time after which an orphaned master (cleanup never ran) exits by itself. */
  readonly controlPersistS?: number;
  /** Bound on each control command (signal the stage, close the master). */
  readonly controlTimeoutMs?: number;
  /** Descriptors for the script's stdout and stderr; default: this process's own (the job log). */
  readonly stdout?: number;
  readonly stderr?: number;
}

const CANCELED: StageOutcome = { kind: 'canceled' };

function systemFailure(
  message: string,
  extra: { instanceLost?: boolean; cause?: string } = {},
): StageOutcome {
  return { kind: 'system-failure', message, ...extra };
}

/** How often a failing connect asks probeGone again (each answer may cost the daemon an API call). */
const PROBE_INTERVAL_MS = 10_000;

export function createSshTransport(info: SshConnectInfo, options: SshTransportOptions = {}): SshTransport {
  return new SshTransport(info, options);
}

export class SshTransport implements Transport {
  private readonly ssh: string;
  private readonly connectBudgetMs: number;
  private readonly timings: ClientTimings;
  private readonly controlPersistS: number;
  private readonly controlTimeoutMs: number;
  private readonly stdout: number | 'inherit';
  private readonly stderr: number | 'inherit';

  constructor(
    private readonly info: SshConnectInfo,
    options: SshTransportOptions = {},
  ) {
    this.ssh = options.sshPath ?? 'ssh';
    this.connectBudgetMs = options.connectBudgetMs ?? 60_000;
    this.timings = { ...DEFAULT_TIMINGS, ...options.timings };
    this.controlPersistS = options.controlPersistS ?? 600;
    this.controlTimeoutMs = options.controlTimeoutMs ?? 5_000;
    this.stdout = options.stdout ?? 'inherit';
    this.stderr = options.stderr ?? 'inherit';
  }

  async runStage(request: StageRequest, signal: AbortSignal): Promise<StageOutcome> {
    if (signal.aborted) return CANCELED;
    // Input follows only a content script (a file of gitlab-runner's is read to its end).
    const input = request.script !== undefined ? request.input : undefined;
    let info: ValidConnectInfo;
    let prefix: string;
    try {
      info = validateConnectInfo(this.info);
      prefix = scriptPrefix(request.env, input !== undefined);
    } catch (error) {
      return systemFailure((error as Error).message);
    }
    let script: Buffer;
    try {
      // Synchronous file work throughout the stage path: the hook has nothing else to do, and a
      // thread-pool round trip per call is measurable in per-stage overhead.
      script = request.script ?? readFileSync(request.scriptPath);
    } catch (error) {
      return systemFailure(
        `cannot read the script of stage ${request.stage}: ${(error as NodeJS.ErrnoException).code}`,
      );
    }
    const paths = jobPaths(request.jobTmpDir);
    const notReady = await this.ensureMaster(info, paths, signal, request.probeGone);
    if (notReady) return notReady;

    const token = randomBytes(8).toString('hex');
    const pidName = remotePidName(paths.jobKey, token);
    const logOffset = fileSize(paths.stageLog);
    const args = [
      ...clientOptions(info, paths, this.timings),
      '-E',
      paths.stageLog,
      '-o',
      'ControlMaster=no',
      '--',
      info.host,
      stageCommand(pidName, input === undefined ? undefined : Buffer.byteLength(prefix) + script.length),
    ];
    // Its own session: gitlab-runner's SIGTERM to the hook's process group must not end ssh before
    // the remote tree is told, and output the script writes while it stops still reaches the log.
    const child = spawn(this.ssh, args, { detached: true, stdio: ['pipe', this.stdout, this.stderr] });
    const exited = waitForExit(child);
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    child.stdin!.on('error', () => {
      // ssh ended before reading the whole script; its exit status tells why.
    });
    child.stdin!.write(prefix);
    if (input === undefined) {
      child.stdin!.end(script);
    } else {
      child.stdin!.write(script);
      child.stdin!.end(input);
    }

    try {
      let onAbort = () => {};
      const aborted = new Promise<'aborted'>((resolve) => {
        onAbort = () => resolve('aborted');
        signal.addEventListener('abort', onAbort, { once: true });
      });
      const lost = request.lost?.then((cause) => ({ lost: cause })) ?? new Promise<never>(() => undefined);
      const first = await Promise.race([exited, aborted, lost]);
      signal.removeEventListener('abort', onAbort);
      if (first === 'aborted' || signal.aborted) {
        await this.cancelStage(info, paths, pidName, child, exited, request.killGraceMs);
        return CANCELED;
      }
      if ('lost' in first) {
        // Nothing on the instance can be told any more: stop waiting for it here. The master
        // too: it holds this stage's output pipes (the client passed them over the control
        // socket), and gitlab-runner waits for them to close until the keepalive gives up.
        child.kill('SIGKILL');
        await killMaster(paths);
        await Promise.race([exited, new Promise((r) => setTimeout(r, 1_000).unref())]);
        return systemFailure('the manager reports the instance gone mid-stage', {
          instanceLost: true,
          cause: first.lost,
        });
      }
      return await this.outcome(info, paths, first, logOffset);
    } finally {
      process.removeListener('exit', killOnExit);
    }
  }

  async close(jobTmpDir: string): Promise<void> {
    const paths = jobPaths(jobTmpDir);
    let info: ValidConnectInfo | undefined;
    try {
      info = validateConnectInfo(this.info);
    } catch {
      // Without usable connection info there is no master to reach; clean up locally.
    }
    if (info && isSocket(paths.controlPath)) {
      await this.control(info, paths, cleanupCommand(paths.jobKey));
      await runProcess(
        this.ssh,
        [...clientOptions(info, paths, this.timings), '-O', 'exit', '--', info.host],
        {
          timeoutMs: this.controlTimeoutMs,
        },
      );
    }
    // A master that did not answer (network hung) is ended by pid, after checking it is ours.
    const pid = readMasterPid(paths);
    if (pid !== undefined && !(await waitUntil(() => !isOurMaster(pid, paths), 1_000)))
      await killMaster(paths);
    await rm(paths.dir, { recursive: true, force: true });
    if (paths.socketDir !== paths.dir) await rm(paths.socketDir, { recursive: true, force: true });
  }

  /** Starts the job's master unless one is listening; retries while the instance is unreachable. */
  private async ensureMaster(
    info: ValidConnectInfo,
    paths: JobPaths,
    signal: AbortSignal,
    probeGone?: () => Promise<string | undefined>,
  ): Promise<StageOutcome | undefined> {
    if (isSocket(paths.controlPath)) {
      const pid = readMasterPid(paths);
      if (pid === undefined || isOurMaster(pid, paths)) return undefined;
      // A master killed outright leaves its socket behind; clients would each fall back to a
      // fresh connection. Start a new master instead.
      await rm(paths.controlPath, { force: true });
    }
    for (const dir of new Set([paths.dir, paths.socketDir])) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
    }
    await writeFile(paths.knownHosts, knownHostsLine(info), { mode: 0o600 });
    const args = [
      ...clientOptions(info, paths, this.timings),
      '-E',
      paths.masterLog,
      '-o',
      'ControlMaster=yes',
      '-o',
      `ControlPersist=${this.controlPersistS}`,
      '-N',
      '-f',
      '--',
      info.host,
    ];
    const started = Date.now();
    let attempts = 0;
    let last: SshFailure = { kind: 'unreachable', detail: 'no attempt made' };
    let lastProbe = Number.NEGATIVE_INFINITY;
    for (;;) {
      if (signal.aborted) return CANCELED;
      attempts++;
      await rm(paths.masterLog, { force: true });
      // -f: ssh forks once authenticated and the control socket listens, then this process exits.
      // detached: the master must outlive the hook and stay out of its process group.
      const result = await runProcess(this.ssh, args, {
        detached: true,
        timeoutMs: (this.timings.connectTimeoutS + 10) * 1000,
      });
      if (result.code === 0) {
        await this.recordMasterPid(info, paths);
        return undefined;
      }
      if (signal.aborted) return CANCELED;
      const log = await readFile(paths.masterLog, 'utf8').catch(() => '');
      last = classifySshLog(log) ?? {
        kind: 'unreachable',
        detail: result.timedOut
          ? 'connection attempt timed out'
          : `ssh ended with ${result.code ?? result.signal}`,
      };
      // The daemon leased this instance only after it accepted the pinned key pair, so a refusal
      // now is not boot noise: say so at once.
      if (last.kind === 'host-key' || last.kind === 'auth') return systemFailure(describeFailure(last, info));
      // A reclaimed instance never answers again: ask whether it is known to be gone rather than
      // spend the whole budget (the budget is for instances that are slow, not dead).
      if (probeGone && Date.now() - lastProbe >= PROBE_INTERVAL_MS) {
        lastProbe = Date.now();
        const cause = await probeGone();
        if (signal.aborted) return CANCELED;
        if (cause) {
          return systemFailure(describeFailure({ kind: 'unreachable', detail: last.detail }, info), {
            instanceLost: true,
            cause,
          });
        }
      }
      const wait = Math.min(250 * 2 ** (attempts - 1), 4_000);
      if (Date.now() - started + wait > this.connectBudgetMs) break;
      await delay(wait, signal);
    }
    const seconds = Math.round((Date.now() - started) / 1000);
    const kind = last.kind === 'other' ? 'other' : 'unreachable';
    return systemFailure(
      `${describeFailure({ kind, detail: last.detail }, info)}; gave up after ${attempts} attempt(s) in ${seconds} s`,
      { instanceLost: true },
    );
  }

  private async recordMasterPid(info: ValidConnectInfo, paths: JobPaths): Promise<void> {
    const check = await runProcess(
      this.ssh,
      [...clientOptions(info, paths, this.timings), '-O', 'check', '--', info.host],
      {
        timeoutMs: this.controlTimeoutMs,
        captureStderr: true,
      },
    );
    const pid = /pid=(\d+)/.exec(check.stderr)?.[1];
    if (pid) await writeFile(paths.masterPidFile, `${pid}\n`, { mode: 0o600 });
  }

  private async outcome(
    info: ValidConnectInfo,
    paths: JobPaths,
    exit: Exit,
    logOffset: number,
  ): Promise<StageOutcome> {
    if (exit.error) return systemFailure(`cannot start ssh (${this.ssh}): ${exit.error.message}`);
    if (exit.code === null) return systemFailure(`the local ssh client was killed by ${exit.signal}`);
    if (exit.code !== 255) return { kind: 'exited', code: exit.code };
    // 255 is ssh's own failure code, and also a script's `exit 255`.
    const failure = classifySshLog(readFrom(paths.stageLog, logOffset));
    if (failure) {
      const lost = failure.kind === 'lost' || failure.kind === 'unreachable';
      return systemFailure(describeFailure(failure, info), lost ? { instanceLost: true } : {});
    }
    // A master that died with this stage means the connection was lost, not that the script failed.
    const pid = readMasterPid(paths);
    if (pid !== undefined && (await waitUntil(() => !isOurMaster(pid, paths), 300))) {
      const masterLog = await readFile(paths.masterLog, 'utf8').catch(() => '');
      const detail = classifySshLog(masterLog)?.detail ?? 'the multiplexed connection ended';
      return systemFailure(describeFailure({ kind: 'lost', detail }, info), { instanceLost: true });
    }
    return { kind: 'exited', code: 255 };
  }

  private async cancelStage(
    info: ValidConnectInfo,
    paths: JobPaths,
    pidName: string,
    child: ChildProcess,
    exited: Promise<Exit>,
    killGraceMs: number,
  ): Promise<void> {
    const ended = (ms: number) =>
      Promise.race([exited.then(() => true), new Promise<false>((r) => setTimeout(r, ms, false).unref())]);
    if (await this.control(info, paths, killCommand(pidName, 'TERM'))) {
      if (await ended(killGraceMs)) return;
      if ((await this.control(info, paths, killCommand(pidName, 'KILL'))) && (await ended(2_000))) return;
    }
    // The instance cannot be told (network hung, instance gone): stop waiting for it here. The
    // master goes too (it holds this stage's output until its keepalive gives up); the next stage
    // (after_script) connects afresh if the instance answers again.
    child.kill('SIGKILL');
    await killMaster(paths);
    await ended(1_000);
  }

  /** Runs a short command on the instance, over the master when there is one. Bounded. */
  private async control(info: ValidConnectInfo, paths: JobPaths, command: string): Promise<boolean> {
    const logFile = join(paths.dir, `control-${randomBytes(4).toString('hex')}.log`);
    const result = await runProcess(
      this.ssh,
      [
        ...clientOptions(info, paths, this.timings),
        '-E',
        logFile,
        '-o',
        'ControlMaster=no',
        '--',
        info.host,
        command,
      ],
      { timeoutMs: this.controlTimeoutMs },
    );
    await rm(logFile, { force: true });
    return result.code === 0;
  }
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly error?: Error;
}

function waitForExit(child: ChildProcess): Promise<Exit> {
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
}

interface RunResult extends Exit {
  readonly timedOut: boolean;
  readonly stderr: string;
}

/** Spawns a short-lived process and SIGKILLs it after `timeoutMs`. */
async function runProcess(
  command: string,
  args: string[],
  options: { timeoutMs: number; detached?: boolean; captureStderr?: boolean },
): Promise<RunResult> {
  const child = spawn(command, args, {
    detached: options.detached ?? false,
    stdio: ['ignore', 'ignore', options.captureStderr ? 'pipe' : 'ignore'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4096);
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs);
  const exit = await waitForExit(child);
  clearTimeout(timer);
  return { ...exit, timedOut, stderr };
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function readFrom(path: string, offset: number): string {
  try {
    return readFileSync(path).subarray(offset).toString('utf8');
  } catch {
    return '';
  }
}

function isSocket(path: string): boolean {
  try {
    return lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

/**
 * SIGKILLs the job's master if it is still ours (pids are reused) and waits briefly for it to
 * die, so that the pipes and sockets it held are closed when this resolves.
 */
async function killMaster(paths: JobPaths): Promise<void> {
  const pid = readMasterPid(paths);
  if (pid === undefined || !isOurMaster(pid, paths)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return; // gone meanwhile
  }
  await waitUntil(() => !isOurMaster(pid, paths), 1_000);
}

function readMasterPid(paths: JobPaths): number | undefined {
  try {
    const pid = Number(readFileSync(paths.masterPidFile, 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `pid` is still this job's master. Pids are reused, so the command line must name the
 * control socket; a zombie (a daemonized master is reaped by init, possibly late) has none.
 */
function isOurMaster(pid: number, paths: JobPaths): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(paths.controlPath);
  } catch {
    return false;
  }
}

async function waitUntil(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (condition()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
