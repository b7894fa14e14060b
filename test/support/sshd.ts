/**
 * A real OpenSSH sshd on 127.0.0.1 for tests and benchmarks: its own config, host key and
 * authorized_keys in a temporary directory, nothing of the system's sshd touched. One per fake
 * instance; `crash()` ends it with every session the way a vanished instance would.
 *
 *   const sshd = await startSshd({ authorizedKeys: [keys.client.publicKey] });
 *   … connect to sshd.host:sshd.port as sshd.user, pin sshd.hostKeyPublic …
 *   await sshd.stop();
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, publicKeyWithoutComment } from '../../manager/ssh/keys.js';

export const SSHD_PATH = '/usr/sbin/sshd';

export interface StartSshdOptions {
  /** Public key lines allowed to log in (written to a temporary authorized_keys file). */
  readonly authorizedKeys?: readonly string[];
  /** Use this authorized_keys file instead (e.g. one written by the user-data snippet). */
  readonly authorizedKeysFile?: string;
  /** Host key pair to serve; generated when absent. */
  readonly hostKey?: { readonly privateKey: string; readonly publicKey: string };
  /** Serve this existing host key file instead (its `.pub` sibling must exist). */
  readonly hostKeyFile?: string;
  /** Extra sshd_config lines, placed first: sshd keeps a keyword's first value, so they override. */
  readonly extraConfig?: readonly string[];
}

export interface Sshd {
  readonly host: string;
  readonly port: number;
  /** The user tests log in as: the user running the tests (root in CI). */
  readonly user: string;
  /** The served host key, `ssh-ed25519 AAAA…` (no comment): what a lease pins. */
  readonly hostKeyPublic: string;
  /** Temporary directory with the config, keys and the log. */
  readonly dir: string;
  /** The listener's pid. */
  readonly pid: number;
  /** sshd's own log so far (stderr, `-e`), for failure messages. */
  log(): string;
  /** Pids of the listener and every process below it (connections, sessions, scripts). */
  processTree(): number[];
  /** SIGSTOP / SIGCONT every process of the tree: a network that hangs without closing. */
  freeze(): void;
  thaw(): void;
  /** SIGKILL the whole tree at once: the instance vanished mid-session. */
  crash(): Promise<void>;
  /** Stop sshd and everything it started, remove its directory. Idempotent. */
  stop(): Promise<void>;
}

export function sshdInstalled(): boolean {
  return existsSync(SSHD_PATH);
}

export async function startSshd(options: StartSshdOptions = {}): Promise<Sshd> {
  if (!sshdInstalled()) {
    throw new Error(`${SSHD_PATH} not found: install the Debian package openssh-server (and openssh-client)`);
  }
  ensurePrivsepDir();
  const dir = await mkdtemp('/tmp/rf-sshd-');
  try {
    let hostKeyFile = options.hostKeyFile;
    let hostKeyPublic: string;
    if (hostKeyFile) {
      hostKeyPublic = publicKeyWithoutComment(readFileSync(`${hostKeyFile}.pub`, 'utf8'));
    } else {
      const pair = options.hostKey ?? generateKeyPair('test-sshd-host');
      hostKeyFile = join(dir, 'host_key');
      await writeFile(hostKeyFile, pair.privateKey, { mode: 0o600 });
      hostKeyPublic = publicKeyWithoutComment(pair.publicKey);
    }
    let authorizedKeysFile = options.authorizedKeysFile;
    if (!authorizedKeysFile) {
      authorizedKeysFile = join(dir, 'authorized_keys');
      const lines = (options.authorizedKeys ?? []).map((line) => `${line.trim()}\n`).join('');
      await writeFile(authorizedKeysFile, lines, { mode: 0o600 });
    }
    const user = userInfo().username;
    // The port is picked free and then handed to sshd; another process may grab it in between,
    // so a bind failure is retried with a new port.
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = await freePort();
      const configFile = join(dir, 'sshd_config');
      await writeFile(configFile, config(port, hostKeyFile, authorizedKeysFile, user, options.extraConfig), {
        mode: 0o600,
      });
      const child = spawn(SSHD_PATH, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
      let log = '';
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        log = (log + chunk).slice(-64 * 1024);
      });
      try {
        await waitForBanner(port, child, () => log);
      } catch (error) {
        child.kill('SIGKILL');
        lastError = error as Error;
        if (/Address already in use|Cannot bind/i.test(log)) continue;
        throw error;
      }
      return makeHandle({ child, dir, port, user, hostKeyPublic, log: () => log });
    }
    throw lastError ?? new Error('sshd did not start');
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

