/**
 * The GitLab instance's scripts. None holds a secret: they name the Secrets Manager secrets, and
 * the instance role fetches them into root-only files that gitlab.rb reads (see gitlab-rb.ts).
 *
 * - `renderGitlabApplyScript`: secrets into files, gitlab.rb, the pinned package (never past a
 *   required upgrade stop), `gitlab-ctl reconfigure`. First boot runs it, and so does the SSM
 *   association on every later configuration change (gitlab-stack.ts), on the running instance.
 * - `renderGitlabBootScript` (user data, first boot of each instance): attach the data volume,
 *   restore GitLab's keys and SSH host keys from Secrets Manager (a replacement must keep them, or
 *   encrypted columns become unreadable and every git client sees a changed host key), apply,
 *   then store the keys if this is the stack's first instance.
 */
import { SECRET_FILES } from './gitlab-rb.js';
import { renderSmtpSecretFetch } from './smtp.js';
import { packageName, upgradeStops } from './versions.js';

/** The marker a Secrets Manager secret holds until the first instance fills it. */
export const EMPTY_GITLAB_SECRETS = '{}';
/** Written at the end of first boot; the association leaves a booting instance alone. */
export const FIRST_BOOT_DONE = '/var/lib/runner-fleet-gitlab/first-boot-done';
export const APPLY_SCRIPT_PATH = '/usr/local/sbin/gitlab-apply-config';
export const ATTACH_SCRIPT_PATH = '/usr/local/sbin/gitlab-attach-data';

export interface GitlabSecretArns {
  /** RDS-generated JSON secret (its `password` key is used). */
  databaseSecretArn: string;
  /** Plain-string secret: the ElastiCache AUTH token. */
  redisAuthTokenSecretArn: string;
  /** Plain-string secret: the initial root password. */
  rootPasswordSecretArn: string;
  /** Holds gitlab-secrets.json once the first instance has written it; `{}` before that. */
  gitlabSecretsJsonSecretArn: string;
  /** Holds the SSH host keys (JSON, file name → content) once the first instance wrote them. */
  sshHostKeysSecretArn: string;
}

export interface GitlabApplyScriptOptions {
  region: string;
  /** Rendered gitlab.rb (renderGitlabRb). */
  gitlabRb: string;
  edition: 'gitlab-ee' | 'gitlab-ce';
  /** Exact GitLab version, e.g. `18.2.1`. */
  version: string;
  secrets: Omit<GitlabSecretArns, 'gitlabSecretsJsonSecretArn' | 'sshHostKeysSecretArn'>;
  /** /etc/gitlab and /etc/yum.repos.d; a test points them at directories of its own. */
  etcDir?: string;
  reposDir?: string;
  secretFiles?: Record<keyof typeof SECRET_FILES, string>;
  /** Secret with the SES SMTP credentials (smtp.ts), fetched on every apply so a rotation applies too. */
  smtpSecretId?: string;
}

export function renderGitlabApplyScript(o: GitlabApplyScriptOptions): string {
  const etc = o.etcDir ?? '/etc/gitlab';
  const files = o.secretFiles ?? SECRET_FILES;
  const major = Number(o.version.split('.')[0]);
  return `#!/bin/bash
# Applies this stack's GitLab configuration on this instance: secrets, gitlab.rb, the pinned
# package, reconfigure. Idempotent; one run at a time.
set -euo pipefail
install -d -m 0700 ${etc} ${etc}/secrets
exec 9>${etc}/.apply.lock
flock 9
export AWS_DEFAULT_REGION=${o.region}
secret() { aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text; }

# Secrets land in root-only files; gitlab.rb reads them at reconfigure.
umask 077
secret '${o.secrets.databaseSecretArn}' | jq -r .password > ${files.dbPassword}
secret '${o.secrets.redisAuthTokenSecretArn}' > ${files.redisPassword}
secret '${o.secrets.rootPasswordSecretArn}' > ${files.rootPassword}
${o.smtpSecretId ? renderSmtpSecretFetch(o.smtpSecretId) : ''}
cat > ${etc}/gitlab.rb <<'GITLAB_RB_EOF'
${o.gitlabRb}GITLAB_RB_EOF
chmod 0600 ${etc}/gitlab.rb

# GitLab's package repository, signed metadata and packages (no install script piped to a shell).
cat > ${o.reposDir ?? '/etc/yum.repos.d'}/${o.edition}.repo <<'REPO_EOF'
[${o.edition}]
name=GitLab ${o.edition}
baseurl=https://packages.gitlab.com/gitlab/${o.edition}/amazon/2023/$basearch
enabled=1
gpgcheck=1
repo_gpgcheck=1
gpgkey=https://packages.gitlab.com/gitlab/${o.edition}/gpgkey
sslverify=1
REPO_EOF

# The pinned version, never a jump over a required upgrade stop (GitLab's upgrade paths).
target='${o.version}'
installed=''
if rpm -q ${o.edition} >/dev/null 2>&1; then installed="$(rpm -q --qf '%{VERSION}' ${o.edition})"; fi
if [ "$installed" != "$target" ]; then
  if [ -n "$installed" ]; then
    ord() { local IFS=.; set -- $1; echo $(($1 * 1000 + $2)); }
    from="$(ord "$installed")"
    to="$(ord "$target")"
    if ((to < from)); then
      echo "refusing GitLab $installed -> $target: a downgrade" >&2
      exit 1
    fi
    for stop in ${upgradeStops(major).join(' ')}; do
      at="$(ord "$stop")"
      if ((at > from && at < to)); then
        echo "refusing GitLab $installed -> $target: it skips the required upgrade stop $stop" >&2
        exit 1
      fi
    done
  fi
  echo "installing ${packageName(o.edition, o.version)} (installed: \${installed:-none})"
  dnf install -y ${packageName(o.edition, o.version)}
fi
gitlab-ctl reconfigure
echo "GitLab $target configured"
`;
}

