/**
 * The daemon's log lines must survive a SIGKILL: an operator reading the journal after a crash
 * needs the last thing the daemon did (the launch it just made). A buffered or asynchronous
 * destination loses those lines, so this kills a process right after it logs and reads its stdout.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';

const LINES = 2000;

describe('daemon logging', () => {
  it('keeps every line logged before a SIGKILL', async () => {
    const logModule = pathToFileURL(join(REPO_ROOT, 'dist', 'manager', 'log.js')).href;
    // Logs a burst, then dies at once in the same tick: no flush, no exit handler, no event loop turn.
    const script = `
      const { createLogger } = await import(${JSON.stringify(logModule)});
      const log = createLogger('info');
      for (let i = 0; i < ${LINES}; i++) log.info({ seq: i }, 'instance launched');
      process.kill(process.pid, 'SIGKILL');
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
    });
    const signal = await new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('close', (_code, sig) => resolve(sig)),
    );
    expect(signal).toBe('SIGKILL');
    const seqs = out
      .split('\n')
      .filter((line) => line.length > 0)
      .map((line) => (JSON.parse(line) as { seq: number }).seq);
    expect(seqs.length).toBe(LINES);
    expect(seqs.at(-1)).toBe(LINES - 1);
  });
});
