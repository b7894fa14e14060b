/**
 * Pure pieces of the SSH transport: validated connection info, the per-job file layout, the
 * OpenSSH client options, and the shell commands run on the instance. Nothing here starts a
 * process, so it is cheap to import and easy to test.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { SshConnectInfo } from '../../../manager/providers/provider.js';

/** known_hosts entries are looked up by this name, not by address (HostKeyAlias). */
export const HOST_KEY_ALIAS = 'runner-fleet-instance';

const HOST = /^[A-Za-z0-9][A-Za-z0-9.:-]*$/;
const USER = /^[a-z_][a-z0-9_.-]{0,31}$/i;
const HOST_KEY = /^(ssh-ed25519|ecdsa-sha2-nistp(?:256|384|521)|ssh-rsa) ([A-Za-z0-9+/]+={0,3})(?:\s.*)?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface ValidConnectInfo extends SshConnectInfo {
  /** The pinned key as `type base64` (comment dropped). */
  readonly pinnedKey: string;
  readonly keyType: string;
}

/** Checks the lease's connection info; throws a message without secrets when it is unusable. */
export function validateConnectInfo(info: SshConnectInfo): ValidConnectInfo {
  if (!HOST.test(info.host)) throw new Error(`invalid SSH host in lease: ${JSON.stringify(info.host)}`);
  if (!USER.test(info.user)) throw new Error(`invalid SSH user in lease: ${JSON.stringify(info.user)}`);
  if (!Number.isInteger(info.port) || info.port < 1 || info.port > 65535) {
    throw new Error(`invalid SSH port in lease: ${info.port}`);
  }
  if (!info.identityFile.startsWith('/'))
    throw new Error('SSH identity file in lease is not an absolute path');
  const match = HOST_KEY.exec(info.hostKey.trim());
  if (!match) throw new Error('pinned SSH host key in lease is not an OpenSSH public key line');
  return { ...info, keyType: match[1]!, pinnedKey: `${match[1]} ${match[2]}` };
}

export interface JobPaths {
  /** Local per-job directory (0700) under the job's TMPDIR: known_hosts, logs, master pid. */
  readonly dir: string;
  /** Where the control socket lives: `dir`, or a short directory under /tmp (see controlPath). */
  readonly socketDir: string;
  readonly controlPath: string;
  readonly knownHosts: string;
  readonly masterLog: string;
  readonly masterPidFile: string;
  /** Shared by the job's stages (one at a time); each reads what it appended. */
  readonly stageLog: string;
  /** Short stable id of the job, for names on the instance. */
  readonly jobKey: string;
}

// sun_path holds 108 bytes with the NUL, and ssh binds `<ControlPath>.<16 random chars>` first
// and renames it, so the path itself must stay within 90 bytes.
const MAX_CONTROL_PATH = 90;

export function jobPaths(jobTmpDir: string): JobPaths {
  const jobKey = createHash('sha256').update(jobTmpDir).digest('hex').slice(0, 16);
  const dir = join(jobTmpDir, '.runner-fleet-ssh');
  let socketDir = dir;
  if (Buffer.byteLength(join(dir, 'cm')) > MAX_CONTROL_PATH) socketDir = `/tmp/rf-ssh-${jobKey}`;
  return {
    dir,
    socketDir,
    controlPath: join(socketDir, 'cm'),
    knownHosts: join(dir, 'known_hosts'),
    masterLog: join(dir, 'master.log'),
    masterPidFile: join(dir, 'master.pid'),
    stageLog: join(dir, 'stage.log'),
    jobKey,
  };
}

export interface ClientTimings {
  readonly connectTimeoutS: number;
  readonly serverAliveIntervalS: number;
  readonly serverAliveCountMax: number;
}

/**
 * OpenSSH gives up after (ServerAliveCountMax + 1) unanswered keepalives, one per interval of
 * silence: 5 s × 5 = 25 s. That is how an instance that vanished without closing anything (no
 * FIN, no RST) is noticed mid-stage, so it sets how soon such a job ends (issue #14: within 30 s
 * of the loss). 25 s of total silence from sshd is not a busy instance: keepalives are answered
 * by sshd itself, not by the job.
 */
export const DEFAULT_TIMINGS: ClientTimings = {
  connectTimeoutS: 10,
  serverAliveIntervalS: 5,
  serverAliveCountMax: 4,
};

/** OpenSSH's default cipher set (all AEAD or CTR+MAC), reordered: see clientOptions. */
export const CIPHERS = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'chacha20-poly1305@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'aes256-ctr',
].join(',');

/**
 * Options common to every ssh the transport starts (master, stage, control). Each client carries
 * the full set, so a client that falls back to its own connection (no master) is pinned too.
 */
