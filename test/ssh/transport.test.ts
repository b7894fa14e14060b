/**
 * The SSH transport against a real OpenSSH sshd on loopback: output relay, exit codes, pinned
 * host key, refused key, connection loss, cancel, back-pressure, and no script on the far disk.
 */
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobPaths } from '../../executor/transports/ssh/args.js';
import { generateInstanceKeys, type StoredInstanceKeys, storeInstanceKeys } from '../../manager/ssh/keys.js';
import { type Sshd, startSshd } from '../support/sshd.js';
import { connectInfo, type Job, newJob, pgrep, startDriver, waitFor } from './support.js';

let work: string;
let keys: StoredInstanceKeys;
let otherKeys: StoredInstanceKeys;
let sshd: Sshd;
const jobs: Job[] = [];

beforeAll(async () => {
  work = await mkdtemp('/tmp/rf-ssh-test-');
  const material = generateInstanceKeys('test');
  keys = await storeInstanceKeys(join(work, 'keys'), material);
  otherKeys = await storeInstanceKeys(join(work, 'other-keys'), generateInstanceKeys('other'));
  sshd = await startSshd({ authorizedKeys: [material.client.publicKey], hostKey: material.host });
});

afterAll(async () => {
  for (const job of jobs) {
    await job.close();
    // Jobs whose sshd was crashed or frozen could not clean up "on the instance", which is here.
    const prefix = `.runner-fleet-${jobPaths(job.dir).jobKey}-`;
    for (const dir of ['/dev/shm', '/tmp']) {
      for (const name of readdirSync(dir).filter((n) => n.startsWith(prefix))) await rm(join(dir, name));
    }
  }
  await sshd?.stop();
  await rm(work, { recursive: true, force: true });
});

async function job(options: Parameters<typeof newJob>[2] = {}, target = sshd, key = keys): Promise<Job> {
  const j = await newJob(work, connectInfo(target, key), options);
  jobs.push(j);
  return j;
}

describe('stages', () => {
  it('runs a script, relays stdout and stderr, and passes the stage environment', async () => {
    const j = await job();
    const { outcome, stdout, stderr } = await j.run(
      '#!/usr/bin/env bash\nset -eo pipefail\necho "hello $RUNNER_FLEET_INSTANCE_ID"\necho "$ODD" >&2\necho "line $LINENO"\n',
      { env: { RUNNER_FLEET_INSTANCE_ID: 'i-0123', ODD: `it's "odd" $HOME \\ \`x\`` } },
    );
    expect(outcome).toEqual({ kind: 'exited', code: 0 });
    // Line numbers stay those of the script file: the prefix shares its first line.
    expect(stdout.toString()).toBe('hello i-0123\nline 5\n');
    expect(stderr.toString()).toBe(`it's "odd" $HOME \\ \`x\`\n`);
  });

  it('relays exit codes, including 255 and commands killed by a signal', async () => {
    const j = await job();
    expect((await j.run('exit 3')).outcome).toEqual({ kind: 'exited', code: 3 });
    expect((await j.run('set -e\nfalse\necho unreachable')).outcome).toEqual({ kind: 'exited', code: 1 });
    expect((await j.run('exit 255')).outcome).toEqual({ kind: 'exited', code: 255 });
    expect((await j.run('sleep 30 &\nkill -KILL $!\nwait $!')).outcome).toEqual({
      kind: 'exited',
      code: 137,
    });
    // The script's own shell killed: OpenSSH reports 255, and the connection is still up.
    expect((await j.run('kill -KILL $$')).outcome).toEqual({ kind: 'exited', code: 255 });
  });

  it('reuses one master connection across stages and closes it on close()', async () => {
    const j = await newJob(work, connectInfo(sshd, keys));
    const paths = jobPaths(j.dir);
    await j.run('true');
    const pid = Number(readFileSync(paths.masterPidFile, 'utf8'));
    expect(statSync(paths.dir).mode & 0o777).toBe(0o700);
    for (let i = 0; i < 3; i++) expect((await j.run(`echo ${i}`)).stdout.toString()).toBe(`${i}\n`);
    expect(Number(readFileSync(paths.masterPidFile, 'utf8'))).toBe(pid);
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    await j.close();
    await waitFor(
      () => !existsSync(`/proc/${pid}/cmdline`) || readFileSync(`/proc/${pid}/cmdline`, 'utf8') === '',
      3_000,
      'master exit',
    );
    expect(existsSync(paths.dir)).toBe(false);
    await j.close(); // idempotent
  });

  it('starts a new master when the previous one was killed', async () => {
    const j = await job();
    const paths = jobPaths(j.dir);
    await j.run('true');
    const pid = Number(readFileSync(paths.masterPidFile, 'utf8'));
    process.kill(pid, 'SIGKILL');
    await waitFor(
      () => !existsSync(`/proc/${pid}/cmdline`) || readFileSync(`/proc/${pid}/cmdline`, 'utf8') === '',
      3_000,
      'master death',
    );
    expect(existsSync(paths.controlPath)).toBe(true); // stale socket left behind
    expect((await j.run('echo again')).stdout.toString()).toBe('again\n');
    const next = Number(readFileSync(paths.masterPidFile, 'utf8'));
    expect(next).not.toBe(pid);
    expect(readFileSync(`/proc/${next}/cmdline`, 'utf8')).toContain(paths.controlPath);
  });

  it('keeps stdin away from the script: commands that read stdin get EOF', async () => {
    const j = await job();
    const padding = `# ${'x'.repeat(1000)}\n`.repeat(2000);
    const { outcome, stdout } = await j.run(`cat\nread -r line || echo "eof"\n${padding}echo end\n`);
    expect(outcome).toEqual({ kind: 'exited', code: 0 });
    expect(stdout.toString()).toBe('eof\nend\n');
  });

  it('relays 300k lines in order', async () => {
    const j = await job();
    const { outcome, stdout } = await j.run('seq 1 300000');
    expect(outcome).toEqual({ kind: 'exited', code: 0 });
    const lines = stdout.toString().split('\n');
    expect(lines.length).toBe(300_001);
    for (let i = 0; i < 300_000; i++)
      if (lines[i] !== String(i + 1)) throw new Error(`line ${i + 1}: ${lines[i]}`);
  });

  it('is binary safe: all 256 byte values on stdout and stderr', async () => {
    const j = await job();
    const script =
      'for r in 1 2 3; do for i in $(seq 0 255); do printf "\\\\$(printf %03o "$i")"; done; done | tee /dev/stderr';
    const { outcome, stdout, stderr } = await j.run(script);
    expect(outcome).toEqual({ kind: 'exited', code: 0 });
    const expected = Buffer.alloc(768);
    for (let i = 0; i < 768; i++) expected[i] = i % 256;
    expect(stdout.equals(expected)).toBe(true);
    expect(stderr.equals(expected)).toBe(true);
  });
});

