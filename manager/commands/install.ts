import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError, parseConfigText } from '../config/load.js';
import { SYSTEM_STATE_DIR } from '../config/paths.js';
import { CONFIG_PATH, install, packageFile } from '../ops/install.js';
import { cliPath } from './runner-config.js';

export async function installCommand(options: {
  user: string | undefined;
  prefix: string | undefined;
  root: string | undefined;
  dryRun: boolean;
}): Promise<number> {
  const say = (line: string) => process.stdout.write(`${line}\n`);
  const root = resolve(options.root ?? '/');
  const example = packageFile('config.example.toml');
  if (!example) {
    process.stderr.write('runner-fleet install: config.example.toml is missing from the package\n');
    return 1;
  }
  let cli = cliPath();
  if (options.prefix) {
    // npm's global layout: <prefix>/lib/node_modules/<name>/dist/cli.js
    cli = join(resolve(options.prefix), 'lib', 'node_modules', 'runner-fleet', 'dist', 'cli.js');
    if (!existsSync(join(root, cli))) {
      process.stderr.write(
        `runner-fleet install: ${cli} does not exist: is runner-fleet installed with --prefix ${options.prefix}?\n`,
      );
      return 1;
    }
  }
  // An existing config decides the user, state directory and stop timeout; flags win.
  let user = 'gitlab-runner';
  let stateDir = SYSTEM_STATE_DIR;
  let stopTimeoutMs = 15 * 60_000;
  const configFile = join(root, CONFIG_PATH);
  if (existsSync(configFile)) {
    try {
      const config = parseConfigText(readFileSync(configFile, 'utf8'), CONFIG_PATH);
      user = config.service.user;
      stateDir = config.state_dir;
      stopTimeoutMs = config.service.stop_timeout;
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      process.stderr.write(
        `runner-fleet install: ${error.message}\n(fix the config first: install reads service.user and state_dir from it)\n`,
      );
      return 78;
    }
  }
  if (options.user) user = options.user;
  say(
    `installing runner-fleet${options.dryRun ? ' (dry run: nothing is written)' : ''}${root === '/' ? '' : ` under ${root}`}`,
  );
  const result = install(
    {
      root,
      user,
      node: process.execPath,
      cli,
      stateDir,
      stopTimeoutMs,
      exampleConfig: readFileSync(example, 'utf8'),
      dryRun: options.dryRun,
    },
    say,
  );
  if (!result.ok) return 1;
  say('\nnext steps:');
  for (const [i, line] of result.next.entries()) say(`  ${i + 1}. ${line}`);
  return 0;
}
