/**
 * Merges our `[[runners]]` entry into gitlab-runner's config.toml by text, not by a TOML round
 * trip: an operator's file carries comments, ordering and other runners we must not rewrite.
 * Only the lines of our own entry (found by its `name`) are replaced; every other byte stays.
 */
import { randomBytes } from 'node:crypto';
import {
  chownSync,
  closeSync,
  fchmodSync,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { parse } from 'smol-toml';

export const DEFAULT_RUNNER_CONFIG_PATH = '/etc/gitlab-runner/config.toml';

/** The first line of every entry we render: tells a reader who owns the lines below it. */
export const ENTRY_MARKER =
  '# Managed by runner-fleet: `runner-fleet runner-config --write` replaces this entry.';

export class MergeError extends Error {
  override name = 'MergeError';
}

export type MergeAction = 'created' | 'appended' | 'replaced' | 'unchanged';

export interface MergeResult {
  text: string;
  action: MergeAction;
  /** Things the operator should know, e.g. a global `concurrent` too low for the pool. */
  warnings: string[];
}

interface Line {
  text: string;
  /** Offset of the line's first character in the document. */
  start: number;
  /** Offset just past the line's newline (or the end of the document). */
  end: number;
  /** A table header outside any multi-line string: its dotted name and whether it is `[[…]]`. */
  header?: { name: string; array: boolean };
}

const HEADER = /^[ \t]*(\[\[?)[ \t]*([^\]#]+?)[ \t]*(\]\]?)[ \t]*(#.*)?$/;

/** Splits into lines, marking table headers; lines inside `"""`/`'''` strings are never headers. */
function scan(text: string): Line[] {
  const lines: Line[] = [];
  let open: '"""' | "'''" | undefined;
  let offset = 0;
  while (offset < text.length) {
    const newline = text.indexOf('\n', offset);
    const end = newline < 0 ? text.length : newline + 1;
    const raw = text.slice(offset, newline < 0 ? text.length : newline).replace(/\r$/, '');
    const line: Line = { text: raw, start: offset, end };
    if (!open) {
      const m = HEADER.exec(raw);
      if (m && (m[1] === '[[') === (m[3] === ']]')) {
        line.header = { name: (m[2] as string).replace(/[ \t]*\.[ \t]*/g, '.'), array: m[1] === '[[' };
      }
    }
    // Track multi-line strings by counting their delimiters outside the other kind.
    for (const delim of ['"""', "'''"] as const) {
      if (open && open !== delim) continue;
      const count = raw.split(delim).length - 1;
      if (count % 2 === 1) open = open ? undefined : delim;
    }
    lines.push(line);
    offset = end;
  }
  return lines;
}

const isRunnerStart = (l: Line) => l.header?.array === true && l.header.name === 'runners';
const belongsToRunner = (l: Line) => l.header?.name.startsWith('runners.') === true;
const isBlankOrComment = (l: Line) => /^[ \t]*(#.*)?$/.test(l.text);

interface Block {
  /** First line index (our marker comment if present, else the header). */
  from: number;
  /** One past the last line index that belongs to the entry (trailing comments excluded). */
  to: number;
  name: string | undefined;
}

function runnerBlocks(text: string, lines: Line[]): Block[] {
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!isRunnerStart(lines[i] as Line)) continue;
    let j = i + 1;
    while (j < lines.length) {
      const l = lines[j] as Line;
      if (l.header && !belongsToRunner(l)) break;
      j++;
    }
    // Comments and blank lines before the next section are the next section's preamble.
    let to = j;
    while (to > i + 1 && isBlankOrComment(lines[to - 1] as Line)) to--;
    let from = i;
    if (from > 0 && (lines[from - 1] as Line).text.trim() === ENTRY_MARKER) from--;
    const body = text.slice((lines[i] as Line).start, (lines[to - 1] as Line).end);
    let name: string | undefined;
    try {
      const doc = parse(body) as { runners?: Array<{ name?: unknown }> };
      const n = doc.runners?.[0]?.name;
      name = typeof n === 'string' ? n : undefined;
    } catch {
      name = undefined; // Not parseable on its own: certainly not an entry we rendered.
    }
    blocks.push({ from, to, name });
  }
  return blocks;
}

/** The global section for a config.toml we create: `concurrent` must allow the whole pool. */
export function renderGlobalSection(concurrent: number): string {
  return `# gitlab-runner configuration, created by \`runner-fleet runner-config --write\`.
# Global settings are yours to change; runner-fleet only ever replaces its own [[runners]] entry.
concurrent = ${concurrent}
check_interval = 0
shutdown_timeout = 0
`;
}

/**
 * Puts `entry` (rendered text beginning with ENTRY_MARKER, a `[[runners]]` whose name is `name`)
 * into `existing`: replaces our previous entry in place, or appends it. Pure.
 */
export function mergeRunnerEntry(
  existing: string | undefined,
  entry: string,
  name: string,
  options: { concurrent: number },
): MergeResult {
  if (!entry.endsWith('\n')) entry += '\n';
  const warnings: string[] = [];
  if (existing === undefined || existing.trim() === '') {
    return { text: `${renderGlobalSection(options.concurrent)}\n${entry}`, action: 'created', warnings };
  }
  let doc: Record<string, unknown>;
  try {
    doc = parse(existing) as Record<string, unknown>;
  } catch (error) {
    throw new MergeError(
      `the existing file is not valid TOML, fix it first (nothing was written): ${(error as Error).message.split('\n')[0]}`,
    );
  }
  const concurrent = typeof doc.concurrent === 'number' ? doc.concurrent : 1;
  if (concurrent < options.concurrent) {
    warnings.push(
      `global "concurrent = ${concurrent}"${typeof doc.concurrent === 'number' ? '' : ' (the default)'} lets gitlab-runner run fewer jobs at once than pool.max_instances = ${options.concurrent}: raise it at the top of the file`,
    );
  }
  const lines = scan(existing);
  const ours = runnerBlocks(existing, lines).filter((b) => b.name === name);
  if (ours.length > 1) {
    throw new MergeError(
      `${ours.length} [[runners]] entries are named "${name}": remove all but one (nothing was written)`,
    );
  }
  const block = ours[0];
  if (block) {
    const start = (lines[block.from] as Line).start;
    const endLine = lines[block.to - 1] as Line;
    // Keep whatever line ending the old entry's last line had (none at the end of the file).
    const end = endLine.end;
    const text = existing.slice(0, start) + entry + existing.slice(end);
    return { text, action: text === existing ? 'unchanged' : 'replaced', warnings };
  }
  let prefix = existing.endsWith('\n') ? existing : `${existing}\n`;
  if (!prefix.endsWith('\n\n')) prefix += '\n';
  return { text: prefix + entry, action: 'appended', warnings };
}

/**
 * Replaces `path` in one step: temp file in the same directory, fsync, rename. A reader (the
 * gitlab-runner process watching this file) sees the old file or the new one, never half of it.
 * The new file keeps the old one's mode and owner; a new file gets `mode`.
 */
export function writeFileAtomic(path: string, text: string, mode = 0o600): void {
  let keep: { mode: number; uid: number; gid: number } | undefined;
  try {
    const st = statSync(path);
    keep = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(temp, 'wx', keep?.mode ?? mode);
  try {
    fchmodSync(fd, keep?.mode ?? mode); // openSync's mode is filtered by the umask.
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw error;
  }
  closeSync(fd);
  try {
    if (keep && process.getuid?.() === 0) chownSync(temp, keep.uid, keep.gid);
    renameSync(temp, path);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  // The rename is durable only once the directory entry is on disk.
  try {
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself already happened.
  }
}
