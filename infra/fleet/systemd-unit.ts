/**
 * The systemd unit that runs the fleet manager next to gitlab-runner on the manager instance.
 * A function so that a shared renderer (the same unit for hand-built hosts) can replace it.
 */
import { DEFAULT_CONFIG_PATH } from '../../manager/config/paths.js';

export interface ManagerUnitOptions {
  /** Where npm put the CLI. */
  binPath?: string;
  configPath?: string;
  /** The user gitlab-runner's hooks run as: it must be able to reach the daemon's socket. */
  user?: string;
}

export function renderManagerUnit(o: ManagerUnitOptions = {}): string {
  const bin = o.binPath ?? '/usr/bin/runner-fleet';
  const config = o.configPath ?? DEFAULT_CONFIG_PATH;
  const user = o.user ?? 'gitlab-runner';
  return `[Unit]
Description=runner-fleet manager (one EC2 instance per CI job)
Documentation=https://docs.gitlab.com/runner/executors/custom.html
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=${user}
Group=${user}
ExecStart=${bin} daemon --config ${config}
# SIGHUP re-reads the config without touching instances or leases.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# A restart never kills instances (EC2 tags are the state), so a bounded stop is safe.
TimeoutStopSec=60
StateDirectory=runner-fleet
StateDirectoryMode=0750
RuntimeDirectory=runner-fleet
LogsDirectory=runner-fleet
StandardOutput=append:/var/log/runner-fleet/daemon.log
StandardError=inherit

# Hardening: the daemon only needs the network, its state directory and its config.
NoNewPrivileges=true
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
RestrictSUIDSGID=true
RestrictRealtime=true
RestrictNamespaces=true
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
LockPersonality=true
SystemCallArchitectures=native
UMask=0027

[Install]
WantedBy=multi-user.target
`;
}
