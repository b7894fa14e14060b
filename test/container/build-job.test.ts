/**
 * This repository's own `build` job, exactly as .gitlab-ci.yml defines it, run on runner-fleet
 * (local provider) through the gitlab-runner-like harness, in a Node image built from this machine.
 *
 * What the test reads from .gitlab-ci.yml (of the commit under test, as GitLab would): the job's
 * `image`, `variables` (global and its own), `cache: paths`, `before_script` + `script` (sent as
 * one step_script, as gitlab-runner does) and `artifacts: paths`. Nothing of the script is copied
 * here. What it provides, as GitLab and gitlab-runner would:
 *
 * - Sources: gitlab-runner's get_sources fetches `refs/pipelines/<id>` (a ref GitLab makes for
 *   every pipeline) from CI_REPOSITORY_URL into CI_PROJECT_DIR and checks out CI_COMMIT_SHA, on the
 *   instance. The repository is a bare clone of this checkout served by `git daemon` on 127.0.0.1:
 *   so `npm ci` uses the committed lockfile and the job builds the committed tree.
 * - Image: no public registry is reachable, so `node:20-bookworm` is this machine's Node and npm
 *   (busybox, bash; test/support/docker.ts) loaded into the test dockerd under that name, and the
 *   runner's `[container] pull_policy` is `if-not-present`, as on an air-gapped runner host.
 * - npm offline: restore_cache extracts an archive of the job's `cache: paths` (`.npm/`) holding
 *   what a previous run of the same lockfile left there (test/support/npm-cache.ts, from this
 *   machine's npm cache). The job's `npm ci --prefer-offline` then needs no registry; the job
 *   container has no route out anyway.
 * - `npm test` is not part of `build`: the suite needs sshd, dockerd and minutes, so it is the
 *   separate `test` job of .gitlab-ci.yml. `build` is lint + synth (which compiles first), whose
 *   `cdk.out/` artifact the deploy jobs ship; upload_artifacts_on_success archives it here and the
 *   test checks it holds the assembly of every stage the deploy jobs deploy.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { REPO_ROOT, startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type DockerWorld, dockerInstalled, startDockerWorld } from '../support/docker.js';
import { expandVariables, runJob, SECRET_SENTINEL } from '../support/gitlab-runner.js';
import { prepareNpmCache } from '../support/npm-cache.js';

type Json = Record<string, unknown>;
const PIPELINE_ID = '1000'; // the harness's CI_PIPELINE_ID

let world: DockerWorld;
let daemon: TestDaemon;
let gitDaemon: ChildProcess | undefined;
let scratch: string;
let sha: string;
let ci: Json;
let repositoryUrl: string;

const git = (args: string[], cwd = REPO_ROOT) => execFileSync('git', args, { cwd, encoding: 'utf8' }).trim();

/** A job of .gitlab-ci.yml with its `extends` chain merged in, as GitLab does (hashes deep, the rest replaced). */
function resolveJob(name: string): Json {
  const raw = ci[name] as Json;
  const merge = (base: Json, over: Json): Json => {
    const out: Json = { ...base };
    for (const [key, value] of Object.entries(over)) {
      const prev = out[key];
      out[key] = isHash(prev) && isHash(value) ? merge(prev, value) : value;
    }
    return out;
  };
  let job: Json = {};
  for (const parent of [raw.extends ?? []].flat() as string[]) job = merge(job, resolveJob(parent));
  const { extends: _parents, ...own } = raw;
  return merge(job, own);
}
const isHash = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `variables:` values: plain strings, or `{ value, description }`. */
function variablesOf(block: unknown): Record<string, string> {
  if (!isHash(block)) return {};
  return Object.fromEntries(Object.entries(block).map(([k, v]) => [k, String(isHash(v) ? v.value : v)]));
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Bounded wait until `git daemon` accepts connections. */
async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  const accepts = () =>
    new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`git daemon exited at start (${child.exitCode})`);
    if (await accepts()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`git daemon did not listen on 127.0.0.1:${port} within 60 s`);
}

