/**
 * The user data every AWS instance boots with: the dead-man switch, the instance's SSH identity
 * (host key pair, the manager's per-instance client public key) and, optionally, the tools a job
 * needs. Nothing else: no runner token, no job data. User data is readable by anyone who can call
 * DescribeInstanceAttribute and from inside the instance at 169.254.169.254, so the only secret in
 * it is the instance's own host private key, which is useless anywhere else.
 */
import type { InstanceKeys } from '../../ssh/keys.js';
import { renderSshUserData } from '../../ssh/user-data.js';

export interface AwsUserDataOptions {
  readonly keys: InstanceKeys;
  readonly sshUser: string;
  /** The instance powers itself off (and so terminates) after this long. */
  readonly maxLifetimeMs: number;
  readonly installTools: boolean;
}

export function renderAwsUserData(options: AwsUserDataOptions): string {
  const minutes = Math.max(1, Math.ceil(options.maxLifetimeMs / 60_000));
  return [
    '#!/bin/bash',
    '# runner-fleet instance bootstrap (generated; see manager/providers/aws/user-data.ts).',
    '',
    '# Dead-man switch: even if every manager is gone, the instance powers off after its maximum',
    '# lifetime, and InstanceInitiatedShutdownBehavior=terminate turns that into a termination.',
    '# The sleep is a second line of defence for images whose shutdown scheduler is unavailable.',
    `shutdown -h +${minutes} 'runner-fleet: max_instance_lifetime reached' 2>/dev/null`,
    `(sleep ${minutes * 60 + 120} && poweroff -f) >/dev/null 2>&1 &`,
    '',
    renderSshUserData({
      user: options.sshUser,
      clientPublicKey: options.keys.client.publicKey,
      hostPrivateKey: options.keys.host.privateKey,
      hostPublicKey: options.keys.host.publicKey,
    }),
    ...(options.installTools ? [TOOLS] : []),
  ].join('\n');
}

/** Installs git, git-lfs and gitlab-runner when the AMI lacks them (a baked AMI boots faster). */
const TOOLS = `# runner-fleet: tools a job needs (install_tools = true).
(
  set -u
  pkgs=""
  command -v git >/dev/null 2>&1 || pkgs="$pkgs git"
  command -v git-lfs >/dev/null 2>&1 || pkgs="$pkgs git-lfs"
  if [ -n "$pkgs" ]; then
    if command -v dnf >/dev/null 2>&1; then dnf -y install $pkgs
    elif command -v yum >/dev/null 2>&1; then yum -y install $pkgs
    elif command -v apt-get >/dev/null 2>&1; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs
    fi
  fi
  if ! command -v gitlab-runner >/dev/null 2>&1; then
    case "$(uname -m)" in aarch64) arch=arm64 ;; *) arch=amd64 ;; esac
    curl -fsSL --retry 5 -o /usr/local/bin/gitlab-runner \\
      "https://gitlab-runner-downloads.s3.amazonaws.com/latest/binaries/gitlab-runner-linux-$arch" &&
      chmod 755 /usr/local/bin/gitlab-runner
  fi
)
`;
