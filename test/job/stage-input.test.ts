/**
 * What the container stage asks of both transports (local, and SSH against a real sshd on
 * loopback): bytes streamed after a content script reach it unread on fd 3, exactly, whatever the
 * script's characters, so the script can hand them on (to `docker exec`) without a process to feed them.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTransport } from '../../executor/transports/local.js';
import { createSshTransport } from '../../executor/transports/ssh.js';
import type { Transport } from '../../executor/transports/transport.js';
import { generateInstanceKeys, type StoredInstanceKeys, storeInstanceKeys } from '../../manager/ssh/keys.js';
import { connectInfo } from '../ssh/support.js';
import { type Sshd, startSshd } from '../support/sshd.js';

let work: string;
let sshd: Sshd;
let keys: StoredInstanceKeys;
let sshLog: number;

beforeAll(async () => {
  work = await mkdtemp('/tmp/rf-stage-input-');
  const material = generateInstanceKeys('test');
  keys = await storeInstanceKeys(join(work, 'keys'), material);
  sshd = await startSshd({ authorizedKeys: [material.client.publicKey], hostKey: material.host });
  sshLog = openSync(join(work, 'ssh-output'), 'w');
});

afterAll(async () => {
  if (sshLog !== undefined) closeSync(sshLog);
  await sshd?.stop();
  await rm(work, { recursive: true, force: true });
});

function transportFor(kind: 'local' | 'ssh'): Transport {
  if (kind === 'ssh') return createSshTransport(connectInfo(sshd, keys), { stdout: sshLog, stderr: sshLog });
  const root = join(work, 'instance');
  for (const sub of ['home', 'tmp', 'pgids']) mkdirSync(join(root, sub), { recursive: true });
  return new LocalTransport({ kind: 'local', root });
}

describe.each(['local', 'ssh'] as const)('%s transport', (kind) => {
  it('hands the bytes after a script to it on fd 3, exactly, even when the script is not ASCII', async () => {
    const jobDir = await mkdtemp(join(work, `${kind}-job-`));
    const transport = transportFor(kind);
    const out = join(jobDir, 'input-copy');
    // Every byte value, more than a pipe holds, and not a multiple of any block size.
    const input = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      randomBytes(300_001),
    ]);
    const script = Buffer.from(`# ünïcödé — counted in bytes, not characters\nexec cat <&3 3<&- >"$OUT"\n`);
    try {
      const outcome = await transport.runStage(
        {
          scriptPath: '(test)',
          script,
          input,
          stage: 'build_script',
          env: { OUT: out },
          jobTmpDir: jobDir,
          killGraceMs: 500,
        },
        new AbortController().signal,
      );
      expect(outcome).toEqual({ kind: 'exited', code: 0 });
      expect(readFileSync(out).equals(input)).toBe(true);
    } finally {
      await transport.close?.(jobDir);
    }
  });
});
