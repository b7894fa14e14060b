/**
 * Config files fuzzed from config.example.toml: whatever the damage, loading either succeeds or
 * fails with a ConfigError that names the file — never another exception, never a crash — and
 * the daemon turns it into exit 78 with one readable line.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../manager/config/load.js';
import { CLI, REPO_ROOT } from '../support/daemon.js';

const example = readFileSync(join(REPO_ROOT, 'config.example.toml'), 'utf8');

/** Small deterministic PRNG so a failure can be replayed from its seed. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

const JUNK = [
  '=',
  '[',
  ']]',
  '"',
  "'''",
  '\\u00',
  '#',
  '\n',
  '= =',
  'true',
  '-1',
  '1e999',
  '"5 minutes"',
  '[[pool]]',
  '\u0000',
  '\uFEFF',
];

function mutate(text: string, random: () => number): string {
  const lines = text.split('\n');
  const edits = 1 + Math.floor(random() * 3);
  for (let e = 0; e < edits; e++) {
    const i = Math.floor(random() * lines.length);
    const line = lines[i] ?? '';
    switch (Math.floor(random() * 6)) {
      case 0: // uncomment a line (brings in optional and example keys)
        lines[i] = line.replace(/^#\s?/, '');
        break;
      case 1: // cut a line short
        lines[i] = line.slice(0, Math.floor(random() * line.length));
        break;
      case 2: // insert junk
        lines[i] =
          `${line.slice(0, Math.floor(random() * line.length))}${JUNK[Math.floor(random() * JUNK.length)]}${line.slice(Math.floor(random() * line.length))}`;
        break;
      case 3: // change a value's type
        lines[i] = line.replace(/= .*$/, `= ${JUNK[Math.floor(random() * JUNK.length)]}`);
        break;
      case 4: // misspell a key
        lines[i] = line.replace(/^(\w+)(\w)( =)/, '$2$1$3');
        break;
      default: // duplicate a line (duplicate keys and tables)
        lines.splice(i, 0, line);
    }
  }
  return lines.join('\n');
}

describe('config files fuzzed from the example', () => {
  it('either load or fail with a ConfigError naming the file (500 variants)', () => {
    const random = prng(20261125);
    let failures = 0;
    for (let n = 0; n < 500; n++) {
      const text = mutate(example, random);
      try {
        parseConfigText(text, 'fuzz.toml');
      } catch (error) {
        failures++;
        if (!(error instanceof ConfigError)) {
          throw new Error(
            `variant ${n} threw ${(error as Error).name}: ${(error as Error).message}\n---\n${text}`,
          );
        }
        expect((error as Error).message.startsWith('fuzz.toml')).toBe(true);
        expect((error as Error).message).not.toMatch(/\n\s+at /);
      }
    }
    // The fuzzing must actually hurt: most variants are broken.
    expect(failures).toBeGreaterThan(100);
  });

  it('the daemon exits 78 with a readable line for a damaged file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-fuzz-'));
    const random = prng(7);
    let checked = 0;
    for (let n = 0; n < 60 && checked < 5; n++) {
      const text = mutate(example, random);
      try {
        parseConfigText(text, 'probe.toml');
        continue;
      } catch {
        checked++;
      }
      const path = join(dir, `fuzz-${n}.toml`);
      writeFileSync(path, text);
      const r = spawnSync(process.execPath, [CLI, 'daemon', '--config', path], {
        encoding: 'utf8',
        timeout: 20_000,
      });
      expect(r.status).toBe(78);
      expect(r.stderr.startsWith(`runner-fleet: ${path}`)).toBe(true);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
    expect(checked).toBe(5);
  });
});