export interface GitlabBootScriptOptions {
  region: string;
  /** renderAttachDataVolumeScript for this stack's volume. */
  attachScript: string;
  /** renderGitlabApplyScript for this stack. */
  applyScript: string;
  secrets: Pick<GitlabSecretArns, 'gitlabSecretsJsonSecretArn' | 'sshHostKeysSecretArn'>;
  backupBucket: string;
}

export function renderGitlabBootScript(o: GitlabBootScriptOptions): string {
  return `#!/bin/bash
# First boot of a GitLab instance. No secret is written into this script.
set -euo pipefail
exec > >(tee -a /var/log/gitlab-first-boot.log) 2>&1

export AWS_DEFAULT_REGION=${o.region}
secret() { aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text; }

dnf install -y jq cronie xfsprogs
systemctl enable --now crond

# Repositories and the rest of /var/opt/gitlab live on the data volume, which outlives instances.
cat > ${ATTACH_SCRIPT_PATH} <<'ATTACH_EOF'
${o.attachScript}ATTACH_EOF
chmod 0700 ${ATTACH_SCRIPT_PATH}
${ATTACH_SCRIPT_PATH}

# Same SSH host keys as the previous instance, so git clients see no changed host key.
umask 077
host_keys="$(secret '${o.secrets.sshHostKeysSecretArn}')"
if [ "$host_keys" != '${EMPTY_GITLAB_SECRETS}' ]; then
  HOST_KEYS="$host_keys" python3 -c '
import json, os
for name, text in json.loads(os.environ["HOST_KEYS"]).items():
    path = os.path.join("/etc/ssh", os.path.basename(name))
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644 if name.endswith(".pub") else 0o600)
'
  systemctl restart sshd
fi
unset host_keys

# Reuse GitLab's encryption keys if an earlier instance stored them.
install -d -m 0700 /etc/gitlab
stored_secrets="$(secret '${o.secrets.gitlabSecretsJsonSecretArn}')"
if [ "$stored_secrets" != '${EMPTY_GITLAB_SECRETS}' ]; then
  printf '%s' "$stored_secrets" > /etc/gitlab/gitlab-secrets.json
fi
unset stored_secrets

cat > ${APPLY_SCRIPT_PATH} <<'APPLY_EOF'
${o.applyScript}APPLY_EOF
chmod 0700 ${APPLY_SCRIPT_PATH}
${APPLY_SCRIPT_PATH}

# The stack's first instance stores the keys for every later one.
if [ "$(secret '${o.secrets.gitlabSecretsJsonSecretArn}')" = '${EMPTY_GITLAB_SECRETS}' ]; then
  aws secretsmanager put-secret-value --secret-id '${o.secrets.gitlabSecretsJsonSecretArn}' \\
    --secret-string file:///etc/gitlab/gitlab-secrets.json
fi
if [ "$(secret '${o.secrets.sshHostKeysSecretArn}')" = '${EMPTY_GITLAB_SECRETS}' ]; then
  keys_file="$(mktemp)"
  python3 -c '
import glob, json, os, sys
json.dump({os.path.basename(p): open(p).read() for p in glob.glob("/etc/ssh/ssh_host_*_key*")}, sys.stdout)
' > "$keys_file"
  aws secretsmanager put-secret-value --secret-id '${o.secrets.sshHostKeysSecretArn}' \\
    --secret-string "file://$keys_file"
  rm -f "$keys_file"
fi
umask 022

# Nightly backup to S3 (${o.backupBucket}); the bucket's lifecycle rule expires old copies.
cat > /etc/cron.d/gitlab-backup <<'CRON_EOF'
0 2 * * * root /opt/gitlab/bin/gitlab-backup create CRON=1 STRATEGY=copy
CRON_EOF

install -d -m 0700 "$(dirname ${FIRST_BOOT_DONE})"
touch ${FIRST_BOOT_DONE}
`;
}

/**
 * The command the SSM association runs on every configuration change: the apply script, unless
 * first boot is still running (which applies the same configuration itself).
 */
export function renderSsmApplyCommand(applyScript: string): string {
  return `#!/bin/bash
set -euo pipefail
if [ ! -f ${FIRST_BOOT_DONE} ]; then
  echo 'first boot has not finished; it applies this configuration itself'
  exit 0
fi
cat > ${APPLY_SCRIPT_PATH} <<'APPLY_EOF'
${applyScript}APPLY_EOF
chmod 0700 ${APPLY_SCRIPT_PATH}
exec ${APPLY_SCRIPT_PATH}
`;
}