export function clientOptions(info: ValidConnectInfo, paths: JobPaths, timings = DEFAULT_TIMINGS): string[] {
  const o = (option: string) => ['-o', option];
  return [
    // No ssh_config: nothing on the manager host can weaken the pin or add a ProxyCommand, and
    // the client skips parsing files on every stage.
    '-F',
    'none',
    ...o('BatchMode=yes'),
    ...o('IdentitiesOnly=yes'),
    ...o('IdentityAgent=none'),
    ...o(`IdentityFile=${sshPath(info.identityFile)}`),
    ...o('PasswordAuthentication=no'),
    ...o('KbdInteractiveAuthentication=no'),
    ...o(`UserKnownHostsFile=${sshPath(paths.knownHosts)}`),
    ...o('GlobalKnownHostsFile=none'),
    ...o('StrictHostKeyChecking=yes'),
    ...o(`HostKeyAlias=${HOST_KEY_ALIAS}`),
    ...o(`HostKeyAlgorithms=${info.keyType}`),
    ...o('UpdateHostKeys=no'),
    ...o('CheckHostIP=no'),
    ...o('ForwardAgent=no'),
    ...o('ForwardX11=no'),
    ...o('ClearAllForwardings=yes'),
    // AES-GCM first: with AES instructions (current EC2 x86 and Graviton CPUs) OpenSSL runs it at
    // GB/s, while OpenSSH's default chacha20-poly1305 (its own Poly1305) bounds a stage's output
    // stream on both ends: 1.2–2.0× the job log throughput on loopback (bench/ssh.ts). The rest
    // is OpenSSH's default set, so an sshd offering only those still connects.
    ...o(`Ciphers=${CIPHERS}`),
    ...o(`ConnectTimeout=${timings.connectTimeoutS}`),
    ...o(`ServerAliveInterval=${timings.serverAliveIntervalS}`),
    ...o(`ServerAliveCountMax=${timings.serverAliveCountMax}`),
    ...o(`ControlPath=${sshPath(paths.controlPath)}`),
    ...o('LogLevel=ERROR'),
    '-p',
    String(info.port),
    '-l',
    info.user,
    '-T',
  ];
}

/** ssh expands `%` tokens and splits some values on spaces: escape and quote local paths. */
function sshPath(path: string): string {
  if (/["\n]/.test(path)) throw new Error('paths with quotes or newlines cannot be passed to ssh');
  return `"${path.replaceAll('%', '%%')}"`;
}

export function knownHostsLine(info: ValidConnectInfo): string {
  return `${HOST_KEY_ALIAS} ${info.pinnedKey}\n`;
}

/**
 * Name of the file in which the stage's shell records its pid (= process group = session) on the
 * instance. It lives in /dev/shm (tmpfs: creating it costs microseconds, against ~0.3 ms on an
 * ext4 /tmp, which is measurable per stage), or in /tmp where there is no /dev/shm.
 */
export function remotePidName(jobKey: string, stageToken: string): string {
  return `.runner-fleet-${jobKey}-${stageToken}.pid`;
}

/**
 * The command sshd runs for a stage, through the login shell (sshd makes that shell a session
 * and process group leader). It records its pid, moves the channel's stdin to fd 3 so the
 * script's own commands read /dev/null, and runs the streamed script from fd 3: sourced by the
 * login shell itself when that is bash, so a stage costs no more processes than `ssh host true`.
 * Trade-off: if that shell itself dies by a signal, ssh reports 255 (OpenSSH's client does not
 * relay exit-signal); commands inside the script that die by a signal still give 128+N.
 */
export function stageCommand(pidName: string, scriptBytes?: number): string {
  // With input after the script: read exactly the script's bytes (LC_ALL=C: -N counts bytes,
  // whatever the login's locale), leaving fd 3 open on the input for the script to hand on.
  const readExactly = `LC_ALL=C IFS= read -r -d '' -N ${scriptBytes} -u 3 rf_t; eval "unset rf_t; $rf_t"`;
  return [
    `{ echo $$ >/dev/shm/${pidName}; } 2>/dev/null || echo $$ >/tmp/${pidName}`,
    'exec 3<&0 </dev/null',
    scriptBytes === undefined
      ? 'if [ -n "$BASH_VERSION" ]; then . /dev/fd/3; else exec bash /dev/fd/3; fi'
      : `if [ -n "$BASH_VERSION" ]; then ${readExactly}; else exec bash -c ${shellQuote(readExactly)}; fi`,
  ].join('; ');
}

/**
 * Streamed in front of the script, on its first line so line numbers in bash errors stay right
 * (the script's shebang line becomes a comment). fd 3 is closed once bash has the script, unless
 * input follows the script there (see stageCommand).
 */
export function scriptPrefix(env: Readonly<Record<string, string>>, inputFollows = false): string {
  const parts = inputFollows ? [] : ['exec 3<&-;'];
  for (const [name, value] of Object.entries(env)) {
    if (!ENV_NAME.test(name)) throw new Error(`invalid environment variable name for the stage: ${name}`);
    parts.push(`export ${name}=${shellQuote(value)};`);
  }
  return `${parts.join(' ')} `;
}

export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Signals the stage's session on the instance: its process group, and with pkill every process
 * of the session that moved to a group of its own. Waits up to 1 s for the pid file, for a
 * cancel that arrives while the stage is still starting.
 */
export function killCommand(pidName: string, signal: 'TERM' | 'KILL'): string {
  return [
    'i=0',
    `while :; do for f in /dev/shm/${pidName} /tmp/${pidName}; do [ -s "$f" ] && break 2; done; [ "$i" -ge 10 ] && exit 0; sleep 0.1; i=$((i+1)); done`,
    'read p <"$f" 2>/dev/null || exit 0',
    "case $p in ''|*[!0-9]*) exit 0;; esac",
    `kill -${signal} -$p 2>/dev/null`,
    `pkill -${signal} -s $p 2>/dev/null`,
    'exit 0',
  ].join('; ');
}

/** Run by close(): the pid files of this job's stages. */
export function cleanupCommand(jobKey: string): string {
  return `rm -f /dev/shm/.runner-fleet-${jobKey}-*.pid /tmp/.runner-fleet-${jobKey}-*.pid`;
}