describe('ciphers', () => {
  it('negotiates AES-GCM with a default sshd, and falls back to what an sshd without it offers', async () => {
    const material = generateInstanceKeys('ciphers');
    const stored = await storeInstanceKeys(join(work, 'cipher-keys'), material);
    for (const [serverCiphers, expected] of [
      [undefined, 'aes128-gcm@openssh.com'],
      ['chacha20-poly1305@openssh.com', 'chacha20-poly1305@openssh.com'],
    ] as const) {
      const server = await startSshd({
        authorizedKeys: [material.client.publicKey],
        hostKey: material.host,
        extraConfig: ['LogLevel DEBUG1', ...(serverCiphers ? [`Ciphers ${serverCiphers}`] : [])],
      });
      try {
        const j = await job({}, server, stored);
        const { outcome, stdout } = await j.run('echo ok');
        expect(outcome).toEqual({ kind: 'exited', code: 0 });
        expect(stdout.toString()).toBe('ok\n');
        expect(server.log()).toMatch(new RegExp(`kex: server->client cipher: ${expected} `));
        await j.close();
      } finally {
        await server.stop();
      }
    }
  });
});

describe('refusals', () => {
  it('refuses a host that does not present the pinned host key', async () => {
    const impostor = generateInstanceKeys('impostor').host.publicKey;
    const j = await newJob(work, connectInfo(sshd, keys, { hostKey: impostor }));
    jobs.push(j);
    const { outcome, stdout } = await j.run('echo should-not-run');
    expect(outcome.kind).toBe('system-failure');
    expect(outcome.kind === 'system-failure' && outcome.message).toMatch(/host key mismatch/);
    expect(stdout.length).toBe(0);
  });

  it('reports a client key the instance does not accept', async () => {
    const j = await job({}, sshd, otherKeys);
    const { outcome } = await j.run('echo should-not-run');
    expect(outcome.kind === 'system-failure' && outcome.message).toMatch(/authentication refused/);
  });

  it('retries a closed port within the connect budget, then reports the instance unreachable', async () => {
    const closed = { ...sshd, port: 1 } as Sshd;
    const j = await job({ connectBudgetMs: 1_500 }, closed);
    const { outcome } = await j.run('true');
    // Giving up (not hanging) is the behaviour; the attempts it names show it retried.
    expect(outcome.kind === 'system-failure' && outcome.message).toMatch(
      /instance unreachable .*Connection refused.*gave up after [2-9] attempt/,
    );
  });

  it('ends the stage as a system failure when the server dies mid-stage', async () => {
    const material = generateInstanceKeys('crash');
    const own = await storeInstanceKeys(join(work, 'crash-keys'), material);
    const doomed = await startSshd({ authorizedKeys: [material.client.publicKey], hostKey: material.host });
    try {
      const j = await job({}, doomed, own);
      const stage = j.start('echo started; sleep 60; echo never');
      await waitFor(() => stage.stdout().includes('started'), 60_000, 'stage start');
      await doomed.crash();
      const outcome = await stage.result;
      expect(outcome.kind === 'system-failure' && outcome.message).toMatch(/lost mid-stage/);
      expect(stage.stdout()).not.toContain('never');
    } finally {
      await doomed.stop();
    }
  });
});

