/**
 * Best-effort: the line where a key path is written in a TOML text, so a validation error can say
 * "config.toml:14" and not only "pool.max_instances". Handles `[table]`, `[[array.of.tables]]` and
 * `key = value` lines, which is what ops write; anything fancier just yields no line.
 */
export function locateKey(text: string, path: readonly PropertyKey[]): number | undefined {
  const lines = text.split('\n');
  const arrayCounts = new Map<string, number>();
  let currentTable: PropertyKey[] = [];
  let best: number | undefined;
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    const header = /^\[\[\s*([^\]]+?)\s*\]\]/.exec(line) ?? /^\[\s*([^\]]+?)\s*\]/.exec(line);
    if (header) {
      const names = (header[1] as string).split('.').map((n) => n.trim().replace(/^"|"$/g, ''));
      if (line.startsWith('[[')) {
        const key = names.join('.');
        const n = arrayCounts.get(key) ?? 0;
        arrayCounts.set(key, n + 1);
        currentTable = [...names, n];
      } else {
        currentTable = names;
      }
      if (sameStart(path, currentTable) && currentTable.length === path.length) best = index + 1;
      continue;
    }
    const keyMatch = /^("?)([A-Za-z0-9_-]+)\1\s*=/.exec(line);
    if (!keyMatch) continue;
    const full = [...currentTable, keyMatch[2] as string];
    if (sameStart(path, full)) {
      if (full.length === path.length) return index + 1;
      best ??= index + 1;
    }
  }
  if (best !== undefined) return best;
  // The key is missing altogether (e.g. a required key): point at its table's header if any.
  return path.length > 1 ? locateKey(text, path.slice(0, -1)) : undefined;
}

function sameStart(path: readonly PropertyKey[], prefix: readonly PropertyKey[]): boolean {
  if (prefix.length > path.length) return false;
  return prefix.every((p, i) => String(p) === String(path[i]));
}
