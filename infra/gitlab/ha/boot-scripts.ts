/**
 * First-boot scripts (EC2 user data) for the nodes of the 3k layout. Like the POC's, they hold no
 * secret: they name Secrets Manager secrets, and the node's role fetches them into root-only files
 * that gitlab.rb reads (role-gitlab-rb.ts). Every node boots the same way whether it is one of the
 * first or a replacement its Auto Scaling group launched, so a replaced node rejoins without hand
 * work:
 *
 * - Rails and Sidekiq share one gitlab-secrets.json. The secret starts as `{}`; the first Rails
 *   node claims the right to create it with a compare-and-set (every contender writes with the same
 *   idempotency token, derived from the `{}` version, so Secrets Manager accepts exactly one
 *   claim), sets up the database, then stores the file and its SSH host keys. Every other node
 *   waits for the file and uses it, so all nodes decrypt the same columns and present the same
 *   host key behind the load balancer.
 * - A Gitaly node finds its own data volume by tag, waits for the node it replaces to let go of
 *   it, attaches and mounts it (formatting only a volume that has no file system yet), and points
 *   its DNS name at itself. Praefect keeps track of which replicas are current and replicates what
 *   the node missed while it was away.
 * - Each script ends with cfn-signal, success only once the node serves: CloudFormation's
 *   creation and rolling updates wait for it.
 */
import { renderSmtpSecretFetch } from '../smtp.js';
import { HA_SECRET_FILES, type HaRole, type HaSecretFile, ROLE_SECRETS } from './role-gitlab-rb.js';

export interface SecretRef {
  arn: string;
  /** For JSON secrets (RDS-generated): the key holding the value. */
  jsonKey?: string;
}

export interface HaBootScriptOptions {
  role: HaRole;
  region: string;
  /** Rendered gitlab.rb (renderRoleGitlabRb). */
  gitlabRb: string;
  edition: 'gitlab-ee' | 'gitlab-ce';
  /** Exact package version, e.g. `18.2.1-ee.0`; latest when omitted. */
  version?: string;
  /** Every secret file this role reads (ROLE_SECRETS[role]). */
  secrets: Partial<Record<HaSecretFile, SecretRef>>;
  /** Rails and Sidekiq with SMTP: the secret with the SES SMTP credentials (../smtp.ts). */
  smtpSecretId?: string;
  /** The Auto Scaling group CloudFormation waits on. */
  signal: { stackName: string; logicalId: string };
  /** Rails and Sidekiq: the shared gitlab-secrets.json; Rails also the shared SSH host keys. */
  shared?: { gitlabSecretsJsonArn: string; sshHostKeysArn: string };
  gitaly?: {
    /** Tag (key, value) that marks this node's data volume. */
    volumeTag: { key: string; value: string };
    mountPoint: string;
    hostedZoneId: string;
    /** This node's DNS name, e.g. gitaly-1.gitaly.gitlab.internal. */
    recordName: string;
  };
}

/** What the shared secrets hold until the first Rails node has filled them. */
export const UNSEEDED = '{}';
/** How long a node waits for the first Rails node to set up the database (30 s polls). */
export const SEED_WAIT_POLLS = 180;

