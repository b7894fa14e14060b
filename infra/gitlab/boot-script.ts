/**
 * The GitLab instance's first-boot script (EC2 user data). It holds no secret: it names the
 * Secrets Manager secrets, and the instance role fetches them into root-only files that gitlab.rb
 * reads (see gitlab-rb.ts).
 *
 * A replacement instance (the group is self-healing) must keep GitLab's own encryption keys, or
 * the encrypted columns in the external database become unreadable. So the first instance stores
 * /etc/gitlab/gitlab-secrets.json in a Secrets Manager secret and later instances restore it.
 */
import { SECRET_FILES } from './gitlab-rb.js';

export interface GitlabBootScriptOptions {
  region: string;
  /** Rendered gitlab.rb (renderGitlabRb). */
  gitlabRb: string;
  /** `gitlab-ee` or `gitlab-ce`. */
  edition: 'gitlab-ee' | 'gitlab-ce';
  /** Exact package version to pin, e.g. `18.2.1-ee.0`; latest when omitted. */
  version?: string;
  secrets: {
    /** RDS-generated JSON secret (its `password` key is used). */
    databaseSecretArn: string;
    /** Plain-string secret: the ElastiCache AUTH token. */
    redisAuthTokenSecretArn: string;
    /** Plain-string secret: the initial root password. */
    rootPasswordSecretArn: string;
    /** Holds gitlab-secrets.json once the first instance has written it; `{}` before that. */
    gitlabSecretsJsonSecretArn: string;
  };
  backupBucket: string;
}

/** The marker the gitlab-secrets.json secret holds until the first instance fills it. */
export const EMPTY_GITLAB_SECRETS = '{}';

export function renderGitlabBootScript(o: GitlabBootScriptOptions): string {
  const pkg = o.version ? `${o.edition}-${o.version}` : o.edition;
  return `#!/bin/bash
# First boot of the GitLab POC instance. No secret is written into this script.
set -euo pipefail
exec > >(tee -a /var/log/gitlab-first-boot.log) 2>&1

export AWS_DEFAULT_REGION=${o.region}
secret() { aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text; }

dnf install -y jq cronie
systemctl enable --now crond

# Secrets land in root-only files before gitlab.rb (which reads them) exists.
umask 077
install -d -m 0700 /etc/gitlab /etc/gitlab/secrets
secret '${o.secrets.databaseSecretArn}' | jq -r .password > ${SECRET_FILES.dbPassword}
secret '${o.secrets.redisAuthTokenSecretArn}' > ${SECRET_FILES.redisPassword}
secret '${o.secrets.rootPasswordSecretArn}' > ${SECRET_FILES.rootPassword}

# Reuse GitLab's encryption keys if an earlier instance stored them.
stored_secrets="$(secret '${o.secrets.gitlabSecretsJsonSecretArn}')"
if [ "$stored_secrets" != '${EMPTY_GITLAB_SECRETS}' ]; then
  printf '%s' "$stored_secrets" > /etc/gitlab/gitlab-secrets.json
fi
unset stored_secrets

cat > /etc/gitlab/gitlab.rb <<'GITLAB_RB_EOF'
${o.gitlabRb}GITLAB_RB_EOF
chmod 0600 /etc/gitlab/gitlab.rb

curl -fsSL https://packages.gitlab.com/install/repositories/gitlab/${o.edition}/script.rpm.sh | bash
dnf install -y ${pkg}
gitlab-ctl reconfigure

if [ "$(secret '${o.secrets.gitlabSecretsJsonSecretArn}')" = '${EMPTY_GITLAB_SECRETS}' ]; then
  aws secretsmanager put-secret-value --secret-id '${o.secrets.gitlabSecretsJsonSecretArn}' \\
    --secret-string file:///etc/gitlab/gitlab-secrets.json
fi

# Nightly backup to S3 (${o.backupBucket}); the bucket's lifecycle rule expires old copies.
cat > /etc/cron.d/gitlab-backup <<'CRON_EOF'
0 2 * * * root /opt/gitlab/bin/gitlab-backup create CRON=1 STRATEGY=copy
CRON_EOF
`;
}
