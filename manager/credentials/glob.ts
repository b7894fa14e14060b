/**
 * A deliberately small glob dialect for matching GitLab paths, refs and environment names:
 *
 * - `*`  any run of characters within one `/`-separated segment (possibly empty)
 * - `**` as a whole segment: any number of segments. At the end it needs at least one (`a/**`
 *        matches `a/b/c` but not `a`); in the middle or at the start also none (the segments
 *        `a`, `**`, `b` match `a/b` and `a/x/y/b`); alone it matches everything.
 * - `?`  exactly one character other than `/`
 * - anything else matches itself, case-sensitively (GitLab's claims carry the canonical spelling)
 *
 * Brackets, braces, negation and backslash escapes are refused rather than half-supported: a rule
 * that silently matches something other than what its author meant is a privilege bug, so an
 * unsupported pattern is a load error instead.
 */

export class GlobError extends Error {}

const UNSUPPORTED = /[[\]{}\\]/;
const REGEX_SPECIAL = /[.*+?^${}()|[\]\\/]/g;

/** Compile a glob to an anchored RegExp; throws GlobError with a reason a config author can act on. */
export function compileGlob(pattern: string): RegExp {
  if (pattern.length === 0) throw new GlobError('empty pattern');
  if (pattern.length > 512) throw new GlobError('pattern longer than 512 characters');
  const bad = UNSUPPORTED.exec(pattern);
  if (bad)
    throw new GlobError(`unsupported character ${JSON.stringify(bad[0])} (only *, ** and ? are special)`);
  if (pattern.startsWith('!')) throw new GlobError('negation (leading "!") is not supported');
  if (pattern.includes('//')) throw new GlobError('empty path segment ("//")');

  const segments = pattern.split('/');
  let source = '';
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1;
    if (segment === '**') {
      // `**` swallows whole segments, including the separator that follows it, so that `a/**/b`
      // also matches `a/b`. At the end it needs at least one character, so `a/**` does not match `a`.
      source += last ? '.+' : '(?:[^/]*/)*';
      return;
    }
    if (segment.includes('**'))
      throw new GlobError(`"**" must be a whole path segment, not part of "${segment}"`);
    for (const char of segment) {
      if (char === '*') source += '[^/]*';
      else if (char === '?') source += '[^/]';
      else source += char.replace(REGEX_SPECIAL, '\\$&');
    }
    if (!last) source += '/';
  });
  return new RegExp(`^${source}$`, 'u');
}

/** Test a value against a compiled glob. Kept separate so callers never build RegExps themselves. */
export function globMatches(glob: RegExp, value: string): boolean {
  return glob.test(value);
}
