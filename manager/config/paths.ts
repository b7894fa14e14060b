import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where ops put the config on a manager instance (see the systemd unit). */
export const DEFAULT_CONFIG_PATH = '/etc/runner-fleet/config.toml';
/** Overrides the config path for every command that reads the config. */
export const CONFIG_ENV = 'RUNNER_FLEET_CONFIG';
/** Overrides the control socket path for the hooks (runner-config passes --socket explicitly). */
export const SOCKET_ENV = 'RUNNER_FLEET_SOCKET';
/** The state directory of a system install (config present). */
export const SYSTEM_STATE_DIR = '/var/lib/runner-fleet';

/**
 * State directory used when there is no config file at all: the embedded local setup, per user,
 * so a newcomer can run `npm start` without root. Root gets the system directory instead: a root
 * daemon runs local jobs as users of their own, who cannot pass through root's 0700 home.
 */
export function userStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (!env.XDG_STATE_HOME && process.getuid?.() === 0) return SYSTEM_STATE_DIR;
  const base =
    env.XDG_STATE_HOME && env.XDG_STATE_HOME !== '' ? env.XDG_STATE_HOME : join(homedir(), '.local', 'state');
  return join(base, 'runner-fleet');
}

export function socketPathIn(stateDir: string): string {
  return join(stateDir, 'control.sock');
}
