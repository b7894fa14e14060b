/**
 * The systemd unit of the fleet manager daemon. Pure: `renderUnit` returns the file's text, the
 * install command writes it.
 *
 * Stop semantics (why ExecStop drains): a stop is an upgrade, a removal or a host shutdown. The
 * `run` hook talks to the job's instance directly, so even a plain SIGTERM fails no running job;
 * but a manager that is going away for good should not leave idle instances behind nor take new
 * leases it cannot release. So ExecStop asks the daemon to drain (no new leases, idle instances
 * terminated) and waits for running jobs, bounded by TimeoutStopSec; when that expires systemd
 * stops the wait and sends SIGTERM, and the daemon exits without touching leased instances (the
 * next daemon rebuilds its view from EC2 tags, the dead-man switch covers the rest). Jobs that
 * gitlab-runner picks up during the drain fail as runner system failures (retried by GitLab with
 * `retry: when: runner_system_failure`): `Before=gitlab-runner.service` makes a host shutdown stop
 * gitlab-runner (which waits for its jobs) first, and docs/operations.md shows the fast restart.
 */

export interface UnitOptions {
  /** The user the daemon runs as: the same user the hooks run as (or root), for the 0600 socket. */
  user: string;
  /** Absolute path of the node binary. */
  node: string;
  /** Absolute path of the installed dist/cli.js. */
  cli: string;
  /** The config file the daemon reads. */
  configPath: string;
  /** The daemon's state directory (instances journal, keys, control socket). */
  stateDir: string;
  /** Upper bound for the drain on stop, in milliseconds. */
  stopTimeoutMs: number;
}

export const UNIT_NAME = 'runner-fleet.service';
export const SYSTEM_STATE_DIR = '/var/lib/runner-fleet';

/** systemd's command-line quoting: double quotes, with backslash, quote and `$`/`%` escaped. */
function quoteArg(arg: string): string {
  if (/^[A-Za-z0-9_@+=:,./-]+$/.test(arg)) return arg;
  return `"${arg.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$/g, '$$$$').replace(/%/g, '%%')}"`;
}

const command = (args: readonly string[]) => args.map(quoteArg).join(' ');

function seconds(ms: number): string {
  return `${Math.max(1, Math.ceil(ms / 1000))}s`;
}

export function renderUnit(o: UnitOptions): string {
  for (const [name, value] of Object.entries({ node: o.node, cli: o.cli, configPath: o.configPath })) {
    if (!value.startsWith('/'))
      throw new Error(`renderUnit: ${name} must be an absolute path, got "${value}"`);
  }
  // StateDirectory= creates /var/lib/<name> owned by User= with the given mode at every start, and
  // is the one path ProtectSystem=strict leaves writable. A custom state_dir needs ReadWritePaths.
  const standardState = o.stateDir.replace(/\/+$/, '') === SYSTEM_STATE_DIR;
  const stateLines = standardState
    ? ['StateDirectory=runner-fleet', 'StateDirectoryMode=0700']
    : [`ReadWritePaths=${quoteArg(o.stateDir)}`];
  // node or the package under a home directory (nvm, npm prefix in ~): /home must stay readable.
  const underHome = [o.node, o.cli].some((p) => /^\/(home|root|run\/user)\//.test(p));
  const daemon = [o.node, o.cli, 'daemon', '--config', o.configPath];
  const drain = [o.node, o.cli, 'drain', '--wait', '--config', o.configPath];
  return `# Written by \`runner-fleet install\`; re-run it after an upgrade instead of editing this file.
# Local changes belong in a drop-in: systemctl edit runner-fleet
[Unit]
Description=runner-fleet fleet manager (GitLab Runner custom executor, one instance per job)
Documentation=man:systemd.service(5)
After=network-online.target
Wants=network-online.target
# At shutdown units stop in reverse order: gitlab-runner (which waits for its jobs) goes first.
Before=gitlab-runner.service

[Service]
Type=simple
User=${o.user}
ExecStart=${command(daemon)}
# SIGHUP re-reads the pool policy; instances, leases and the provider stay as they are.
ExecReload=/bin/kill -HUP $MAINPID
# Drain: no new leases, idle instances terminated, wait for running jobs. "-": a daemon that is
# already gone (crash, SIGTERM) makes this fail, which must not mark the stop as failed.
ExecStop=-${command(drain)}
TimeoutStopSec=${seconds(o.stopTimeoutMs)}
Restart=on-failure
RestartSec=5s
# 78 = EX_CONFIG: a broken config does not heal by restarting; fix it and start again.
RestartPreventExitStatus=78
${stateLines.join('\n')}
UMask=0077
Environment=NODE_ENV=production
# The daemon logs JSON lines on stdout; journald keeps them (journalctl -u runner-fleet -o cat).
StandardOutput=journal
StandardError=journal
SyslogIdentifier=runner-fleet
LimitNOFILE=65536

# Hardening. The hooks are started by gitlab-runner, not by this unit: they only need the socket
# in the state directory, which is outside /tmp, so PrivateTmp does not hide it from them.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=${underHome ? 'read-only' : 'yes'}
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
# AF_NETLINK: libuv lists network interfaces through it. AWS, GitLab and SSH need only IP.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=
# Not MemoryDenyWriteExecute=yes: V8's JIT needs writable+executable pages.

[Install]
WantedBy=multi-user.target
`;
}
