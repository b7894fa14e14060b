/**
 * What the container stage asks of both transports (local, and SSH against a real sshd on
 * loopback): bytes streamed after a content script reach it unread on fd 3, whatever the script's
 * characters; and a stage with a cancel script is ended by that script, not by signals, unless
 * the script fails or the stage outlives the grace and margin.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalTransport } from '../../executor/transports/local.js';
import { createSshTransport } from '../../executor/transports/ssh.js';
import type { StageOutcome, StageRequest, Transport } from '../../executor/transports/transport.js';
import { generateInstanceKeys, storeInstanceKeys } from '../../manager/ssh/keys.js';
import { connectInfo, waitFor } from '../ssh/support.js';
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

  /** A stage that says which way it was asked to end: its cancel script (USR1) or a signal (TERM). */
  const endable = (dir: string) =>
    Buffer.from(
      [
        `echo $$ >${dir}/pid`,
        `trap 'echo got TERM >>${dir}/log; exit 143' TERM`,
        `trap 'echo ended by its cancel script >>${dir}/log; exit 0' USR1`,
        'while :; do sleep 0.05; done',
        '',
      ].join('\n'),
    );

  it('ends a stage by its cancel script, without signalling the stage', async () => {
    const dir = await mkdtemp(join(jobDir, 'cancel-'));
    const controller = new AbortController();
    const result = stage(
      open(),
      { script: endable(dir), cancel: Buffer.from(`kill -USR1 "$(cat ${dir}/pid)"\n`) },
      controller.signal,
    );
    await waitFor(() => existsSync(join(dir, 'pid')), 60_000, 'the stage to start');
    controller.abort();
    expect(await result).toEqual({ kind: 'canceled' });
    expect(readFileSync(join(dir, 'log'), 'utf8')).toBe('ended by its cancel script\n');
  });

  it('signals the stage after all when its cancel script fails', async () => {
    const dir = await mkdtemp(join(jobDir, 'cancel-fails-'));
    const controller = new AbortController();
    const result = stage(
      open(),
      { script: endable(dir), cancel: Buffer.from('exit 3\n') },
      controller.signal,
    );
    await waitFor(() => existsSync(join(dir, 'pid')), 60_000, 'the stage to start');
    controller.abort();
    expect(await result).toEqual({ kind: 'canceled' });
    expect(readFileSync(join(dir, 'log'), 'utf8')).toBe('got TERM\n');
  });

  it('signals the stage after all when it outlives its cancel script by the grace and margin', async () => {
    const dir = await mkdtemp(join(jobDir, 'cancel-ignored-'));
    const controller = new AbortController();
    const result = stage(
      open(),
      { script: endable(dir), cancel: Buffer.from('exit 0\n') },
      controller.signal,
    );
    await waitFor(() => existsSync(join(dir, 'pid')), 60_000, 'the stage to start');
    controller.abort();
    expect(await result).toEqual({ kind: 'canceled' });
    expect(readFileSync(join(dir, 'log'), 'utf8')).toBe('got TERM\n');
  });
});
