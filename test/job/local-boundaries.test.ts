/**
 * The fleet-level boundaries on the local provider, through the hooks and the real daemon (the AWS
 * wire fake runs the same attacks in test/aws-e2e/launch-shape.test.ts and provenance.test.ts):
 * - idle instances never cross launch shapes: a default job never gets an instance launched for a
 *   rule with launch settings, nor the reverse;
 * - an instance someone else planted under our root and tagged as ours is never used nor
 *   terminated; it is logged, counted in /metrics, and shown by `status` and `doctor`.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LaunchSigner } from '../../manager/fleet/provenance.js';
import { LocalProvider } from '../../manager/providers/local/local-provider.js';
import { TAG } from '../../manager/providers/tags.js';
import {
  gitlabClaims,
  type JwksServer,
  makeKey,
  type SigningKey,
  signToken,
  startJwksServer,
} from '../credentials/harness.js';
import { CLI, eventually, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { runJob } from '../support/gitlab-runner.js';

const execFileAsync = promisify(execFile);

let daemon: TestDaemon;
let jwks: JwksServer;
let key: SigningKey;

beforeAll(async () => {
  key = await makeKey('k1');
  jwks = await startJwksServer([key]);
  daemon = await startTestDaemon(`
[pool]
reconcile_interval = "1s"
idle_count = 1
idle_time = "10m"
max_use_count = 3
[metrics]
listen = "127.0.0.1:0"
[credentials]
gitlab_url = "${jwks.url}"
audience = "runner-fleet"
[[credentials.rule]]
name = "deploy-prod"
project_path = "platform/**"
ref_protected = true
environment = "production"
instance_profile = "prod-deploy"
launch_template = "runner-fleet-prod"
subnets = ["subnet-0123456789abcdef0"]
`);
}, 180_000);
afterAll(async () => {
  await daemon?.cleanup();
  await jwks?.close();
});

const instanceOf = (log: string) => /on (local-[0-9a-f]{12})/.exec(log)?.[1] ?? '';

describe('local provider: launch shapes', () => {
  it('never gives a default job a prod-shaped idle instance, nor a prod job a default one', async () => {
    const entry = daemon.entry();
    const prodJob = async (id: string) =>
      runJob(entry, {
        id,
        projectId: 20,
        projectPath: 'platform/api',
        variables: { RUNNER_FLEET_ID_TOKEN: await signToken(key, gitlabClaims(jwks.url, { job_id: id })) },
        script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"',
      });
    const defaultJob = (id: string) =>
      runJob(entry, {
        id,
        projectId: 20,
        projectPath: 'platform/api',
        script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"',
      });

    const a = await prodJob('601');
    expect(a.outcome, a.log).toBe('success');
    const prodInstance = instanceOf(a.log);
    const shapeOf = async (id: string) => (await daemon.status()).instances.find((i) => i.id === id)?.shape;
    const prodShape = await shapeOf(prodInstance);
    expect(prodShape).toMatch(/^s-[0-9a-f]{12}$/);
    // status says what the shape is: the rule and its launch settings.
    expect((await daemon.status()).shapes).toEqual([
      {
        key: prodShape,
        rules: ['deploy-prod'],
        launchTemplate: 'runner-fleet-prod',
        subnets: ['subnet-0123456789abcdef0'],
      },
    ]);
    const text = (
      await execFileAsync(process.execPath, [CLI, 'status', '--config', daemon.configPath], {
        encoding: 'utf8',
      })
    ).stdout;
    expect(text).toMatch(
      new RegExp(
        `\\n  ${prodShape}  rules deploy-prod  template runner-fleet-prod  subnets subnet-0123456789abcdef0\\n`,
      ),
    );
    // It idles for reuse (max_use_count 3) while a default-shaped one idles too (idle_count 1).
    await eventually(
      'the prod instance idle beside a default one',
      () => daemon.status(),
      (s) =>
        s.instances.some((i) => i.id === prodInstance && i.state === 'idle') &&
        s.instances.some((i) => i.shape === 'default' && i.state === 'idle'),
      60_000,
    );

    const b = await defaultJob('602');
    expect(b.outcome, b.log).toBe('success');
    const defaultInstance = instanceOf(b.log);
    expect(defaultInstance).not.toBe(prodInstance);
    expect(await shapeOf(defaultInstance)).toBe('default');

    // The reverse: with a default-shaped instance idle, the next prod job takes the prod one.
    await eventually(
      'a default instance idle again',
      () => daemon.status(),
      (s) => s.instances.some((i) => i.shape === 'default' && i.state === 'idle'),
      60_000,
    );
    const c = await prodJob('603');
    expect(c.outcome, c.log).toBe('success');
    expect(instanceOf(c.log)).toBe(prodInstance);
  }, 240_000);
});

describe('local provider: an instance planted under our root and tagged as ours', () => {
  it('is never used nor terminated; it is logged, counted, and shown by status and doctor', async () => {
    const before = await daemon.status();
    const root = join(daemon.stateDir, 'local');
    // Someone else who can write under the root: their own launch (their key, their manager id),
    // then our tags written over it, as an idle instance of ours.
    const intruder = new LocalProvider({
      root,
      fleetName: before.manager.fleet,
      managerId: 'intruder',
      bootTimeMs: 0,
    });
    await intruder.start();
    const token = LaunchSigner.ephemeral(`${before.manager.fleet}\nintruder`).mint(1, Date.now());
    const [planted] = (
      await intruder.launch({
        count: 1,
        token,
        tags: { [TAG.fleet]: before.manager.fleet, [TAG.manager]: 'intruder' },
      })
    ).launched;
    const plantedId = planted?.id ?? '';
    await intruder.setTags(plantedId, { [TAG.manager]: before.manager.id, [TAG.state]: 'idle' });

    const seen = await eventually(
      'the planted instance in status',
      () => daemon.status(),
      (s) => (s.foreign ?? []).some((f) => f.id === plantedId),
      60_000,
    );
    expect(seen.foreign?.find((f) => f.id === plantedId)?.why).toMatch(/launch journal does not list it/);
    expect(seen.instances.map((i) => i.id)).not.toContain(plantedId);

    // Jobs run on our instances, never on the planted one.
    for (const id of ['611', '612']) {
      const result = await runJob(daemon.entry(), { id, script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"' });
      expect(result.outcome, result.log).toBe('success');
      expect(instanceOf(result.log)).not.toBe(plantedId);
    }

    // Counted in /metrics.
    const address = /"address":"(127\.0\.0\.1:\d+)"[^\n]*metrics listening/.exec(daemon.output())?.[1];
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    expect(metrics).toMatch(/^runner_fleet_foreign_instances 1$/m);

    // Shown by doctor, with its id.
    const doctor = await execFileAsync(
      process.execPath,
      [CLI, 'doctor', '--json', '--config', daemon.configPath],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    ).catch((error: { stdout: string }) => ({ stdout: error.stdout }));
    const check = (
      JSON.parse(doctor.stdout) as { checks: { id: string; status: string; detail: string }[] }
    ).checks.find((c) => c.id === 'foreign instances');
    expect(check?.status).toBe('warn');
    expect(check?.detail).toContain(plantedId);

    // Logged loudly, once.
    const lines = await eventually(
      'the warning about the planted instance',
      async () =>
        daemon
          .output()
          .split('\n')
          .filter((l) => l.includes(plantedId) && l.includes('was not launched by it')),
      (l) => l.length > 0,
      30_000,
    );
    expect(lines).toHaveLength(1);
    // Several reconciles later (1 s apart) it still exists: never terminated.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(existsSync(join(root, 'instances', plantedId, 'meta.json'))).toBe(true);
    expect((await daemon.status()).foreign?.map((f) => f.id)).toContain(plantedId);
  }, 240_000);
});