describe('cancel', () => {
  it('kills the remote process tree, and the next stage (after_script) still runs', async () => {
    const j = await job();
    const stage = j.start('sleep 31411 & sleep 31412; echo never');
    await waitFor(() => pgrep('sleep 3141[12]').length === 2, 60_000, 'remote sleeps');
    stage.controller.abort();
    expect(await stage.result).toEqual({ kind: 'canceled' });
    await waitFor(() => pgrep('sleep 3141[12]').length === 0, 60_000, 'remote sleeps to end');
    expect(stage.stdout()).not.toContain('never');
    const after = await j.run('echo after_script');
    expect(after.outcome).toEqual({ kind: 'exited', code: 0 });
    expect(after.stdout.toString()).toBe('after_script\n');
  });

  it('lets the script handle SIGTERM and relays what it prints meanwhile', async () => {
    const j = await job();
    const stage = j.start("trap 'echo trapped; exit 7' TERM\necho started\nsleep 31421 & wait");
    await waitFor(
      () => stage.stdout().includes('started') && pgrep('sleep 31421').length === 1,
      60_000,
      'start',
    );
    stage.controller.abort();
    expect(await stage.result).toEqual({ kind: 'canceled' });
    expect(stage.stdout()).toBe('started\ntrapped\n');
  });

  it('escalates to SIGKILL after the grace period when the script ignores SIGTERM', async () => {
    const j = await job();
    const stage = j.start("trap '' TERM\nsleep 31431 & wait; sleep 31432", { killGraceMs: 500 });
    await waitFor(() => pgrep('sleep 31431').length === 1, 60_000, 'start');
    // Without the escalation the stage would wait on a sleep of hours: ending at all is the proof.
    stage.controller.abort();
    expect(await stage.result).toEqual({ kind: 'canceled' });
    await waitFor(() => pgrep('sleep 3143[12]').length === 0, 60_000, 'remote sleeps to end');
  });

  it('still ends when the network hangs (the control timeout, not a dead TCP peer, decides)', async () => {
    const material = generateInstanceKeys('hang');
    const own = await storeInstanceKeys(join(work, 'hang-keys'), material);
    const frozen = await startSshd({ authorizedKeys: [material.client.publicKey], hostKey: material.host });
    try {
      const j = await job({ controlTimeoutMs: 1_500 }, frozen, own);
      const paths = jobPaths(j.dir);
      const stage = j.start('echo started; sleep 31441');
      await waitFor(() => stage.stdout().includes('started'), 60_000, 'stage start');
      const master = Number(readFileSync(paths.masterPidFile, 'utf8'));
      frozen.freeze();
      stage.controller.abort();
      expect(await stage.result).toEqual({ kind: 'canceled' });
      // The master held the stage's output until its keepalive gave up (gitlab-runner waits for
      // that output to close): it is gone by the time the cancel returns.
      const cmdline = existsSync(`/proc/${master}/cmdline`)
        ? readFileSync(`/proc/${master}/cmdline`, 'utf8')
        : '';
      expect(cmdline).not.toContain(paths.controlPath);
      // The network recovers: after_script gets a new master.
      frozen.thaw();
      expect((await j.run('echo after')).stdout.toString()).toBe('after\n');
    } finally {
      frozen.thaw();
      await frozen.stop();
    }
  });

  it('a SIGTERM to the hook process group cancels the stage and ends the remote tree', async () => {
    const j = await job();
    const outcomeFile = join(j.dir, 'outcome.json');
    const scriptPath = join(j.dir, 'script-driver');
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(scriptPath, 'echo started; sleep 31451 & sleep 31452'),
    );
    const driver = startDriver({
      info: j.info,
      request: { scriptPath, stage: 'build_script', env: {}, jobTmpDir: j.dir, killGraceMs: 2_000 },
      outcomeFile,
    });
    let out = '';
    driver.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    const exited = new Promise<number | null>((r) => driver.once('exit', (code) => r(code)));
    await waitFor(() => pgrep('sleep 3145[12]').length === 2, 60_000, 'remote sleeps');
    process.kill(-driver.pid!, 'SIGTERM');
    expect(await exited).toBe(0);
    expect(JSON.parse(readFileSync(outcomeFile, 'utf8')).kind).toBe('canceled');
    expect(out).toBe('started\n');
    await waitFor(() => pgrep('sleep 3145[12]').length === 0, 60_000, 'remote sleeps to end');
  });
});

