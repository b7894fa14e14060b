/**
 * The hooks start as new processes for every stage of every job, so what they load is measured:
 * the whole import graph of each hook (static imports, plus the lazily imported hook module and
 * both transports) must be our own small modules and node: built-ins — no AWS SDK, no pino, no
 * zod, no TOML parser.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';

const DIST = join(REPO_ROOT, 'dist');
const SPECIFIER = /(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function graph(entries: string[]): { files: Set<string>; bare: Set<string>; bytes: number } {
  const files = new Set<string>();
  const bare = new Set<string>();
  const queue = [...entries];
  let bytes = 0;
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    const text = readFileSync(file, 'utf8');
    bytes += statSync(file).size;
    for (const match of text.matchAll(SPECIFIER)) {
      const spec = (match[1] ?? match[2]) as string;
      if (spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
      else bare.add(spec);
    }
  }
  return { files, bare, bytes };
}

describe('hook import graph', () => {
  const cli = join(DIST, 'cli.js');
  const hookEntry = (name: string) => join(DIST, 'executor', 'hooks', `${name}.js`);
  // cli.js lazily imports every command; a hook process loads cli.js itself plus its own hook.
  const cliAlone = (() => {
    const text = readFileSync(cli, 'utf8');
    return [...text.matchAll(/^import .* from ['"]([^'"]+)['"]/gm)].map((m) => m[1]);
  })();

  it('cli.js has no static imports at all (every command is loaded on demand)', () => {
    expect(cliAlone).toEqual([]);
  });

  it.each(['config', 'prepare', 'run', 'cleanup'])(
    'the %s hook loads only small local modules and built-ins',
    (name) => {
      // cli.js itself (no static imports, checked above) plus everything the hook module reaches.
      const { files, bare, bytes: hookBytes } = graph([hookEntry(name)]);
      const bytes = hookBytes + statSync(cli).size;
      files.add(cli);
      expect([...bare]).toEqual([]);
      for (const file of files) expect(file.startsWith(DIST)).toBe(true);
      // A budget, not a target: today about 15 modules and 60 KB with both transports.
      expect(files.size).toBeLessThanOrEqual(25);
      expect(bytes).toBeLessThan(150_000);
      console.log(`${name}: ${files.size} modules, ${(bytes / 1024).toFixed(1)} KiB`);
    },
  );
});