export function renderHaBootScript(o: HaBootScriptOptions): string {
  const pkg = o.version ? `${o.edition}-${o.version}` : o.edition;
  for (const file of ROLE_SECRETS[o.role]) {
    if (!o.secrets[file]) throw new Error(`${o.role} boot script: no secret given for ${file}`);
  }
  if ((o.role === 'rails' || o.role === 'sidekiq') && !o.shared) {
    throw new Error(`${o.role} boot script: the shared gitlab-secrets.json secret is required`);
  }
  if (o.role === 'gitaly' && !o.gitaly)
    throw new Error('gitaly boot script: volume and DNS settings are required');

  const fetches = ROLE_SECRETS[o.role]
    .map((file) => {
      const ref = o.secrets[file]!;
      const filter = ref.jsonKey ? ` | jq -r '.${ref.jsonKey}'` : '';
      return `secret '${ref.arn}'${filter} > ${HA_SECRET_FILES[file]}`;
    })
    .join('\n');

  return `#!/bin/bash
# First boot of a ${o.role} node of the 3k GitLab. No secret is written into this script.
set -Eeuo pipefail
exec > >(tee -a /var/log/gitlab-first-boot.log) 2>&1

export AWS_DEFAULT_REGION=${o.region}
dnf install -y jq aws-cfn-bootstrap

# CloudFormation (creation, rolling updates) waits for this: success only once the node serves.
signal() {
  /opt/aws/bin/cfn-signal --exit-code "$1" --stack '${o.signal.stackName}' \\
    --resource '${o.signal.logicalId}' --region '${o.region}' || true
}
trap 'signal 1' ERR
secret() { aws secretsmanager get-secret-value --secret-id "$1" --query SecretString --output text; }
imds() {
  local token
  token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)"
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}
instance_id="$(imds instance-id)"

# Secrets land in root-only files before gitlab.rb (which reads them) exists.
umask 077
install -d -m 0700 /etc/gitlab /etc/gitlab/secrets
${fetches}
${o.smtpSecretId ? renderSmtpSecretFetch(o.smtpSecretId) : ''}${o.role === 'rails' ? railsSeed(o) : ''}${o.role === 'sidekiq' ? waitForSeed(o) : ''}${o.role === 'gitaly' ? gitalyStorage(o) : ''}
cat > /etc/gitlab/gitlab.rb <<'GITLAB_RB_EOF'
${o.gitlabRb}GITLAB_RB_EOF
chmod 0600 /etc/gitlab/gitlab.rb

# Reconfigure runs when this script says so, not from the package's post-install hook.
touch /etc/gitlab/skip-auto-reconfigure
curl -fsSL https://packages.gitlab.com/install/repositories/gitlab/${o.edition}/script.rpm.sh | bash
dnf install -y ${pkg}
gitlab-ctl reconfigure
${AFTER_RECONFIGURE[o.role](o)}
signal 0
`;
}

/** Shell that reads a secret's value and version id together (one snapshot, no race between them). */
function snapshot(arn: string): string {
  return `snapshot="$(aws secretsmanager get-secret-value --secret-id '${arn}' --output json)"
current="$(jq -r .SecretString <<<"$snapshot")"`;
}

function waitLoop(arn: string): string {
  return `for _ in $(seq 1 ${SEED_WAIT_POLLS}); do
  case "$current" in
    '${UNSEEDED}' | '{"seeding":'*) sleep 30; current="$(secret '${arn}')" ;;
    *) break ;;
  esac
done
case "$current" in
  '${UNSEEDED}' | '{"seeding":'*)
    echo "gitlab-secrets.json was not created within ${SEED_WAIT_POLLS / 2} minutes (see docs/infrastructure.md)"; exit 1 ;;
esac
printf '%s' "$current" > /etc/gitlab/gitlab-secrets.json
unset current snapshot`;
}

function waitForSeed(o: HaBootScriptOptions): string {
  const arn = o.shared!.gitlabSecretsJsonArn;
  return `
# The first Rails node creates gitlab-secrets.json; every other node uses that one.
${snapshot(arn)}
${waitLoop(arn)}
`;
}

function railsSeed(o: HaBootScriptOptions): string {
  const { gitlabSecretsJsonArn: arn, sshHostKeysArn } = o.shared!;
  return `
# One gitlab-secrets.json for every Rails and Sidekiq node. While the secret is '${UNSEEDED}', the
# nodes race to claim it: all use the same idempotency token (from the '${UNSEEDED}' version id), so
# Secrets Manager accepts exactly one claim and refuses the others. A claim that failed for
# another reason (throttling) leaves '${UNSEEDED}': try again, bounded.
seeder=0
claim="{\\"seeding\\":\\"$instance_id\\"}"
for _ in 1 2 3 4 5; do
${indent(snapshot(arn))}
  if [ "$current" != '${UNSEEDED}' ]; then break; fi
  aws secretsmanager put-secret-value --secret-id '${arn}' --secret-string "$claim" \\
    --client-request-token "seed-$(jq -r .VersionId <<<"$snapshot")" >/dev/null 2>&1 || true
  current="$(secret '${arn}')"
  if [ "$current" = "$claim" ]; then seeder=1; break; fi
  sleep 10
done
if [ "$seeder" = 0 ]; then
${indent(waitLoop(arn))}
  # The same SSH host keys on every Rails node: git over SSH sees one host behind the NLB.
  host_keys="$(secret '${sshHostKeysArn}')"
  if [ "$host_keys" != '${UNSEEDED}' ]; then
    base64 -d <<<"$host_keys" | tar -xz -C /etc/ssh
    systemctl restart sshd
  fi
  unset host_keys
fi
`;
}