describe.runIf(dockerInstalled())('the build job of .gitlab-ci.yml on runner-fleet (local provider)', () => {
  beforeAll(async () => {
    sha = git(['rev-parse', 'HEAD']);
    // The pipeline GitLab runs is the one committed with the code.
    ci = parse(git(['show', `${sha}:.gitlab-ci.yml`])) as Json;
    scratch = mkdtempSync(join(tmpdir(), 'rf-build-job-'));
    // Job uids must read the cache archive and write the artifacts archive.
    chmodSync(scratch, 0o755);

    // The "GitLab" side: the project repository with the pipeline's ref, over git://.
    const repos = join(scratch, 'git');
    mkdirSync(repos);
    execFileSync('git', [
      'clone',
      '--quiet',
      '--bare',
      '--no-local',
      REPO_ROOT,
      join(repos, 'runner-fleet.git'),
    ]);
    git(['update-ref', `refs/pipelines/${PIPELINE_ID}`, sha], join(repos, 'runner-fleet.git'));
    const port = await freePort();
    gitDaemon = spawn(
      'git',
      [
        'daemon',
        '--export-all',
        '--reuseaddr',
        '--listen=127.0.0.1',
        `--port=${port}`,
        `--base-path=${repos}`,
        repos,
      ],
      // Its own process group: `git daemon` runs git-daemon as a child, and both must go.
      { stdio: 'ignore', detached: true },
    );
    await waitForPort(port, gitDaemon);
    repositoryUrl = `git://127.0.0.1:${port}/runner-fleet.git`;

    // The npm cache a previous run of this lockfile left in the job's cache path.
    const build = resolveJob('build');
    const cachePaths = (build.cache as Json).paths as string[];
    expect(cachePaths).toHaveLength(1);
    const cacheSource = join(scratch, 'cache-source');
    const lockfile = join(scratch, 'package-lock.json');
    writeFileSync(lockfile, git(['show', `${sha}:package-lock.json`]));
    prepareNpmCache(lockfile, join(cacheSource, cachePaths[0]!));
    execFileSync('tar', ['-cf', join(scratch, 'cache.tar'), '-C', cacheSource, '.']);
    rmSync(cacheSource, { recursive: true, force: true });
    mkdirSync(join(scratch, 'artifacts'), { mode: 0o777 });
    chmodSync(join(scratch, 'artifacts'), 0o777);

    world = await startDockerWorld({ images: [] });
    const image = build.image as string | Json;
    await world.importImage('node', typeof image === 'string' ? image : (image.name as string));
    daemon = await startTestDaemon(`
[container]
docker_host = "${world.dockerHost}"
allowed_images = ["node:*"]
pull_policy = ["if-not-present"]
allowed_pull_policies = ["if-not-present"]
`);
  }, 900_000);
  afterAll(async () => {
    await daemon?.cleanup();
    await world?.stop();
    if (gitDaemon?.pid && gitDaemon.exitCode === null) process.kill(-gitDaemon.pid, 'SIGTERM');
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  it('passes: npm ci from the cache, lint, synth; its artifact holds every assembly the deploy jobs ship', async () => {
    const build = resolveJob('build');
    const image = typeof build.image === 'string' ? { name: build.image } : (build.image as Json);
    const script = [...((build.before_script as string[]) ?? []), ...(build.script as string[])];
    const cachePath = ((build.cache as Json).paths as string[])[0]!;
    const artifactPaths = (build.artifacts as Json).paths as string[];
    const variables: Record<string, string> = {
      // Predefined by GitLab for every job (npm, like most tools, behaves as in CI with them).
      CI: 'true',
      GITLAB_CI: 'true',
      CI_REPOSITORY_URL: repositoryUrl,
      CI_COMMIT_SHA: sha,
      CI_COMMIT_SHORT_SHA: sha.slice(0, 8),
      CI_COMMIT_REF_NAME: 'main',
      ...variablesOf(ci.variables),
      ...variablesOf(build.variables),
    };
    // The npm cache the job configures is the path its cache keeps (what restore_cache brings).
    const expanded = expandVariables({ ...variables, CI_PROJECT_DIR: '/project' });
    expect(expanded.npm_config_cache?.replace(/\/$/, '')).toBe(`/project/${cachePath.replace(/\/$/, '')}`);

    const result = await runJob(daemon.entry(), {
      id: '9100',
      projectPath: 'ops/runner-fleet',
      image,
      variables,
      script: script.join('\n'),
      stageScripts: {
        // gitlab-runner's fetch strategy (git depth 20), on the instance, into CI_PROJECT_DIR.
        get_sources: [
          'mkdir -p "$CI_PROJECT_DIR" && cd "$CI_PROJECT_DIR"',
          'git -c init.defaultBranch=main init -q .',
          'git remote add origin "$CI_REPOSITORY_URL"',
          'echo "Fetching changes with git depth set to 20..."',
          'git fetch -q --depth 20 origin "+refs/pipelines/$CI_PIPELINE_ID:refs/pipelines/$CI_PIPELINE_ID"',
          'echo "Checking out ${CI_COMMIT_SHA:0:8} as detached HEAD"',
          'git checkout -f -q "$CI_COMMIT_SHA"',
        ].join('\n'),
        // gitlab-runner's cache-extractor unpacks the archive of `cache: paths` into CI_PROJECT_DIR.
        restore_cache: `echo "Restoring cache"\ntar -xf ${join(scratch, 'cache.tar')} -C "$CI_PROJECT_DIR"\necho "Successfully extracted cache"`,
        upload_artifacts_on_success: `echo "Uploading artifacts"\ntar -cf ${join(scratch, 'artifacts', 'artifacts.tar')} ${artifactPaths.map((p) => `'${p}'`).join(' ')}`,
      },
    });
    expect(result.outcome, result.log.slice(-6000)).toBe('success');
    expect(result.log).toContain(`starting the job container from ${image.name}`);
    expect(result.log).toMatch(/added \d+ packages/);
    expect(result.log).toMatch(/Checked \d+ files/);
    expect(result.log).not.toContain(SECRET_SENTINEL);

    const listing = execFileSync('tar', ['-tf', join(scratch, 'artifacts', 'artifacts.tar')], {
      encoding: 'utf8',
    }).split('\n');
    expect(listing).toContain('cdk.out/manifest.json');
    // `cdk deploy --app cdk.out "${CDK_STAGE}/*"` in each deploy job needs its stage's assembly.
    for (const name of ['deploy-dev', 'deploy-prod']) {
      const stage = variablesOf(resolveJob(name).variables).CDK_STAGE;
      expect(listing, name).toContain(`cdk.out/assembly-${stage}/manifest.json`);
    }
    expect(
      (await world.docker(['ps', '--all', '--quiet', '--filter', 'label=runner-fleet.job'])).trim(),
    ).toBe('');
  }, 1_800_000);
});
