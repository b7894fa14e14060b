/**
 * The part of an instance's user data that installs its SSH identity: the host key the manager
 * pins, and the manager's client key in the login user's authorized_keys. Rendered as a bash
 * snippet to be placed in a user-data shell script (cloud-init runs it as root).
 *
 * Keys are written with printf, a builtin, rather than heredocs: bash may back a heredoc with a
 * temporary file, which would put the host private key on disk outside /etc/ssh.
 */
import { publicKeyWithoutComment } from './keys.js';

export interface SshUserDataOptions {
  /** Login user the manager connects as (e.g. `ec2-user`, `ubuntu`, `root`). Must already exist. */
  readonly user: string;
  /** The manager's per-instance client public key line. */
  readonly clientPublicKey: string;
  /** The instance's host key pair (OpenSSH formats). */
  readonly hostPrivateKey: string;
  readonly hostPublicKey: string;
  /** Where sshd's host keys live. Tests point this elsewhere. */
  readonly sshDir?: string;
  /** The user's home directory; by default looked up with getent on the instance. */
  readonly homeDir?: string;
  /** Restart sshd so it serves the new host key at once (default true). */
  readonly restartSshd?: boolean;
}

const USER = /^[a-z_][a-z0-9_.-]{0,31}$/i;
const PUBLIC_KEY = /^ssh-ed25519 [A-Za-z0-9+/]+={0,2}$/;
const PRIVATE_KEY =
  /^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n?$/;
const ABSOLUTE_PATH = /^\/[A-Za-z0-9._/-]*$/;

export function renderSshUserData(options: SshUserDataOptions): string {
  const { user } = options;
  if (!USER.test(user)) throw new Error('user data: invalid login user name');
  const clientKey = publicKeyWithoutComment(options.clientPublicKey);
  const hostPublic = publicKeyWithoutComment(options.hostPublicKey);
  if (!PUBLIC_KEY.test(clientKey)) throw new Error('user data: client key must be an ssh-ed25519 public key');
  if (!PUBLIC_KEY.test(hostPublic)) throw new Error('user data: host key must be an ssh-ed25519 public key');
  if (!PRIVATE_KEY.test(options.hostPrivateKey)) {
    throw new Error('user data: host private key must be an unencrypted OpenSSH private key');
  }
  const sshDir = options.sshDir ?? '/etc/ssh';
  for (const path of [sshDir, options.homeDir]) {
    if (path !== undefined && !ABSOLUTE_PATH.test(path)) throw new Error('user data: paths must be absolute');
  }
  const privateKey = options.hostPrivateKey.endsWith('\n')
    ? options.hostPrivateKey
    : `${options.hostPrivateKey}\n`;
  const home =
    options.homeDir !== undefined
      ? `home=${quote(options.homeDir)}`
      : `home=$(getent passwd ${quote(user)} | cut -d: -f6)`;
  const restart =
    options.restartSshd === false
      ? []
      : [
          '  # Restart so the pinned key is served from now on; the unit is sshd on RHEL-likes, ssh on Debian-likes.',
          '  systemctl restart sshd 2>/dev/null || systemctl restart ssh 2>/dev/null || service ssh restart',
        ];
  return [
    '# runner-fleet: per-instance SSH host key (pinned by the manager) and client key.',
    '(',
    '  set -eu',
    '  umask 077',
    `  ssh_dir=${quote(sshDir)}`,
    '  mkdir -p "$ssh_dir"',
    `  printf '%s' ${quote(privateKey)} > "$ssh_dir/ssh_host_ed25519_key"`,
    '  chmod 600 "$ssh_dir/ssh_host_ed25519_key"',
    `  printf '%s\\n' ${quote(`${hostPublic} runner-fleet-host`)} > "$ssh_dir/ssh_host_ed25519_key.pub"`,
    '  chmod 644 "$ssh_dir/ssh_host_ed25519_key.pub"',
    `  ${home}`,
    '  [ -n "$home" ] || { echo "runner-fleet: no home directory for the login user" >&2; exit 1; }',
    `  group=$(id -gn ${quote(user)})`,
    `  install -d -m 700 -o ${quote(user)} -g "$group" "$home/.ssh"`,
    `  printf '%s\\n' ${quote(`${clientKey} runner-fleet-manager`)} >> "$home/.ssh/authorized_keys"`,
    `  chown ${quote(user)}:"$group" "$home/.ssh/authorized_keys"`,
    '  chmod 600 "$home/.ssh/authorized_keys"',
    '  # SELinux hosts (e.g. Amazon Linux, RHEL) need the labels sshd expects on files we created.',
    '  if command -v restorecon >/dev/null 2>&1; then restorecon -R "$ssh_dir" "$home/.ssh" || true; fi',
    ...restart,
    ')',
    '',
  ].join('\n');
}

function quote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}
