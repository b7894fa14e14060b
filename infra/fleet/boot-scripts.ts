/**
 * User data of the two kinds of fleet instance. Neither holds a secret: on the manager,
 * `runner-fleet runner-config --write` reads the runner token from an SSM SecureString with the
 * instance role and writes it straight into gitlab-runner's root-only config.toml.
 */

import { HEALTH_SCRIPT_PATH, HEALTH_UNIT } from './health-metrics.js';

/** Where GitLab publishes each gitlab-runner release (binaries and their SHA-256 list). */
const RUNNER_DOWNLOADS = 'https://gitlab-runner-downloads.s3.amazonaws.com';

export interface GitlabRunnerRelease {
  /** Exact release, e.g. `18.2.0`. */
  version: string;
  /** SHA-256 of `binaries/gitlab-runner-linux-amd64`; unset: taken from the release's own list. */
  sha256?: string;
}

/**
 * Bash that installs one pinned gitlab-runner binary at /usr/local/bin/gitlab-runner, and only
 * if its SHA-256 matches: the pinned one, or else the one the release publishes beside it (which
 * catches a corrupted or swapped download, though not a compromised release bucket).
 */
export function renderGitlabRunnerInstall(r: GitlabRunnerRelease): string {
  const base = `${RUNNER_DOWNLOADS}/v${r.version}`;
  const expected = r.sha256
    ? `expected='${r.sha256}'`
    : `expected="$(curl -fsSL --retry 5 '${base}/release.sha256' | awk '$2 ~ "binaries/gitlab-runner-linux-amd64$" {print $1}')"`;
  return `# gitlab-runner ${r.version}, verified before it is installed.
runner_tmp="$(mktemp)"
curl -fsSL --retry 5 -o "$runner_tmp" '${base}/binaries/gitlab-runner-linux-amd64'
${expected}
if [ -z "$expected" ] || ! echo "$expected  $runner_tmp" | sha256sum --check --quiet -; then
  echo "gitlab-runner ${r.version}: checksum mismatch, not installing" >&2
  exit 1
fi
install -m 0755 "$runner_tmp" /usr/local/bin/gitlab-runner
rm -f "$runner_tmp"
`;
}

export interface ManagerBootScriptOptions {
  region: string;
  /** s3:// URL of the runner-fleet tarball (the CDK asset of `npm pack`). */
  packageS3Url: string;
  gitlabRunner: GitlabRunnerRelease;
  fleetConfig: string;
  systemdUnit: string;
  logGroupName: string;
  /** The /healthz-to-CloudWatch timer (health-metrics.ts): script, service and timer units. */
  healthMetrics?: { script: string; service: string; timer: string };
}

