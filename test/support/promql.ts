/**
 * Just enough PromQL and Prometheus text format to check a dashboard against a real scrape:
 * which metric names an expression selects, and which series names a /metrics body exports.
 */

const KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/** The metric names an expression selects (function names, labels, keywords and numbers left out). */
export function metricNames(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const before = s[m.index - 1] ?? '';
    // The exponent of a number such as 1e3, or a Grafana variable such as $instance.
    if (/[0-9.$]/.test(before)) continue;
    if (/^\s*\(/.test(s.slice(m.index + m[0].length))) continue;
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

/** Family name → type, from the `# TYPE` lines of a Prometheus text-format body. */
export function exportedFamilies(body: string): Map<string, string> {
  const families = new Map<string, string>();
  for (const m of body.matchAll(/^# TYPE (\S+) (\S+)$/gm)) families.set(m[1]!, m[2]!);
  return families;
}

/** Whether a selected name is a series the body exports (histogram and summary suffixes included). */
export function isExported(name: string, families: ReadonlyMap<string, string>): boolean {
  const type = families.get(name);
  if (type !== undefined) return type !== 'histogram' && type !== 'summary';
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (!m) return false;
  const base = families.get(m[1]!);
  return base === 'histogram' || (base === 'summary' && m[2] !== 'bucket');
}
