/**
 * Container job cost, as ratios measured in the same run on the same (test) dockerd, interleaved:
 *
 * - a trivial stage (`true`) sent into the job container by the container stage script through
 *   the local transport, vs the same script piped to `docker exec -i <container> bash` spawned
 *   directly (what running it in that container costs without runner-fleet). A third side, the
 *   same transport carrying a plain `docker exec -i` of the script, splits our excess into the
 *   transport's own share (which every stage pays, bare or in a container) and the container
 *   stage script's (reading the image's shell, then exec of the docker client on the user's
 *   script, which follows ours on the transport's stream);
 * - container start for a job with one service (network, service, port wait, job container:
 *   the prepare script through the local transport), vs the same done with plain `docker network
 *   create` + `docker run` + the same port wait + `docker run`.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupScript, setupScript, stageScript } from '../executor/container/scripts.js';
import { type ContainerSettings, containerJob, jobNames } from '../executor/container/spec.js';
import { LocalTransport } from '../executor/transports/local.js';
import { shellQuote } from '../executor/transports/ssh/args.js';
import { startDockerWorld } from '../test/support/docker.js';

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
};

/** Runs a process with `input` on its stdin and times it to its exit. */
function timeProcess(
  command: string,
  args: string[],
  input: string | Buffer,
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0
        ? resolve(Number(process.hrtime.bigint() - started) / 1e6)
        : reject(new Error(`${command} ${args.join(' ')} failed (${code}): ${err}`)),
    );
    child.stdin.end(input);
  });
}

export async function benchContainers(
  options: { rounds?: number } = {},
): Promise<Record<string, number | string>> {
  const rounds = options.rounds ?? 9;
  const world = await startDockerWorld({ images: ['bash', 'service'] });
  const dir = mkdtempSync(join(tmpdir(), 'rf-bench-containers-'));
  const root = join(dir, 'instance');
  const env = { ...process.env, DOCKER_HOST: world.dockerHost, HOME: dir };
  try {
    // Images present locally (if-not-present): the pull is not what is measured.
    await world.docker(['pull', world.image('bash')]);
    await world.docker(['pull', world.image('service')]);
    const settings: ContainerSettings = {
      dockerHost: world.dockerHost,
      allowedImages: [],
      allowedServices: [],
      allowedPullPolicies: [],
      pullPolicy: ['if-not-present'],
      serviceWaitMs: 30_000,
      buildsDir: join(dir, 'builds'),
    };
    const transport = new LocalTransport({ kind: 'local', root });
    for (const sub of ['home', 'tmp', 'pgids']) mkdirSync(join(root, sub), { recursive: true });
    // A container stage is its script and the user's script after it (its cancel is not measured).
    const run = async (stage: string | Buffer | { script: Buffer; input: Buffer }) => {
      const parts =
        typeof stage === 'string' || Buffer.isBuffer(stage)
          ? { script: Buffer.from(stage) }
          : { script: stage.script, input: stage.input };
      const started = process.hrtime.bigint();
      const outcome = await transport.runStage(
        {
          scriptPath: '(bench)',
          ...parts,
          stage: 'bench',
          env: {},
          jobTmpDir: dir,
          killGraceMs: 5_000,
        },
        new AbortController().signal,
      );
      if (outcome.kind !== 'exited' || outcome.code !== 0)
        throw new Error(`bench script failed: ${JSON.stringify(outcome)}`);
      return Number(process.hrtime.bigint() - started) / 1e6;
    };
    const job = containerJob(
      { image: { name: world.image('bash') }, services: [{ name: world.image('service'), alias: 'db' }] },
      settings,
    )!;

    // --- container start: ours vs plain docker run of the same
    const ours: number[] = [];
    const plain: number[] = [];
    const svcPort = 5432;
    for (let r = 0; r < rounds + 1; r++) {
      const id = `b${r}`;
      const oursMs = await run(setupScript(id, job, settings, '{}'));
      await run(cleanupScript(id, settings));
      const n = `rf-bench-plain-${r}`;
      const plainScript = [
        'set -e',
        `docker network create ${n} >/dev/null`,
        `docker run --detach --name ${n}-svc --network ${n} --network-alias db ${world.image('service')} >/dev/null`,
        `ip=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' ${n}-svc)`,
        `until timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ip" ${svcPort} 2>/dev/null; do sleep 0.5; done`,
        `docker run --detach --name ${n}-build --network ${n} --add-host db:"$ip" --volume ${settings.buildsDir}:${settings.buildsDir} ${world.image('bash')} sh -c 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done' >/dev/null`,
      ].join('\n');
      const plainMs = await timeProcess('bash', ['-s'], plainScript, env);
      await timeProcess(
        'bash',
        ['-s'],
        `docker rm -f ${n}-svc ${n}-build >/dev/null; docker network rm ${n} >/dev/null`,
        env,
      );
      if (r === 0) continue; // warm-up
      ours.push(oursMs);
      plain.push(plainMs);
    }

    // --- a trivial stage: ours vs docker exec directly
    const id = 'stage';
    await run(setupScript(id, { ...job, services: [] }, settings, '{}'));
    const container = jobNames(id).container;
    const user = Buffer.from('#!/usr/bin/env bash\nset -eo pipefail\ntrue\nexit 0\n');
    const plainExec = `export DOCKER_HOST=${shellQuote(world.dockerHost)}\nexec docker exec --interactive ${shellQuote(container)} bash <<<${shellQuote(user.toString('utf8'))}\n`;
    const stageOurs: number[] = [];
    const stageExec: number[] = [];
    const stageTransport: number[] = [];
    // A stage is ~100 ms and its excess a few ms, less than one docker exec's own spread: many
    // rounds (about 80 s here), so the median of the per-round ratios is the stage's, not the noise's.
    const stageRounds = Math.max(rounds * 24, 36);
    for (let r = 0; r < stageRounds + 2; r++) {
      const sides = [
        () => run(stageScript(id, settings, user, `t${r}`, 5_000)),
        () => timeProcess('docker', ['exec', '--interactive', container, 'bash'], user, env),
        () => run(plainExec),
      ];
      // Rotate the order, so no side always runs first or right after another's I/O.
      const times: number[] = [];
      for (let k = 0; k < 3; k++) {
        const i = (r + k) % 3;
        times[i] = await sides[i]!();
      }
      if (r < 2) continue;
      stageOurs.push(times[0]!);
      stageExec.push(times[1]!);
      stageTransport.push(times[2]!);
    }
    await run(cleanupScript(id, settings));

    // Paired: the median of each round's ratio, so a burst of load on the shared machine skews one
    // round, not one side.
    const ratio = (a: number[], b: number[]) => median(a.map((x, i) => x / (b[i] as number))).toFixed(3);
    return {
      'container stage (true) vs docker exec directly': `${ratio(stageOurs, stageExec)} (target ≤ 1.1)`,
      'container stage, median ms': Math.round(median(stageOurs)),
      'docker exec, median ms': Math.round(median(stageExec)),
      'same transport running a plain docker exec vs docker exec directly': ratio(stageTransport, stageExec),
      'container stage vs the same transport running a plain docker exec': ratio(stageOurs, stageTransport),
      'job start with one service vs plain docker run of the same': `${ratio(ours, plain)} (target ≤ 1.2)`,
      'job start with one service, median ms': Math.round(median(ours)),
      'plain docker run of the same, median ms': Math.round(median(plain)),
    };
  } finally {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