export function renderManagerBootScript(o: ManagerBootScriptOptions): string {
  const cloudwatchAgentConfig = JSON.stringify({
    logs: {
      logs_collected: {
        files: {
          collect_list: [
            {
              file_path: '/var/log/runner-fleet/daemon.log',
              log_group_name: o.logGroupName,
              log_stream_name: '{instance_id}/runner-fleet',
            },
            {
              file_path: '/var/log/gitlab-runner-boot.log',
              log_group_name: o.logGroupName,
              log_stream_name: '{instance_id}/boot',
            },
          ],
        },
      },
    },
  });
  return `#!/bin/bash
# Manager instance: gitlab-runner with the custom executor, and the runner-fleet daemon.
set -euo pipefail
exec > >(tee -a /var/log/gitlab-runner-boot.log) 2>&1
export AWS_DEFAULT_REGION=${o.region}

# Node.js 22 (AL2023's namespaced package; alternatives makes it \`node\` and \`npm\`).
dnf install -y nodejs22 nodejs22-npm amazon-cloudwatch-agent

${renderGitlabRunnerInstall(o.gitlabRunner)}id gitlab-runner >/dev/null 2>&1 || useradd --system --create-home --home-dir /home/gitlab-runner gitlab-runner
gitlab-runner install --user gitlab-runner --working-directory /home/gitlab-runner --config /etc/gitlab-runner/config.toml

# runner-fleet from the tarball this deployment shipped (CDK asset of \`npm pack\`), not by name.
aws s3 cp '${o.packageS3Url}' /tmp/runner-fleet.tgz
npm install --global --prefix /usr /tmp/runner-fleet.tgz
rm -f /tmp/runner-fleet.tgz

install -d -m 0750 -o gitlab-runner -g gitlab-runner /etc/runner-fleet
cat > /etc/runner-fleet/config.toml <<'FLEET_CONFIG_EOF'
${o.fleetConfig}
FLEET_CONFIG_EOF
chown root:gitlab-runner /etc/runner-fleet/config.toml
chmod 0640 /etc/runner-fleet/config.toml

# gitlab-runner's [[runners]] entry from the same code an operator runs: it reads the token from
# the SSM parameter in [gitlab] and writes it into /etc/gitlab-runner/config.toml (0600), never
# onto a command line or into this script.
runner-fleet runner-config --write --config /etc/runner-fleet/config.toml

cat > /etc/systemd/system/runner-fleet.service <<'UNIT_EOF'
${o.systemdUnit}
UNIT_EOF
cat > /opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json <<'CW_EOF'
${cloudwatchAgentConfig}
CW_EOF
/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \\
  -c file:/opt/aws/amazon-cloudwatch-agent/etc/amazon-cloudwatch-agent.json

${o.healthMetrics ? renderHealthMetricsInstall(o.healthMetrics) : ''}systemctl daemon-reload
systemctl enable --now runner-fleet.service
${
  o.healthMetrics
    ? `systemctl enable --now ${HEALTH_UNIT}.timer
`
    : ''
}systemctl restart gitlab-runner.service
`;
}

function renderHealthMetricsInstall(h: { script: string; service: string; timer: string }): string {
  return `# /healthz and the fleet's foreign and stuck counts into CloudWatch, once a minute (alarms).
cat > ${HEALTH_SCRIPT_PATH} <<'HEALTH_EOF'
${h.script}HEALTH_EOF
chmod 0755 ${HEALTH_SCRIPT_PATH}
cat > /etc/systemd/system/${HEALTH_UNIT}.service <<'HEALTH_SERVICE_EOF'
${h.service}HEALTH_SERVICE_EOF
cat > /etc/systemd/system/${HEALTH_UNIT}.timer <<'HEALTH_TIMER_EOF'
${h.timer}HEALTH_TIMER_EOF
`;
}

export interface JobBootScriptOptions {
  /** Dead-man switch: power off (the launch template turns that into terminate) after this long. */
  maxLifetimeMinutes: number;
  /**
   * gitlab-runner on the instance does cache and artifact transfer; the manager's release.
   * Unset when the AMI has the tools baked in (infra/ami): then only the dead-man switch runs.
   */
  gitlabRunner?: GitlabRunnerRelease;
}

export function renderJobBootScript(o: JobBootScriptOptions): string {
  const deadManSwitch = `#!/bin/bash
# Job instance. First the dead-man switch, so that even a boot that fails below cannot leak an
# instance: shutdown means terminate (InstanceInitiatedShutdownBehavior).
shutdown -P +${o.maxLifetimeMinutes} 'runner-fleet: maximum instance lifetime reached'
`;
  if (!o.gitlabRunner) return deadManSwitch;
  return `${deadManSwitch}set -euo pipefail
dnf install -y git git-lfs tar gzip
# gitlab-runner on the instance does cache and artifact transfer (cache-archiver, artifacts-uploader).
${renderGitlabRunnerInstall(o.gitlabRunner)}# The executor connects as ec2-user (the AMI default user) and builds under these.
install -d -o ec2-user -g ec2-user -m 0750 /builds /cache
`;
}
