/**
 * An npm cache holding what `npm ci` of one lockfile needs, taken from this machine's own npm cache
 * (`npm config get cache`; CI's `npm ci` filled it): the tarballs (content by integrity) and the
 * registry answers npm asks for them (packuments of the lockfile's packages, and their tarball
 * entries). It is what gitlab-runner's cache restore gives a job whose `cache: paths` holds the npm
 * cache of a previous run of the same lockfile, so a job reaches no registry (tests reach only
 * 127.0.0.1). Files are hard-linked where possible: cacache never rewrites a content file.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative } from 'node:path';

interface LockPackage {
  version?: string;
  integrity?: string;
  os?: string[];
  cpu?: string[];
  libc?: string[];
  optional?: boolean;
}

const REGISTRY = 'https://registry.npmjs.org/';
const KEY_PREFIX = 'make-fetch-happen:request-cache:';

/** This machine's npm cache directory (the one holding `_cacache`). */
export function npmCacheDir(): string {
  return execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8' }).trim();
}

/**
 * Writes `<target>/_cacache` for `lockfile` from `source/_cacache`. Throws, naming the package,
 * when a package `npm ci` installs on this platform is missing from the source cache.
 */
export function prepareNpmCache(
  lockfile: string,
  target: string,
  source = npmCacheDir(),
): { entries: number; files: number } {
  const from = join(source, '_cacache');
  const to = join(target, '_cacache');
  const lock = JSON.parse(readFileSync(lockfile, 'utf8')) as { packages: Record<string, LockPackage> };
  const urls = new Set<string>();
  const needed: Array<[string, string]> = [];
  const optional: string[] = [];
  for (const [path, pkg] of Object.entries(lock.packages)) {
    if (!path) continue;
    const name = path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);
    // The registry's packument URL (scoped names with an encoded slash) and the tarball URL npm
    // derives from name and version, as the lockfile records no `resolved` URLs.
    urls.add(`${REGISTRY}${name}`);
    urls.add(`${REGISTRY}${name.replace('/', '%2f')}`);
    if (pkg.version) urls.add(`${REGISTRY}${name}/-/${name.split('/').pop()}-${pkg.version}.tgz`);
    // Required: every non-optional package, and the platform packages meant for this machine
    // (biome's, rolldown's). Other optional ones (a wasm fallback's dependencies) only if cached.
    const platformPackage = Boolean(pkg.os || pkg.cpu || pkg.libc);
    if (pkg.integrity && (!pkg.optional || (platformPackage && installsHere(pkg)))) {
      needed.push([`${name}@${pkg.version}`, pkg.integrity]);
    } else if (pkg.integrity) {
      optional.push(pkg.integrity);
    }
  }
  let files = 0;
  const copy = (integrity: string): boolean => {
    const rel = contentPath(integrity);
    const src = join(from, rel);
    const dst = join(to, rel);
    if (existsSync(dst)) return true;
    if (!existsSync(src)) return false;
    mkdirSync(dirname(dst), { recursive: true });
    try {
      linkSync(src, dst);
    } catch {
      copyFileSync(src, dst);
    }
    files++;
    return true;
  };
  let entries = 0;
  for (const bucket of walk(join(from, 'index-v5'))) {
    const kept = readFileSync(bucket, 'utf8')
      .split('\n')
      .filter((line) => {
        const tab = line.indexOf('\t');
        if (tab < 0) return false;
        let entry: { key?: string; integrity?: string };
        try {
          entry = JSON.parse(line.slice(tab + 1)) as typeof entry;
        } catch {
          return false;
        }
        if (!entry.key?.startsWith(KEY_PREFIX) || !entry.integrity) return false;
        return urls.has(entry.key.slice(KEY_PREFIX.length)) && copy(entry.integrity);
      });
    if (kept.length === 0) continue;
    entries += kept.length;
    const dst = join(to, relative(from, bucket));
    mkdirSync(dirname(dst), { recursive: true });
    writeFileSync(dst, `${kept.join('\n')}\n`);
  }
  for (const integrity of optional) copy(integrity);
  const missing = needed.filter(([, integrity]) => !copy(integrity)).map(([spec]) => spec);
  if (missing.length > 0) {
    throw new Error(
      `the npm cache ${source} lacks ${missing.length} package(s) of ${lockfile} (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}): run \`npm ci\` once to fill it`,
    );
  }
  return { entries, files };
}

/** Whether npm installs this package on this machine (optional ones are per os/cpu/libc). */
function installsHere(pkg: LockPackage): boolean {
  const fits = (list: string[] | undefined, value: string) =>
    !list ||
    list.length === 0 ||
    list.includes(value) ||
    (!list.includes(`!${value}`) && list.every((v) => v.startsWith('!')));
  const libc =
    process.report?.getReport &&
    (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime
      ? 'glibc'
      : 'musl';
  return (
    fits(pkg.os, process.platform) &&
    fits(pkg.cpu, process.arch) &&
    (process.platform !== 'linux' || fits(pkg.libc, libc))
  );
}

/** cacache's content path for an SRI integrity string (its first hash). */
function contentPath(integrity: string): string {
  const [algorithm, base64] = integrity.split(/\s+/)[0]!.split(/-(.*)/s) as [string, string];
  const hex = Buffer.from(base64, 'base64').toString('hex');
  return join('content-v2', algorithm, hex.slice(0, 2), hex.slice(2, 4), hex.slice(4));
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? walk(join(dir, entry.name)) : [join(dir, entry.name)],
  );
}
