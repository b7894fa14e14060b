import { SOCKET_ENV, socketPathIn, userStateDir } from '../manager/config/paths.js';

/**
 * The control socket the hooks talk to: `--socket` (runner-config always writes it), then
 * RUNNER_FLEET_SOCKET, then the per-user default of a config-less `npm start`.
 */
export function hookSocketPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env[SOCKET_ENV] || socketPathIn(userStateDir(env));
}
