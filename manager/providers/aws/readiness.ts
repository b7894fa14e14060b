/**
 * Readiness probes for an AWS instance, after EC2 says `running`: the SSH port accepts a TCP
 * connection, then `instance_ready_command` succeeds over SSH with the pinned host key.
 *
 * The command is run by spawning the OpenSSH client, as the run hook's transport does, rather
 * than through the transport itself: the transport is built around a job (its TMPDIR, a
 * ControlMaster, stage scripts); a readiness probe is one short command with no job. The trust
 * settings are the same: a one-line known_hosts with the pinned key, StrictHostKeyChecking=yes,
 * no ssh_config, no agent, only the instance's own identity file.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import type { SshConnectInfo } from '../provider.js';

const HOST_KEY_ALIAS = 'runner-fleet-instance';

export function tcpReachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export interface SshRunResult {
  readonly ok: boolean;
  readonly code: number | null;
  /** Last lines of stderr (never stdout: the command's output is not logged). */
  readonly stderr: string;
}

/** Runs `command` on the instance; `dir` (0700, the instance's key directory) holds known_hosts. */
export async function sshRun(
  info: SshConnectInfo,
  dir: string,
  command: string,
  timeoutMs: number,
): Promise<SshRunResult> {
  const knownHosts = join(dir, 'known_hosts');
  await writeFile(knownHosts, `${HOST_KEY_ALIAS} ${info.hostKey}\n`, { mode: 0o600 });
  const args = [
    '-F',
    '/dev/null',
    '-i',
    info.identityFile,
    '-p',
    String(info.port),
    '-l',
    info.user,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'IdentityAgent=none',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${knownHosts}`,
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    `HostKeyAlias=${HOST_KEY_ALIAS}`,
    '-o',
    `ConnectTimeout=${Math.max(1, Math.ceil(Math.min(timeoutMs, 10_000) / 1000))}`,
    '-o',
    'LogLevel=ERROR',
    '-T',
    '--',
    info.host,
    command,
  ];
  return new Promise((resolve) => {
    const child = spawn('ssh', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-2000);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, code: null, stderr: error.message });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0, code, stderr: stderr.trim() });
    });
  });
}
