/**
 * What `npm pack` ships: the built CLI and the pinned dependency tree (npm-shrinkwrap.json, made
 * from package-lock.json at prepack), so an install gets the versions CI tested, not whatever was
 * published since; and engines that say which Node versions CI tests (.ci/run: 20 and 24).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';

const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'));
const lock = JSON.parse(readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8'));

/** Enough of semver for caret ranges joined by "||" (the only form engines uses here). */
function satisfiesCarets(version: string, range: string): boolean {
  const parse = (v: string) => v.replace(/^v/, '').split('.').map(Number) as [number, number, number];
  const [maj, min, pat] = parse(version);
  return range.split('||').some((part) => {
    const m = /^\s*\^(\d+)\.(\d+)\.(\d+)\s*$/.exec(part);
    if (!m) throw new Error(`engines range "${part}" is not a caret range`);
    const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
    return maj === a && (min > b || (min === b && pat >= c));
  });
}

it('packs npm-shrinkwrap.json (package-lock.json, copied at prepack) and leaves none behind', () => {
  const npm = (...args: string[]) => execFileSync('npm', args, { cwd: REPO_ROOT, encoding: 'utf8' });
  // prepack is build + shrinkwrap; the build is not redone here (other tests run dist/ meanwhile).
  expect(pkg.scripts.prepack).toMatch(/npm run shrinkwrap/);
  npm('run', 'shrinkwrap', '--silent');
  let files: string[];
  try {
    expect(readFileSync(join(REPO_ROOT, 'npm-shrinkwrap.json'), 'utf8')).toBe(
      readFileSync(join(REPO_ROOT, 'package-lock.json'), 'utf8'),
    );
    const out = npm('pack', '--dry-run', '--json', '--ignore-scripts');
    const packed = JSON.parse(out.slice(out.indexOf('['))) as Array<{ files: Array<{ path: string }> }>;
    files = packed[0]?.files.map((f) => f.path) ?? [];
  } finally {
    npm('run', 'postpack', '--silent');
  }
  expect(files).toContain('npm-shrinkwrap.json');
  expect(files).toContain('dist/cli.js');
  // The hooks' bundle, which runner-config's entry starts (scripts/bundle-hooks.mjs).
  expect(files).toContain('dist/executor/bundle/hooks.cjs');
  expect(files.some((f) => f.startsWith('dist/test/') || f.startsWith('test/'))).toBe(false);
  // postpack removes it again: in the checkout, package-lock.json stays the one lockfile.
  expect(existsSync(join(REPO_ROOT, 'npm-shrinkwrap.json'))).toBe(false);
});

it('package-lock.json matches package.json (npm ci would refuse otherwise)', () => {
  const root = lock.packages[''];
  expect(root.dependencies).toEqual(pkg.dependencies);
  expect(root.devDependencies).toEqual(pkg.devDependencies);
  expect(root.engines).toEqual(pkg.engines);
  for (const name of Object.keys(pkg.dependencies)) {
    expect(lock.packages[`node_modules/${name}`]?.version, name).toBeDefined();
  }
});

it('engines.node names the Node versions CI tests, and this one', () => {
  const ci = readFileSync(join(REPO_ROOT, '.ci', 'run'), 'utf8');
  expect(ci).toContain('node@24');
  expect(satisfiesCarets(process.version, pkg.engines.node)).toBe(true);
  for (const v of ['20.19.0', '24.0.0', '24.11.1'])
    expect(satisfiesCarets(v, pkg.engines.node), v).toBe(true);
  // Not claimed: versions CI never runs.
  for (const v of ['18.20.0', '20.0.0', '21.7.0', '22.12.0', '25.0.0'])
    expect(satisfiesCarets(v, pkg.engines.node), v).toBe(false);
});
