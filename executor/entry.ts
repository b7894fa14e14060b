/**
 * The hooks' own entry point, the one `runner-config` gives gitlab-runner: it starts a hook process
 * for every stage of every job. `npm run build` bundles this file and all it reaches into one
 * CommonJS file (dist/executor/bundle/hooks.cjs, see bundle-hooks.mjs): a CommonJS main skips the
 * ES module loader's own start-up and its file read per module, which together cost a hook more
 * than everything else it does (bench/hooks.ts measures it). `runner-fleet <hook>` (cli.ts) runs
 * the same hook functions unbundled.
 */
import { cleanupHook } from './hooks/cleanup.js';
import { configHook } from './hooks/config.js';
import { prepareHook } from './hooks/prepare.js';
import { runStageHook } from './hooks/run.js';

const HOOKS: Record<string, (socket: string | undefined, positionals: string[]) => Promise<number>> = {
  config: (socket) => configHook({ socket }),
  prepare: (socket) => prepareHook({ socket }),
  run: (socket, positionals) => runStageHook({ socket, positionals }),
  cleanup: (socket) => cleanupHook({ socket }),
};

const USAGE = 'runner-fleet-hook config|prepare|run|cleanup [--socket PATH] [<script-path> <stage>]';

/** The hook's arguments as cli.ts reads them: `--socket PATH` or `--socket=PATH`, then positionals. */
function parseHookArgs(argv: readonly string[]): { socket?: string; positionals: string[] } | string {
  let socket: string | undefined;
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    if (name !== 'socket') return `unknown option --${name}`;
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined || value === '') return '--socket needs a value';
    socket = value;
  }
  return { ...(socket !== undefined ? { socket } : {}), positionals };
}

async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  const hook = name === undefined ? undefined : HOOKS[name];
  if (!hook) {
    process.stderr.write(`runner-fleet: unknown hook "${name ?? ''}"\nUsage: ${USAGE}\n`);
    return 64;
  }
  const parsed = parseHookArgs(rest);
  if (typeof parsed === 'string') {
    process.stderr.write(`runner-fleet ${name}: ${parsed}\nUsage: ${USAGE}\n`);
    return 64;
  }
  return hook(parsed.socket, parsed.positionals);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`runner-fleet: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 70;
  },
);