function gitalyStorage(o: HaBootScriptOptions): string {
  const g = o.gitaly!;
  return `
# This node's own data volume, found by tag. The node it replaces may still be shutting down with
# the volume attached: wait (bounded) until it is available.
volume_id="$(aws ec2 describe-volumes --filters 'Name=tag:${g.volumeTag.key},Values=${g.volumeTag.value}' \\
  --query 'Volumes[0].VolumeId' --output text)"
case "$volume_id" in vol-*) ;; *) echo "no volume tagged ${g.volumeTag.key}=${g.volumeTag.value}"; exit 1 ;; esac
state=""
for _ in $(seq 1 90); do
  state="$(aws ec2 describe-volumes --volume-ids "$volume_id" --query 'Volumes[0].State' --output text)"
  if [ "$state" = available ]; then break; fi
  sleep 10
done
if [ "$state" != available ]; then echo "volume $volume_id is still $state after 15 minutes"; exit 1; fi
aws ec2 attach-volume --volume-id "$volume_id" --instance-id "$instance_id" --device /dev/sdf
aws ec2 wait volume-in-use --volume-ids "$volume_id" --filters Name=attachment.status,Values=attached
device="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_\${volume_id/-/}"
for _ in $(seq 1 60); do
  if [ -e "$device" ]; then break; fi
  sleep 2
done
if [ ! -e "$device" ]; then device=/dev/sdf; fi
# Format only a volume without a file system: an existing one keeps its repositories.
if ! blkid "$device" >/dev/null 2>&1; then mkfs.xfs -L gitaly-data "$device"; fi
install -d -m 0755 ${g.mountPoint}
echo "UUID=$(blkid -s UUID -o value "$device") ${g.mountPoint} xfs defaults,nofail 0 2" >> /etc/fstab
mount ${g.mountPoint}

# Praefect reaches this node by name; the name follows the node across replacements.
private_ip="$(imds local-ipv4)"
aws route53 change-resource-record-sets --hosted-zone-id '${g.hostedZoneId}' --change-batch "$(jq -n --arg ip "$private_ip" \\
  '{Changes: [{Action: "UPSERT", ResourceRecordSet: {Name: "${g.recordName}", Type: "A", TTL: 30, ResourceRecords: [{Value: $ip}]}}]}')"
`;
}

