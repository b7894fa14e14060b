/**
 * Container jobs end to end on the local provider: the hooks driven like gitlab-runner, the real
 * daemon, a real dockerd and an authenticated registry (test/support/docker.ts).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type DockerWorld, dockerInstalled, startDockerWorld } from '../support/docker.js';
import { type JobResult, type JobSpec, type RunnerEntry, SECRET_SENTINEL } from '../support/gitlab-runner.js';
import { cancelMidBuild, leftovers, runContainerJob } from './container-harness.js';

let world: DockerWorld;
let daemon: TestDaemon;
let entry: RunnerEntry;
let nextId = 7100;

describe.runIf(dockerInstalled())('container jobs on the local provider', () => {
  beforeAll(async () => {
    // The registry password is a secret too: it must show up nowhere either.
    world = await startDockerWorld({ password: `${SECRET_SENTINEL}-registry-password` });
    daemon = await startTestDaemon(`
[executor]
kill_grace = "4s"

[container]
docker_host = "${world.dockerHost}"
service_wait_timeout = "5s"
allowed_images = ["127.0.0.1:*/runner-fleet/*"]
allowed_pull_policies = ["always", "if-not-present"]
`);
    entry = daemon.entry();
  }, 240_000);
  afterAll(async () => {
    await daemon?.cleanup();
    await world?.stop();
  }, 120_000);

  const job = (spec: Partial<JobSpec> & { script: string }): Promise<JobResult> =>
    runContainerJob(entry, world, nextId++, spec);

  it('runs the user stages in the image, in CI_PROJECT_DIR, with bash; files cross stages', async () => {
    const result = await job({
      image: { name: world.image('bash') },
      script: [
        'echo "shell=${BASH_VERSION:+bash} pwd=$(pwd)"',
        'test -f /etc/runner-fleet-test-image && echo in-container',
        'cat fetched.txt',
        'echo from-build > built.txt',
      ].join('\n'),
      afterScript: 'cat built.txt; echo "after in $(test -f /etc/runner-fleet-test-image && echo container)"',
      // get_sources runs on the instance: what it writes, the container sees.
      getSources: 'echo from-get-sources > fetched.txt',
    });
    expect(result.log).toContain('runner-fleet: starting the job container from');
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain(`shell=bash pwd=${result.projectDir}`);
    expect(result.log).toContain('in-container');
    expect(result.log).toContain('from-get-sources');
    expect(result.log).toContain('from-build');
    expect(result.log).toContain('after in container');
    expect(result.cleanup.exitCode).toBe(0);
    expect(await leftovers(world)).toBe('');
    expect(result.log).not.toContain(SECRET_SENTINEL);
  });

  it('keeps a failing script a build failure with its exit code', async () => {
    const result = await job({ image: { name: world.image('bash') }, script: 'echo failing; exit 42' });
    expect(result.outcome, result.log).toBe('build-failure');
    expect(result.buildExitCode).toBe(42);
    expect(await leftovers(world)).toBe('');
  });

  it('hands a script larger than a pipe holds to the container whole, and its commands read no script', async () => {
    const big = 'x'.repeat(300_000);
    const result = await job({
      image: { name: world.image('bash') },
      // `cat` reads the stage's stdin: /dev/null, not the rest of the script.
      script: `big='${big}'\necho "stdin: [$(cat)]"\n[ -e /proc/self/fd/3 ] || echo "fd 3 closed"\necho "length ${'$'}{#big}"\necho last line ran`,
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('stdin: []');
    // The descriptor the shell reads the script from is not left to the script's commands.
    expect(result.log).toContain('fd 3 closed');
    expect(result.log).toContain('length 300000');
    expect(result.log).toContain('last line ran');
  });

  it('runs an image without bash with sh', async () => {
    const result = await job({
      image: { name: world.image('busybox') },
      script: 'echo "bash=$(command -v bash || echo none)"; ls /bin/busybox',
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('bash=none');
  });

  it('runs the image entrypoint, or none with entrypoint [""]', async () => {
    const check = 'cat /tmp/entrypoint-ran 2>/dev/null || echo "no entrypoint ran"';
    const withIt = await job({ image: { name: world.image('entrypoint') }, script: check });
    expect(withIt.outcome, withIt.log).toBe('success');
    expect(withIt.log).toContain('image entrypoint ran');
    const without = await job({
      image: { name: world.image('entrypoint'), entrypoint: [''] },
      script: check,
    });
    expect(without.outcome, without.log).toBe('success');
    expect(without.log).toContain('no entrypoint ran');
  });

  it('reaches a service by its alias and by both derived names, with its variables', async () => {
    const service = world.image('service');
    const derived = service.replace(/:\d+\//, '/').replace(/:[^/:]+$/, '');
    const result = await job({
      image: { name: world.image('bash') },
      services: [
        {
          name: service,
          alias: 'db',
          variables: [{ key: 'SERVICE_GREETING', value: 'hello-from-variables' }],
        },
      ],
      script: [
        `for h in db ${derived.replaceAll('/', '__')} ${derived.replaceAll('/', '-')}; do`,
        '  printf "%s: " "$h"; nc "$h" 5432 </dev/null',
        'done',
      ].join('\n'),
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log.match(/: ready from \S+ hello-from-variables/g)?.length).toBe(3);
    expect(result.log).not.toContain('WARNING');
    expect(await leftovers(world)).toBe('');
  });

  it('goes on with a warning and the service log when a service never listens', async () => {
    const result = await job({
      image: { name: world.image('busybox') },
      services: [{ name: world.image('deaf-service'), alias: 'deaf' }],
      script: 'echo job ran anyway',
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toMatch(
      /\*\*\* WARNING: Service \S+deaf-service:1 probably did not start properly: port 6000/,
    );
    expect(result.log).toContain('deaf service starting, never listening');
    expect(result.log).toContain('job ran anyway');
    expect(await leftovers(world)).toBe('');
  });

  it('pulls a private image with DOCKER_AUTH_CONFIG, and fails prepare as a system failure without credentials', async () => {
    const auth = Buffer.from(`${world.user}:${world.password}`).toString('base64');
    const withVariable = await job({
      credentials: [],
      variables: { DOCKER_AUTH_CONFIG: JSON.stringify({ auths: { [world.registry]: { auth } } }) },
      image: { name: world.image('busybox') },
      script: 'echo pulled with DOCKER_AUTH_CONFIG',
    });
    expect(withVariable.outcome, withVariable.log).toBe('success');
    await world.forgetImages();
    const without = await job({ credentials: [], image: { name: world.image('busybox') }, script: 'true' });
    expect(without.outcome, without.log).toBe('system-failure');
    expect(without.log).toMatch(
      /runner-fleet prepare: cannot pull image \S+busybox:1 \(pull_policy always\): .*(no basic auth credentials|unauthorized)/,
    );
    expect(without.log.match(/runner-fleet prepare:/g)?.length).toBe(1);
    expect(await leftovers(world)).toBe('');
  });

  it('pulls and runs the variant of docker: platform; a platform the image lacks fails prepare with one line', async () => {
    const arch = (await world.docker(['version', '--format', '{{.Server.Arch}}'])).trim();
    const other = arch === 'arm64' ? 'amd64' : 'arm64';
    const image = await world.pushMultiPlatform('runner-fleet/multi-platform', [
      `linux/${arch}`,
      `linux/${other}`,
    ]);
    const platform = (p: string) => ({ executor_opts: { docker: { platform: p } } });
    // The other platform first: a pull without --platform would fetch this machine's variant, and
    // `docker run --platform` would then refuse it.
    for (const p of [`linux/${other}`, `linux/${arch}`]) {
      await world.forgetImages();
      const result = await job({
        image: { name: image, ...platform(p) },
        script: 'echo "variant $(cat /etc/rf-platform)"',
      });
      expect(result.outcome, result.log).toBe('success');
      expect(result.log).toContain(`variant ${p}`);
    }
    await world.forgetImages();
    const missing = await job({
      image: { name: image, ...platform('linux/s390x') },
      script: 'echo not reached',
    });
    expect(missing.outcome, missing.log).toBe('system-failure');
    expect(missing.log).toMatch(
      /runner-fleet prepare: image \S+multi-platform:1 has no variant for docker: platform linux\/s390x \(pull_policy always\): .*linux\/s390x/,
    );
    expect(missing.log.match(/runner-fleet prepare:/g)?.length).toBe(1);
    expect(missing.log).not.toContain('not reached');
    expect(await leftovers(world)).toBe('');
  });

  it('refuses an image or a pull policy the config does not allow, before taking an instance', async () => {
    const image = await job({ image: { name: 'docker.io/library/alpine:3' }, script: 'true' });
    expect(image.outcome).toBe('system-failure');
    expect(image.log).toContain(
      'runner-fleet prepare: image docker.io/library/alpine:3 is not allowed by [container] allowed_images (127.0.0.1:*/runner-fleet/*)',
    );
    expect(image.log).not.toContain('running on instance');
    const policy = await job({
      image: { name: world.image('busybox'), pull_policy: ['never'] },
      script: 'true',
    });
    expect(policy.outcome).toBe('system-failure');
    expect(policy.log).toContain('pull_policy never of');
    expect(policy.log).toContain(
      'is not allowed by [container] allowed_pull_policies (always, if-not-present)',
    );
  });

  it('a cancel ends the stage inside the container; after_script then runs in the same container', async () => {
    const result = await job({
      image: { name: world.image('bash') },
      // Ignores TERM: only the KILL after the grace ends it.
      ...cancelMidBuild("trap 'echo got TERM, ignoring' TERM"),
    });
    expect(result.outcome, result.log).toBe('canceled');
    expect(result.log).toContain('build started');
    expect(result.log).toContain('got TERM, ignoring');
    expect(result.log).not.toContain('not reached');
    expect(result.log).toContain('marker');
    expect(result.log).toContain('no build processes left');
    // The stage ends by itself once the container's KILL comes (exit 137): still a cancel, not a
    // script failure with that code.
    expect(result.log).toContain('runner-fleet: stage build_script canceled');
    expect(result.buildExitCode).toBeUndefined();
    const build = result.calls.find((c) => c.stage === 'build_script')!;
    // Ended by the KILL after kill_grace (4 s), well before the harness's own SIGKILL.
    expect(build.signal).toBeNull();
    expect(await leftovers(world)).toBe('');
  });

  /**
   * Runs `fn` with a docker CLI on PATH that waits `sleepS` before each `docker exec` outside a
   * stage (the cancel's own call; a stage's exec is --interactive), as on an instance under load.
   */
  async function withSlowCancelExec<T>(sleepS: number, fn: () => Promise<T>): Promise<T> {
    const shimDir = mkdtempSync(join(tmpdir(), 'rf-slow-docker-'));
    chmodSync(shimDir, 0o755);
    const realDocker = execFileSync('sh', ['-c', 'command -v docker'], { encoding: 'utf8' }).trim();
    writeFileSync(
      join(shimDir, 'docker'),
      `#!/bin/sh\ncase " $* " in *" exec "*) case " $* " in *" --interactive "*) ;; *) sleep ${sleepS};; esac;; esac\nexec ${realDocker} "$@"\n`,
      { mode: 0o755 },
    );
    const path = process.env.PATH;
    process.env.PATH = `${shimDir}:${path}`;
    try {
      return await fn();
    } finally {
      process.env.PATH = path;
      rmSync(shimDir, { recursive: true, force: true });
    }
  }

  it('a cancel ends the stage in the container even when every docker call is slow (a loaded instance)', async () => {
    // The cancel runs in the background and is timed inside the container: the slow CLI delays
    // it but cannot keep the container's KILL from coming.
    const result = await withSlowCancelExec(2, () =>
      job({
        image: { name: world.image('bash') },
        ...cancelMidBuild("trap 'echo got TERM, ignoring' TERM"),
        // Waits (bounded) until the build loop stops beating, then says where it stopped: 600
        // means it ran to its end (about a minute later), nobody killed it.
        afterScript: [
          'cat /tmp/same-container',
          'i=0; while [ $i -lt 150 ]; do a=$(cat /tmp/beat); sleep 1; b=$(cat /tmp/beat); [ "$a" = "$b" ] && break; i=$((i + 1)); done',
          'echo "build stopped at beat $b"',
        ].join('\n'),
      }),
    );
    expect(result.outcome, result.log).toBe('canceled');
    expect(result.log).toContain('marker');
    const stoppedAt = Number(/build stopped at beat (\d+)/.exec(result.log)?.[1]);
    expect(stoppedAt, result.log).toBeGreaterThan(0);
    expect(stoppedAt, result.log).toBeLessThan(600);
    expect(await leftovers(world)).toBe('');
  });

  it('a cancel that cannot reach the container still ends the stage, after kill_grace and a margin', async () => {
    // The cancel's docker exec hangs (a Docker daemon that no longer answers it): the hook gives
    // up waiting for the stage to end by itself and ends it as a bare stage, by signals.
    const result = await withSlowCancelExec(90, () =>
      job({
        image: { name: world.image('bash') },
        ...cancelMidBuild("trap 'echo got TERM, ignoring' TERM"),
        afterScript: 'echo "after_script started at beat $(cat /tmp/beat)"',
      }),
    );
    expect(result.outcome, result.log).toBe('canceled');
    // Without the fallback the stage would end only with the build's last beat (600).
    const startedAt = Number(/after_script started at beat (\d+)/.exec(result.log)?.[1]);
    expect(startedAt, result.log).toBeGreaterThan(0);
    expect(startedAt, result.log).toBeLessThan(600);
    expect(await leftovers(world)).toBe('');
  });

  it('cleanup removes the containers and the network after the daemon was SIGKILLed mid-job', async () => {
    const result = await job({
      image: { name: world.image('busybox') },
      services: [{ name: world.image('service'), alias: 'db' }],
      script: 'echo build while the daemon is down',
      onPrepared: () => daemon.kill(),
      onBuildStarted: async () => {
        await daemon.start();
      },
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.cleanup.exitCode, result.cleanup.stderr).toBe(0);
    expect(await leftovers(world)).toBe('');
  });

  it('never shows the daemon state dir or its socket to the job, nor a secret anywhere', async () => {
    const result = await job({
      image: { name: world.image('busybox') },
      script: `find ${daemon.stateDir} -maxdepth 4 | sort; test -e ${daemon.socket} && echo SOCKET-VISIBLE || echo no socket`,
    });
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toContain('no socket');
    expect(result.log).not.toContain('SOCKET-VISIBLE');
    expect(result.log).not.toContain('journal');
    expect(result.log).not.toContain(SECRET_SENTINEL);
    // The state directory (lease journal, instance trees) holds no secret either.
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const path = join(dir, name);
        const st = statSync(path, { throwIfNoEntry: false });
        if (st?.isDirectory()) walk(path);
        else if (st?.isFile()) files.push(path);
      }
    };
    walk(daemon.stateDir);
    for (const file of files) expect(readFileSync(file, 'utf8'), file).not.toContain(SECRET_SENTINEL);
  });
});
