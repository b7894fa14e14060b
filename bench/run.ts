/**
 * `npm run bench`: every benchmark, each reporting ratios measured in the same run (absolute
 * numbers on a shared machine mean little). Prints a table and writes .bench/results.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { benchHooks, benchLaunchPath } from './hooks.js';

type Bench = () => Promise<Record<string, number | string>>;

async function optional(path: string, name: string): Promise<Bench | undefined> {
  try {
    const mod = (await import(path)) as Record<string, Bench>;
    return mod[name];
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw error;
  }
}

async function main(): Promise<void> {
  const benches: Array<[string, Bench | undefined]> = [
    ['hooks (local provider)', benchHooks],
    ['launch path (embedded default config: idle_count = 0, local provider)', benchLaunchPath],
    ['ssh transport', await optional('./ssh.js', 'benchSsh')],
    ['fleet scale', await optional('./fleet.js', 'benchFleet')],
    ['container jobs (local dockerd)', await optional('./containers.js', 'benchContainers')],
    ['cold start (AWS fake, sshd-backed)', await optional('./coldstart.js', 'benchColdStart')],
    ['aws calls per job (wire)', await optional('./aws-calls.js', 'benchAwsCalls')],
  ];
  // `npm run bench -- cold` runs only the benches whose name contains an argument.
  const only = process.argv.slice(2);
  const results: Record<string, Record<string, number | string>> = {};
  for (const [name, bench] of benches) {
    if (!bench || (only.length > 0 && !only.some((word) => name.includes(word)))) continue;
    process.stdout.write(`\n== ${name}\n`);
    const figures = await bench();
    results[name] = figures;
    const width = Math.max(...Object.keys(figures).map((k) => k.length));
    for (const [key, value] of Object.entries(figures))
      process.stdout.write(`  ${key.padEnd(width)}  ${value}\n`);
  }
  mkdirSync('.bench', { recursive: true });
  writeFileSync(
    '.bench/results.json',
    `${JSON.stringify({ at: new Date().toISOString(), node: process.version, results }, null, 2)}\n`,
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exitCode = 1;
});
