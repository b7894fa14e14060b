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
import type { StageOutcome, StageRequest, Transport } from '../../executor/transports/transport.js';
import { generateInstanceKeys, storeInstanceKeys } from '../../manager/ssh/keys.js';
import { connectInfo } from '../ssh/support.js';
import { type Sshd, startSshd } from '../support/sshd.js';

let work: string;
let sshd: Sshd;
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  work = await mkdtemp('/tmp/rf-stage-input-');
  const material = generateInstanceKeys('test');
  const keys = await storeInstanceKeys(join(work, 'keys'), material);
  sshd = await startSshd({ authorizedKeys: [material.client.publicKey], hostKey: material.host });
  transports.ssh = () => {
    const out = openSync(join(work, `ssh-out-${randomBytes(4).toString('hex')}`), 'w');
    const transport = createSshTransport(connectInfo(sshd, keys), { stdout: out, stderr: out });
    closers.push(async () => closeSync(out));
    return transport;
  };
});

afterAll(async () => {
  for (const close of closers) await close();
  await sshd?.stop();
  await rm(work, { recursive: true, force: true });
});

const transports: Record<'local' | 'ssh', () => Transport> = {
  local: () => {
    const root = join(work, 'instance');
    for (const sub of ['home', 'tmp', 'pgids']) mkdirSync(join(root, sub), { recursive: true });
    return new LocalTransport({ kind: 'local', root });
  },
  ssh: () => {
    throw new Error('set up in beforeAll');
  },
};

describe.each(['local', 'ssh'] as const)('%s transport', (kind) => {
  let jobDir: string;
  const stage = (
    transport: Transport,
    request: Partial<StageRequest> & { script: Buffer },
    signal = new AbortController().signal,
  ): Promise<StageOutcome> =>
    transport.runStage(
      {
        scriptPath: '(test)',
        stage: 'build_script',
        env: {},
        jobTmpDir: jobDir,
        killGraceMs: 500,
        ...request,
      },
      signal,
    );
  beforeAll(async () => {
    jobDir = await mkdtemp(join(work, `${kind}-job-`));
  });
  afterAll(async () => {
    for (const transport of used) await transport.close?.(jobDir);
  });
  const used: Transport[] = [];
  const open = () => {
    const transport = transports[kind]();
    used.push(transport);
    return transport;
  };

  it('hands the bytes after a script to it on fd 3, exactly, even when the script is not ASCII', async () => {
    const out = join(jobDir, 'input-copy');
    // Every byte value, more than a pipe holds, and not a multiple of any block size.
    const input = Buffer.concat([
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      randomBytes(300_001),
    ]);
    const script = Buffer.from(`# ünïcödé — counted in bytes, not characters\nexec cat <&3 3<&- >"$OUT"\n`);
    const outcome = await stage(open(), { script, input, env: { OUT: out } });
    expect(outcome).toEqual({ kind: 'exited', code: 0 });
    expect(readFileSync(out).equals(input)).toBe(true);
  });
});
