/**
 * Local jobs isolated: a job script attacks the daemon and another running job, through the
 * real hooks and daemon. Run as root (CI is), each local instance's jobs run as a uid of their
 * own and every attack is refused. Not root, jobs run as the daemon's user (the single-tenant
 * trial mode): the daemon says so at start, and what still holds — the control socket refuses
 * job ops without the job's secret and operator ops without the operator token — is checked.
 */
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { eventually, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';

const asRoot = process.getuid?.() === 0;
let daemon: TestDaemon;
let shared: string;

/** Sends one control request; prints `accepted <reply>` or `refused <why>`. Run by the attacker. */
const CLIENT = `
import { connect } from 'node:net';
const [socket, body] = process.argv.slice(2);
const s = connect(socket);
let out = '';
s.on('connect', () => s.write(body + '\\n'));
s.on('data', (d) => { out += d; });
s.on('error', (e) => { console.log('refused ' + e.code); process.exit(0); });
s.on('close', () => {
  const last = out.trim().split('\\n').pop() ?? '';
  console.log(last.includes('"type":"ok"') ? 'accepted ' + last : 'refused ' + last);
});
`;

beforeAll(async () => {
  shared = mkdtempSync(join(tmpdir(), 'rf-isolation-'));
  chmodSync(shared, 0o1777); // both jobs' uids write here; the sticky bit keeps them apart
  writeFileSync(join(shared, 'client.mjs'), CLIENT, { mode: 0o644 });
  daemon = await startTestDaemon('[pool]\nreconcile_interval = "1s"\n');
});
afterAll(async () => {
  writeFileSync(join(shared, 'done'), '');
  await daemon?.cleanup();
  rmSync(shared, { recursive: true, force: true });
});

it('refuses every attack a job makes on the daemon and on another job', async () => {
  const victimToken = 'glcbt-64_victim-token-8101';
  const victim = runJob(daemon.entry(), {
    id: '8101',
    variables: { CI_JOB_TOKEN: victimToken, VICTIM_MARK: 'victim-environ-8101' },
    // A long-lived child carries the job's exported variables in its environment.
    script: [
      `sleep 300 & echo $! > ${shared}/victim.pid`,
      `echo victim-file > "$CI_PROJECT_DIR/victim.txt"`,
      `for i in $(seq 1 1200); do [ -e ${shared}/done ] && break; sleep 0.1; done`,
      'kill %1',
    ].join('\n'),
  });
  await eventually(
    'the victim job to run',
    async () => existsSync(join(shared, 'victim.pid')),
    (ok) => ok,
    120_000,
  );
  const victimBuilds = join(daemon.stateDir, 'local', 'jobs', '8101', 'builds');
  const send = (name: string, body: object) =>
    `echo "${name}: $(${process.execPath} ${shared}/client.mjs ${daemon.socket} '${JSON.stringify(body)}' 2>&1)"`;
  const attacker = await runJob(daemon.entry(), {
    id: '8102',
    script: [
      'set +e',
      `for f in leases.json job-secrets.json operator.token; do if cat ${daemon.stateDir}/$f >/dev/null 2>&1; then echo "read $f: accepted"; else echo "read $f: refused"; fi; done`,
      `if ls ${daemon.stateDir} >/dev/null 2>&1; then echo "list state dir: accepted"; else echo "list state dir: refused"; fi`,
      send('release other job', { op: 'release', jobId: '8101' }),
      send('acquire fake job', { op: 'acquire', job: { id: '9999' } }),
      send('drain', { op: 'drain' }),
      send('status', { op: 'status' }),
      `if ls ${victimBuilds} >/dev/null 2>&1; then echo "other job tree: accepted"; else echo "other job tree: refused"; fi`,
      `pid=$(cat ${shared}/victim.pid)`,
      'if tr "\\0" "\\n" < /proc/$pid/environ 2>/dev/null | grep -q victim-environ; then echo "other job environ: accepted"; else echo "other job environ: refused"; fi',
      'if kill -0 $pid 2>/dev/null; then echo "signal other job: accepted"; else echo "signal other job: refused"; fi',
    ].join('\n'),
  });
  // No file in the instance trees or their metadata holds the victim's job token: only the
  // daemon's 0600 lease journal does (for job checks after a restart), and it was unreadable above.
  // Scanned while the victim still runs: its instance tree goes once the job is released.
  // The attacker's tree may be going away meanwhile: a file gone between listing and reading is skipped.
  const files = await eventually(
    'a listing of the instance trees',
    async () => {
      try {
        return readdirSync(join(daemon.stateDir, 'local'), { recursive: true, withFileTypes: true })
          .filter((e) => e.isFile())
          .map((e) => join(e.parentPath, e.name));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw error;
      }
    },
    (listed) => listed !== undefined,
    30_000,
  );
  expect(files?.some((f) => f.endsWith('victim.txt'))).toBe(true);
  for (const file of files ?? []) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    expect(text, file).not.toContain(victimToken);
  }
  writeFileSync(join(shared, 'done'), '');
  const victimResult = await victim;
  expect(attacker.outcome, attacker.log).toBe('success');
  const verdicts = Object.fromEntries(
    [...attacker.log.matchAll(/^([a-z .-]+): (accepted|refused)/gm)].map((m) => [m[1], m[2]]),
  );
  const lines = (names: string[]) => Object.fromEntries(names.map((n) => [n, verdicts[n]]));

  // What holds in every mode: the socket wants the job's secret, or the operator's token.
  const socketOps = ['release other job', 'drain', 'status'];
  expect(lines(socketOps), attacker.log).toEqual(Object.fromEntries(socketOps.map((n) => [n, 'refused'])));
  if (!asRoot) {
    expect(daemon.output()).toContain('single-tenant trial mode');
  } else {
    const all = [
      'read leases.json',
      'read job-secrets.json',
      'read operator.token',
      'list state dir',
      'release other job',
      'acquire fake job',
      'drain',
      'status',
      'other job tree',
      'other job environ',
      'signal other job',
    ];
    expect(lines(all), attacker.log).toEqual(Object.fromEntries(all.map((n) => [n, 'refused'])));
    // Refused by the kernel before the daemon heard anything.
    expect(attacker.log).toMatch(/release other job: refused EACCES/);
    expect(daemon.output()).not.toContain('single-tenant trial mode');
  }
  // The victim ran on undisturbed, and the daemon is not draining.
  expect(victimResult.outcome, victimResult.log).toBe('success');
  expect((await daemon.status()).manager.draining).toBe(false);
  expect(statSync(join(daemon.stateDir, 'leases.json')).mode & 0o777).toBe(0o600);
});