const AFTER_RECONFIGURE: Record<HaRole, (o: HaBootScriptOptions) => string> = {
  rails: (o) => `${nightlyBackup(o)}
if [ "$seeder" = 1 ]; then
  # First node of a new deployment: create the schema and the root user, then publish the keys.
  GITLAB_ROOT_PASSWORD="$(cat ${HA_SECRET_FILES.rootPassword})" gitlab-rake gitlab:db:configure
  tar -C /etc/ssh -czf - $(cd /etc/ssh && ls ssh_host_*_key ssh_host_*_key.pub) | base64 -w0 > /etc/gitlab/secrets/ssh-host-keys
  aws secretsmanager put-secret-value --secret-id '${o.shared!.sshHostKeysArn}' --secret-string file:///etc/gitlab/secrets/ssh-host-keys >/dev/null
  aws secretsmanager put-secret-value --secret-id '${o.shared!.gitlabSecretsJsonArn}' --secret-string file:///etc/gitlab/gitlab-secrets.json >/dev/null
else
  # A replacement or a rolling update: regular migrations of this version (a no-op when there are
  # none). Post-deployment migrations wait until every node runs it (docs/infrastructure.md).
  SKIP_POST_DEPLOYMENT_MIGRATIONS=true gitlab-rake db:migrate
fi
# Incremental logging: running jobs' log chunks go to Redis and the database, not to the disk of
# whichever Rails node took the request (there is no shared NFS for Sidekiq to archive them from).
# Idempotent; every Rails boot sets it, so a deployment seeded before this line gets it too.
gitlab-rails runner 'Feature.enable(:ci_enable_live_trace)'
${fastSshKeyLookup()}${waitFor('curl -fsS -o /dev/null http://127.0.0.1/-/readiness', 'Rails readiness')}`,
  sidekiq: () => waitFor('gitlab-ctl status sidekiq', 'Sidekiq'),
  gitaly: () => waitFor('gitlab-ctl status gitaly', 'Gitaly'),
  praefect: () => `
# Praefect's schema: every node may try, the migrations are idempotent; retry if another node
# holds the lock at the same moment.
for attempt in 1 2 3 4 5; do
  if /opt/gitlab/embedded/bin/praefect -config /var/opt/gitlab/praefect/config.toml sql-migrate; then break; fi
  if [ "$attempt" = 5 ]; then exit 1; fi
  sleep 20
done
gitlab-ctl restart praefect
${waitFor('gitlab-ctl status praefect', 'Praefect')}`,
};

/** The sshd_config block that makes sshd ask GitLab's database for the git user's keys. */
export const SSHD_KEY_LOOKUP = `Match User git
  AuthorizedKeysCommand /opt/gitlab/embedded/service/gitlab-shell/bin/gitlab-shell-authorized-keys-check git %u %k
  AuthorizedKeysCommandUser git
Match all
`;

/**
 * Git over SSH lands on any Rails node, but the authorized_keys file is written by Sidekiq, on
 * other nodes: each Rails node looks keys up in the database instead (GitLab's "fast lookup of
 * authorized SSH keys", a post-configuration step of the 3k page).
 */
function fastSshKeyLookup(): string {
  return `
# Git over SSH: keys come from the database (the authorized_keys file lives where Sidekiq runs).
if ! grep -q 'gitlab-shell-authorized-keys-check' /etc/ssh/sshd_config; then
  cat >> /etc/ssh/sshd_config <<'SSHD_EOF'
${SSHD_KEY_LOOKUP}SSHD_EOF
fi
sshd -t
systemctl reload sshd
`;
}

/**
 * Every Rails node gets the cron entry; only the in-service node of its group with the lowest
 * instance id runs it, so one backup a night survives any node's replacement.
 */
function nightlyBackup(o: HaBootScriptOptions): string {
  return `
dnf install -y cronie
systemctl enable --now crond
cat > /usr/local/sbin/gitlab-backup-once <<'BACKUP_EOF'
#!/bin/bash
# Nightly GitLab backup to S3 from exactly one Rails node; repositories go server-side from Gitaly.
set -euo pipefail
export AWS_DEFAULT_REGION=${o.region}
token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)"
me="$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/instance-id)"
group="$(aws autoscaling describe-auto-scaling-instances --instance-ids "$me" \
  --query 'AutoScalingInstances[0].AutoScalingGroupName' --output text)"
first="$(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$group" \
  --query "AutoScalingGroups[0].Instances[?LifecycleState=='InService'].InstanceId" --output text | tr -s '\t ' '\n' | sort | head -n 1)"
if [ "$me" != "$first" ]; then exit 0; fi
exec /opt/gitlab/bin/gitlab-backup create CRON=1 STRATEGY=copy REPOSITORIES_SERVER_SIDE=true
BACKUP_EOF
chmod 0700 /usr/local/sbin/gitlab-backup-once
echo '0 2 * * * root /usr/local/sbin/gitlab-backup-once' > /etc/cron.d/gitlab-backup
`;
}

function waitFor(check: string, what: string): string {
  return `
# Bounded wait until ${what} answers, so the signal means "serving".
for _ in $(seq 1 120); do
  if ${check} >/dev/null 2>&1; then break; fi
  sleep 15
done
${check} >/dev/null`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => (l ? `  ${l}` : l))
    .join('\n');
}
