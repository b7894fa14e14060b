/**
 * docs/security.md lists every boundary with the test that proves it. This keeps the page honest:
 * every test file it cites exists, and every quoted test name in its boundary table is the title
 * of a test (or describe block) in one of the files its row cites.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';

const page = readFileSync(join(REPO_ROOT, 'docs', 'security.md'), 'utf8');
const TEST_PATH = /`(test\/[\w./-]+\.ts)`/g;

/** Rows of the table under "Boundaries and the tests that prove them": boundary → its Test cell. */
function boundaryRows(): Array<{ boundary: string; cell: string }> {
  const from = page.indexOf('## Boundaries and the tests that prove them');
  expect(from, 'the boundary table heading').toBeGreaterThanOrEqual(0);
  const section = page.slice(from, page.indexOf('\n#', from + 1));
  return section
    .split('\n')
    .filter((line) => line.startsWith('| ') && !line.startsWith('| Boundary') && !line.startsWith('| ---'))
    .map((line) => {
      const cells = line.split(' | ').map((c) => c.replace(/^\|\s*|\s*\|$/g, ''));
      return { boundary: cells[0] ?? '', cell: cells[cells.length - 1] ?? '' };
    });
}

/** Whether `name` is the title of an it/test/describe (or it.each) in `source`. */
function hasTest(source: string, name: string): boolean {
  for (const quote of ["'", '"', '`']) {
    const literal = `${quote}${quote === "'" ? name.replaceAll("'", "\\'") : name}${quote}`;
    for (let at = source.indexOf(literal); at >= 0; at = source.indexOf(literal, at + 1)) {
      const before = source.slice(0, at).trimEnd();
      if (/(?:\b(?:it|test|describe)|\))\($/.test(before)) return true;
    }
  }
  return false;
}

describe('docs/security.md', () => {
  it('cites only test files that exist', () => {
    const cited = [...page.matchAll(TEST_PATH)].map((m) => m[1] as string);
    expect(cited.length).toBeGreaterThan(10);
    const missing = cited.filter((path) => !existsSync(join(REPO_ROOT, path)));
    expect(missing).toEqual([]);
  });

  it('names, for every boundary in its table, tests that exist in the files the row cites', () => {
    const rows = boundaryRows();
    expect(rows.length).toBeGreaterThan(5);
    for (const { boundary, cell } of rows) {
      const files = [...cell.matchAll(TEST_PATH)].map((m) => m[1] as string);
      const names = [...cell.matchAll(/\("([^)]*)"\)/g)].flatMap((m) => (m[1] as string).split('", "'));
      expect(files, `${boundary}: a test file`).not.toEqual([]);
      expect(names, `${boundary}: a test name`).not.toEqual([]);
      const sources = files.map((f) => readFileSync(join(REPO_ROOT, f), 'utf8'));
      for (const name of names)
        expect(
          sources.some((source) => hasTest(source, name)),
          `${boundary}: "${name}" is a test in ${files.join(' or ')}`,
        ).toBe(true);
    }
  });
});
