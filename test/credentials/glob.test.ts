import { describe, expect, it } from 'vitest';
import { compileGlob, GlobError } from '../../manager/credentials/glob.js';

const cases: [pattern: string, matches: string[], misses: string[]][] = [
  ['platform/api', ['platform/api'], ['platform/api2', 'platform/ap', 'xplatform/api', 'platform/api/x']],
  ['platform/*', ['platform/api', 'platform/'], ['platform', 'platform/a/b', 'other/api']],
  ['platform/**', ['platform/api', 'platform/a/b/c'], ['platform', 'platformx/api', 'other/platform/api']],
  ['**/api', ['api', 'platform/api', 'a/b/api'], ['api2', 'platform/api/x']],
  ['platform/**/api', ['platform/api', 'platform/x/api', 'platform/x/y/api'], ['platform/xapi', 'other/api']],
  ['**', ['a', 'a/b/c'], ['']],
  ['release/v?.*', ['release/v1.2', 'release/v9.x'], ['release/v10.2', 'release/v1/2']],
  ['review/*', ['review/feature-1'], ['review/a/b', 'review']],
  // Regex metacharacters are literals.
  ['a.b+c(d)', ['a.b+c(d)'], ['aXb+c(d)', 'a.bbc(d)']],
  ['v1.$x^', ['v1.$x^'], ['v12$x^']],
];

describe('compileGlob', () => {
  it.each(cases)('%s', (pattern, matches, misses) => {
    const glob = compileGlob(pattern);
    for (const value of matches) expect(glob.test(value), `${pattern} should match ${value}`).toBe(true);
    for (const value of misses) expect(glob.test(value), `${pattern} should not match ${value}`).toBe(false);
  });

  it.each([
    ['', 'empty'],
    ['platform/[ab]', 'unsupported character'],
    ['platform/{a,b}', 'unsupported character'],
    ['platform/a\\*', 'unsupported character'],
    ['!platform/**', 'negation'],
    ['platform/a**', 'whole path segment'],
    ['platform//api', 'empty path segment'],
  ])('refuses %j', (pattern, message) => {
    expect(() => compileGlob(pattern)).toThrow(GlobError);
    expect(() => compileGlob(pattern)).toThrow(message);
  });
});