describe('resources and secrets', () => {
  it('a slow consumer holds the producer back instead of growing the hook', async () => {
    const j = await job();
    const scriptPath = join(j.dir, 'script-flood');
    await import('node:fs/promises').then((fs) => fs.writeFile(scriptPath, 'head -c 200000000 /dev/zero'));
    const driver = startDriver({
      info: j.info,
      request: { scriptPath, stage: 'build_script', env: {}, jobTmpDir: j.dir, killGraceMs: 2_000 },
      outcomeFile: join(j.dir, 'flood.json'),
    });
    const exited = new Promise<void>((r) => driver.once('exit', () => r()));
    const stdout = driver.stdout!;
    stdout.pause();
    // Reading nothing for 2 s: everything in flight must fit in pipe and channel buffers.
    await new Promise((r) => setTimeout(r, 2_000));
    const peakKb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${driver.pid}/status`, 'utf8'))?.[1]);
    expect(peakKb).toBeLessThan(150 * 1024);
    let total = 0;
    stdout.on('data', (chunk: Buffer) => {
      total += chunk.length;
    });
    stdout.resume();
    await exited;
    expect(total).toBe(200_000_000);
  });

  it("the output goes from the master straight into the hook's stdout: the hook copies none of it", async () => {
    const j = await job();
    const release = join(j.dir, 'release');
    expect(spawnSync('mkfifo', [release]).status).toBe(0);
    const scriptPath = join(j.dir, 'script-stream');
    const bytes = 50_000_000;
    // The stage holds its channel open until released, so the master's descriptors can be read.
    writeFileSync(scriptPath, `head -c ${bytes} /dev/zero; read -r _ < ${release}`);
    const outcomeFile = join(j.dir, 'stream.json');
    const driver = startDriver({
      info: j.info,
      request: { scriptPath, stage: 'build_script', env: {}, jobTmpDir: j.dir, killGraceMs: 2_000 },
      outcomeFile,
    });
    const exited = new Promise<void>((r) => driver.once('exit', () => r()));
    let total = 0;
    driver.stdout!.on('data', (chunk: Buffer) => {
      total += chunk.length;
    });
    await waitFor(() => total === bytes, 120_000, 'the whole stream');
    const pipe = readlinkSync(`/proc/${driver.pid}/fd/1`);
    expect(pipe).toMatch(/^(pipe|socket):\[/); // node's 'pipe' stdio is a socket pair
    const masterPid = Number(readFileSync(jobPaths(j.dir).masterPidFile, 'utf8'));
    const masterFds = readdirSync(`/proc/${masterPid}/fd`).map((fd) => {
      try {
        return readlinkSync(`/proc/${masterPid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    expect(masterFds).toContain(pipe);
    // Everything the hook process read so far (its modules included) is a fraction of the stream.
    const read = Number(/rchar:\s+(\d+)/.exec(readFileSync(`/proc/${driver.pid}/io`, 'utf8'))?.[1]);
    expect(read).toBeLessThan(bytes / 5);
    const fd = openSync(release, constants.O_WRONLY | constants.O_NONBLOCK);
    writeSync(fd, 'go\n');
    closeSync(fd);
    await exited;
    expect(JSON.parse(readFileSync(outcomeFile, 'utf8')).kind).toBe('exited');
  });

  it('never writes the script to the instance disk nor to any local log', async () => {
    const j = await job();
    const sentinel = `SECRET_${Date.now()}_${Math.random().toString(36).slice(2)}`;
    const { outcome } = await j.run(`export CI_JOB_TOKEN=${sentinel}\n: "${sentinel}"\nexit 255`);
    expect(outcome).toEqual({ kind: 'exited', code: 255 });
    // The job dir holds our own script copies; everything else there (logs, known_hosts) must not.
    const local = readdirSync(jobPaths(j.dir).dir).map((name) => join(jobPaths(j.dir).dir, name));
    for (const file of local) {
      if (statSync(file).isFile()) expect(readFileSync(file, 'utf8')).not.toContain(sentinel);
    }
    const grep = spawnSync(
      'grep',
      [
        '-rlsF',
        '--exclude-dir',
        work.slice(5),
        '-e',
        sentinel,
        '/tmp',
        '/var/tmp',
        '/dev/shm',
        join(homedir(), '.ssh'),
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    expect(grep.stdout).toBe('');
    const home = readdirSync(homedir()).map((name) => join(homedir(), name));
    const homeFiles = home.filter((file) => {
      try {
        return statSync(file).isFile();
      } catch {
        return false;
      }
    });
    const inHome = spawnSync('grep', ['-lsF', '-e', sentinel, ...homeFiles], { encoding: 'utf8' });
    expect(inHome.stdout).toBe('');
  });
});