function config(
  port: number,
  hostKeyFile: string,
  authorizedKeysFile: string,
  user: string,
  extra: readonly string[] | undefined,
): string {
  return [
    ...(extra ?? []),
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${hostKeyFile}`,
    `AuthorizedKeysFile ${authorizedKeysFile}`,
    `AllowUsers ${user}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    // The temporary files live under /tmp, which StrictModes would reject.
    'StrictModes no',
    'PermitUserEnvironment no',
    'PermitUserRC no',
    'PrintMotd no',
    'PidFile none',
    'MaxSessions 64',
    'MaxStartups 64',
    'LoginGraceTime 30',
    // bash sources ~/.bashrc when started by sshd at SHLVL 0; a developer's rc file (pyenv, nvm)
    // would then add ~100 ms of noise to every session. Instances have a plain rc file.
    'SetEnv SHLVL=1',
    'LogLevel ERROR',
    '',
  ].join('\n');
}

function makeHandle(args: {
  child: ChildProcess;
  dir: string;
  port: number;
  user: string;
  hostKeyPublic: string;
  log: () => string;
}): Sshd {
  const { child, dir } = args;
  const pid = child.pid!;
  let stopped = false;
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const tree = () => (child.exitCode === null && child.signalCode === null ? [pid, ...descendants(pid)] : []);
  const signalAll = (pids: number[], signal: NodeJS.Signals) => {
    for (const p of pids) {
      try {
        process.kill(p, signal);
      } catch {
        // already gone
      }
    }
  };
  const crash = async () => {
    // Collect first: once the listener dies its children are re-parented and lost from view.
    signalAll(tree(), 'SIGKILL');
    await exited;
  };
  return {
    host: '127.0.0.1',
    port: args.port,
    user: args.user,
    hostKeyPublic: args.hostKeyPublic,
    dir,
    pid,
    log: args.log,
    processTree: tree,
    freeze: () => signalAll(tree(), 'SIGSTOP'),
    thaw: () => signalAll(tree(), 'SIGCONT'),
    crash,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      const pids = tree();
      signalAll(pids, 'SIGCONT');
      signalAll(pids, 'SIGKILL');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Every process below `root`, from /proc (no ps dependency). */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // The command name may hold spaces or parentheses: parse after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
  }
  const result: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const next = queue.shift()!;
    for (const child of children.get(next) ?? []) {
      result.push(child);
      queue.push(child);
    }
  }
  return result;
}

function ensurePrivsepDir(): void {
  // sshd refuses to start as root without its privilege separation directory, which the
  // package only creates at boot through systemd-tmpfiles; containers never boot.
  if (typeof process.getuid === 'function' && process.getuid() === 0 && !existsSync('/run/sshd')) {
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Ready when a TCP client receives sshd's identification string; bounded to 10 s. */
async function waitForBanner(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`sshd exited during start-up: ${log().trim()}`);
    }
    if (await bannerSeen(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`sshd did not answer on 127.0.0.1:${port} within 10 s: ${log().trim()}`);
}

function bannerSeen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('data', (data) => done(data.toString('latin1').startsWith('SSH-2.0-')));
  });
}

/** Runs `ssh-keygen -y` on a private key file: the public key OpenSSH derives from it. */
export function derivePublicKey(privateKeyFile: string): string {
  return publicKeyWithoutComment(
    execFileSync('ssh-keygen', ['-y', '-f', privateKeyFile], { encoding: 'utf8' }),
  );
}
