/**
 * SSH transport against plain OpenSSH on the same loopback sshd, in the same run:
 *  (a) per-stage overhead of a `true` stage vs `ssh -S <ControlMaster socket> host true`;
 *  (b) streaming 200 MiB of output vs `ssh host cat <file>` (a fresh connection, as a user would
 *      run it), vs the same through a warm OpenSSH ControlMaster with OpenSSH's defaults (the
 *      target), and through one with the cipher the transport prefers (what is left is the
 *      transport's own cost: the bytes take the same path, sshd → master → the descriptor).
 * Rounds are interleaved so drift on a shared machine hits every side alike, and the order within
 * a round alternates. Times are medians; ratios are the median of per-round ratios (paired), which
 * drift between rounds does not skew.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CIPHERS } from '../executor/transports/ssh/args.js';
import { createSshTransport } from '../executor/transports/ssh.js';
import { generateInstanceKeys, storeInstanceKeys } from '../manager/ssh/keys.js';
import { startSshd } from '../test/support/sshd.js';

const STAGE_ROUNDS = 60;
const STREAM_ROUNDS = 9;
const STREAM_BYTES = 200 * 1024 * 1024;

export async function benchSsh(): Promise<Record<string, number | string>> {
  const work = await mkdtemp('/tmp/rf-bench-ssh-');
  const material = generateInstanceKeys('bench');
  const keys = await storeInstanceKeys(join(work, 'keys'), material);
  const sshd = await startSshd({ authorizedKeys: [material.client.publicKey], hostKey: material.host });
  const devNull = openSync('/dev/null', 'w');
  const jobDir = await mkdtemp(join(work, 'job-'));
  const info = {
    kind: 'ssh' as const,
    host: sshd.host,
    port: sshd.port,
    user: sshd.user,
    identityFile: keys.identityFile,
    hostKey: sshd.hostKeyPublic,
  };
  const transport = createSshTransport(info, { stdout: devNull, stderr: devNull });
  const baselineCtl = join(work, 'openssh-cm');
  const sameCipherCtl = join(work, 'openssh-cm-cipher');
  try {
    const knownHosts = join(work, 'known_hosts');
    await writeFile(knownHosts, `[${sshd.host}]:${sshd.port} ${sshd.hostKeyPublic}\n`);
    // What a user types: their ssh_config applies, only key and pin given on the command line.
    const plain = [
      '-o',
      'BatchMode=yes',
      '-o',
      'IdentitiesOnly=yes',
      '-i',
      keys.identityFile,
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'StrictHostKeyChecking=yes',
      '-p',
      String(sshd.port),
      '-l',
      sshd.user,
    ];
    const startMaster = async (ctl: string, extra: string[]) => {
      const master = await run([
        'ssh',
        ...plain,
        ...extra,
        '-M',
        '-N',
        '-f',
        '-S',
        ctl,
        '-o',
        'ControlPersist=120',
        sshd.host,
      ]);
      if (master.code !== 0) throw new Error('could not start the OpenSSH ControlMaster baseline');
    };
    await startMaster(baselineCtl, []);
    await startMaster(sameCipherCtl, ['-o', `Ciphers=${CIPHERS}`]);

    const trueScript = join(jobDir, 'true.sh');
    await writeFile(trueScript, 'true\n');
    const stage = async (scriptPath: string) => {
      const started = process.hrtime.bigint();
      const outcome = await transport.runStage(
        {
          scriptPath,
          stage: 'bench',
          env: { RUNNER_FLEET_INSTANCE_ID: 'i-bench' },
          jobTmpDir: jobDir,
          killGraceMs: 1000,
        },
        new AbortController().signal,
      );
      if (outcome.kind !== 'exited' || outcome.code !== 0)
        throw new Error(`bench stage failed: ${JSON.stringify(outcome)}`);
      return ms(started);
    };
    const firstStageMs = await stage(trueScript); // includes connecting the master

    const muxTrue = ['ssh', '-S', baselineCtl, '-p', String(sshd.port), '-l', sshd.user, sshd.host, 'true'];
    const muxTrueNoConfig = ['ssh', '-F', 'none', ...muxTrue.slice(1)];
    // The same stage the way a plain OpenSSH setup runs it: the script streamed to `bash -s`
    // through the master. Apples to apples with what runStage does.
    const muxScript = [...muxTrue.slice(0, -1), 'bash', '-s'];
    const ours: number[] = [];
    const openssh: number[] = [];
    const opensshNoConfig: number[] = [];
    const opensshScript: number[] = [];
    for (let i = 0; i < 5; i++) {
      await stage(trueScript);
      await timed(muxTrue);
    }
    for (let i = 0; i < STAGE_ROUNDS; i++) {
      ours.push(await stage(trueScript));
      openssh.push(await timed(muxTrue));
      opensshNoConfig.push(await timed(muxTrueNoConfig));
      opensshScript.push(await timed(muxScript, 'ignore', trueScript));
    }

    const blob = join(work, 'blob');
    await writeBlob(blob, STREAM_BYTES);
    const catScript = join(jobDir, 'cat.sh');
    await writeFile(catScript, `cat ${blob}\n`);
    const direct = ['ssh', ...plain, sshd.host, `cat ${blob}`];
    const viaMaster = (ctl: string) => [
      'ssh',
      '-S',
      ctl,
      '-p',
      String(sshd.port),
      '-l',
      sshd.user,
      sshd.host,
      `cat ${blob}`,
    ];
    const streams = {
      ours: () => stage(catScript),
      direct: () => timed(direct, devNull),
      mux: () => timed(viaMaster(baselineCtl), devNull),
      muxSameCipher: () => timed(viaMaster(sameCipherCtl), devNull),
    };
    type Side = keyof typeof streams;
    const sides = Object.keys(streams) as Side[];
    const samples: Record<Side, number[]> = { ours: [], direct: [], mux: [], muxSameCipher: [] };
    for (const side of sides) await streams[side](); // warm: the blob in the page cache, each master used once
    for (let i = 0; i < STREAM_ROUNDS; i++) {
      for (const side of i % 2 ? [...sides].reverse() : sides) samples[side].push(await streams[side]());
    }
    const mib = STREAM_BYTES / 1024 / 1024;
    const rate = (samples: number[]) => round(mib / (median(samples) / 1000));
    return {
      ssh_first_stage_ms: round(firstStageMs),
      ssh_stage_ms: round(median(ours)),
      openssh_mux_true_ms: round(median(openssh)),
      openssh_mux_true_no_config_ms: round(median(opensshNoConfig)),
      ssh_stage_overhead_ratio: round(pairedRatio(ours, openssh), 3),
      ssh_stage_overhead_ratio_vs_no_config: round(pairedRatio(ours, opensshNoConfig), 3),
      openssh_mux_bash_s_script_ms: round(median(opensshScript)),
      ssh_stage_overhead_ratio_vs_mux_bash_s: round(pairedRatio(ours, opensshScript), 3),
      ssh_stream_mib_s: rate(samples.ours),
      openssh_cat_mib_s: rate(samples.direct),
      openssh_mux_cat_mib_s: rate(samples.mux),
      openssh_mux_same_cipher_cat_mib_s: rate(samples.muxSameCipher),
      // Throughput ratio = their time / our time: above 1 means the transport is faster.
      ssh_stream_throughput_ratio: round(pairedRatio(samples.direct, samples.ours), 3),
      ssh_stream_throughput_ratio_vs_mux: round(pairedRatio(samples.mux, samples.ours), 3),
      ssh_stream_throughput_ratio_vs_mux_same_cipher: round(
        pairedRatio(samples.muxSameCipher, samples.ours),
        3,
      ),
    };
  } finally {
    for (const ctl of [baselineCtl, sameCipherCtl]) await run(['ssh', '-S', ctl, '-O', 'exit', sshd.host]);
    await transport.close(jobDir);
    closeSync(devNull);
    await sshd.stop();
    await rm(work, { recursive: true, force: true });
  }
}

function run(
  argv: string[],
  stdout: number | 'ignore' = 'ignore',
  stdinFile?: string,
): Promise<{ code: number | null }> {
  return new Promise((resolve, reject) => {
    const stdin = stdinFile ? openSync(stdinFile, 'r') : 'ignore';
    const child = spawn(argv[0]!, argv.slice(1), { stdio: [stdin, stdout, 'ignore'] });
    if (typeof stdin === 'number') closeSync(stdin);
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code });
    });
  });
}

async function timed(
  argv: string[],
  stdout: number | 'ignore' = 'ignore',
  stdinFile?: string,
): Promise<number> {
  const started = process.hrtime.bigint();
  const { code } = await run(argv, stdout, stdinFile);
  if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}`);
  return ms(started);
}

/** Incompressible bytes, so neither side gains from anything but raw transport speed. */
async function writeBlob(path: string, bytes: number): Promise<void> {
  const { randomFill } = await import('node:crypto');
  const handle = await open(path, 'w');
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  try {
    for (let written = 0; written < bytes; written += chunk.length) {
      await new Promise<void>((resolve, reject) =>
        randomFill(chunk, (error) => (error ? reject(error) : resolve())),
      );
      await handle.write(chunk, 0, Math.min(chunk.length, bytes - written));
    }
  } finally {
    await handle.close();
  }
}

function ms(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function pairedRatio(numerators: number[], denominators: number[]): number {
  return median(numerators.map((value, i) => value / denominators[i]!));
}

function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await benchSsh();
  for (const [name, value] of Object.entries(results)) console.log(`${name.padEnd(40)} ${value}`);
}
