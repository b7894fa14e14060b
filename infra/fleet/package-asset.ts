/**
 * The runner-fleet package the manager installs: the tarball `npm pack` makes from this checkout,
 * shipped as a CDK file asset (the bootstrap bucket of the target account), so the manager never
 * installs `runner-fleet` by name from a public registry. `npm run synth` packs it first
 * (`npm run pack:asset`); synth itself stays offline and never runs npm.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest package.json above this module (source or dist/). */
const ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('runner-fleet: no package.json above infra/fleet');
    dir = parent;
  }
  return dir;
})();

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

/** Where `npm run pack:asset` leaves the tarball. */
export function defaultTarballPath(): string {
  return join(ROOT, 'dist', 'pack', `runner-fleet-${packageVersion()}.tgz`);
}

/** The tarball's path, or a clear error naming the command that makes it. */
export function requireTarball(path: string): string {
  if (!existsSync(path))
    throw new Error(
      `runner-fleet package not found at ${path}: run \`npm run pack:asset\` (\`npm run synth\` does it), or set context runnerFleetTarball`,
    );
  return path;
}
