/**
 * User data of the two kinds of fleet instance. Neither holds a secret: on the manager,
 * `runner-fleet runner-config --write` reads the runner token from an SSM SecureString with the
 * instance role and writes it straight into gitlab-runner's root-only config.toml.
 */

export interface ManagerBootScriptOptions {
  region: string;
  /** npm spec of the runner-fleet package. */
  packageSpec: string;
  fleetConfig: string;
  systemdUnit: string;
  logGroupName: string;
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

dnf install -y nodejs npm amazon-cloudwatch-agent
curl -fsSL https://packages.gitlab.com/install/repositories/runner/gitlab-runner/script.rpm.sh | bash
dnf install -y gitlab-runner
npm install --global --prefix /usr ${o.packageSpec}

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

systemctl daemon-reload
systemctl enable --now runner-fleet.service
systemctl restart gitlab-runner.service
`;
}

export interface JobBootScriptOptions {
  /** Dead-man switch: power off (the launch template turns that into terminate) after this long. */
  maxLifetimeMinutes: number;
  /** Release of the gitlab-runner helper binary used for cache and artifacts, e.g. `v18.2.0`. */
  gitlabRunnerVersion?: string;
}

export function renderJobBootScript(o: JobBootScriptOptions): string {
  const version = o.gitlabRunnerVersion ?? 'latest';
  return `#!/bin/bash
# Job instance. First the dead-man switch, so that even a boot that fails below cannot leak an
# instance: shutdown means terminate (InstanceInitiatedShutdownBehavior).
shutdown -P +${o.maxLifetimeMinutes} 'runner-fleet: maximum instance lifetime reached'
set -euo pipefail
dnf install -y git git-lfs tar gzip
# gitlab-runner on the instance does cache and artifact transfer (cache-archiver, artifacts-uploader).
arch="$(uname -m | sed -e s/x86_64/amd64/ -e s/aarch64/arm64/)"
curl -fsSL -o /usr/local/bin/gitlab-runner \\
  "https://gitlab-runner-downloads.s3.amazonaws.com/${version}/binaries/gitlab-runner-linux-$arch"
chmod 0755 /usr/local/bin/gitlab-runner
# The executor connects as ec2-user (the AMI default user) and builds under these.
install -d -o ec2-user -g ec2-user -m 0750 /builds /cache
`;
}
