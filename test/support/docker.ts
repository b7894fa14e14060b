/**
 * A real Docker daemon (Debian's docker.io) and a real registry (Debian's docker-registry) for the
 * container-job tests, both private to one test file: dockerd on a unix socket with its own data
 * and exec roots, no iptables and no default bridge; the registry on 127.0.0.1 with htpasswd
 * auth. No public registry is reachable here, so the test images are built from this machine's
 * own files (`docker import` of a rootfs tarball) and pushed to that registry.
 *
 *   const world = await startDockerWorld();   // in beforeAll: one per file keeps the suite fast
 *   … world.dockerHost, world.image('busybox') …
 *   await world.stop();                         // in afterAll: every process and directory gone
 */
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';

const run = promisify(execFile);

export const DOCKERD = '/usr/sbin/dockerd';
export const REGISTRY = '/usr/bin/docker-registry';

export function dockerInstalled(): boolean {
  return existsSync(DOCKERD) && existsSync(REGISTRY) && existsSync('/usr/bin/busybox');
}

/** The test images: what each one is for. */
export type TestImage =
  /** busybox only: no bash, the stage must run with sh. */
  | 'busybox'
  /** busybox + bash (with its libraries). */
  | 'bash'
  /** busybox + bash with an ENTRYPOINT that prints a marker and exec's its arguments. */
  | 'entrypoint'
  /** A service: EXPOSE 5432, answers "ready from <hostname>" on it (busybox nc). */
  | 'service'
  /** A service that never listens on its EXPOSEd port. */
  | 'deaf-service'
  /** busybox + bash + this machine's Node.js and npm: the repository's own build job. */
  | 'node';

export interface DockerWorld {
  /** DOCKER_HOST of the test daemon (unix://…). */
  readonly dockerHost: string;
  /** host:port of the registry. */
  readonly registry: string;
  /** Registry user and password (htpasswd). */
  readonly user: string;
  readonly password: string;
  /** Full reference of a test image in the registry (never present in the daemon until pulled). */
  image(name: TestImage): string;
  /** Runs the docker CLI against the test daemon; resolves stdout. */
  docker(args: string[], options?: { input?: string }): Promise<string>;
  /**
   * Pushes a multi-platform image (a manifest list, one busybox image per platform, each with
   * /etc/rf-platform naming its platform) and returns its reference. Only the image metadata is
   * of that platform: the binaries are this machine's, so any variant runs here.
   */
  pushMultiPlatform(repository: string, platforms: readonly string[]): Promise<string>;
  /**
   * Builds a test image straight into the daemon under `tag` (e.g. `node:20-bookworm`, a name of a
   * registry this machine cannot reach), as `docker load` on an air-gapped host would. Not pushed:
   * only pull policy `if-not-present` or `never` finds it.
   */
  importImage(name: TestImage, tag: string): Promise<void>;
  /** Remove every image of the registry from the daemon, so the next pull is a real pull. */
  forgetImages(): Promise<void>;
  /** dockerd's log so far. */
  log(): string;
  stop(): Promise<void>;
}

export async function startDockerWorld(
  options: { images?: readonly TestImage[]; password?: string } = {},
): Promise<DockerWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'rf-docker-'));
  const daemon = await startDockerd(dir);
  let registry: Awaited<ReturnType<typeof startRegistry>> | undefined;
  try {
    registry = await startRegistry(dir, options.password);
    const clientConfig = join(dir, 'client');
    mkdirSync(clientConfig, { mode: 0o700 });
    const env = { ...process.env, DOCKER_HOST: daemon.host, DOCKER_CONFIG: clientConfig };
    const docker = async (args: string[], opts: { input?: string } = {}) => {
      if (opts.input !== undefined) {
        return new Promise<string>((resolve, reject) => {
          const child = spawn('docker', args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          child.stdout.on('data', (c: Buffer) => (out += c));
          child.stderr.on('data', (c: Buffer) => (err += c));
          child.once('error', reject);
          child.once('close', (code) =>
            code === 0 ? resolve(out) : reject(new Error(`docker ${args[0]}: ${err.trim()}`)),
          );
          child.stdin.end(opts.input);
        });
      }
      const { stdout } = await run('docker', args, { env, maxBuffer: 64 * 1024 * 1024 });
      return stdout;
    };
    await docker(['login', '--username', registry.user, '--password-stdin', registry.address], {
      input: registry.password,
    });
    const refs = new Map<TestImage, string>();
    const wanted = options.images ?? ['busybox', 'bash', 'entrypoint', 'service', 'deaf-service'];
    for (const name of wanted) {
      const ref = `${registry.address}/runner-fleet/${name}:1`;
      await buildImage(dir, name, ref, env);
      await docker(['push', ref]);
      refs.set(name, ref);
    }
    const pushed: string[] = [];
    const forgetImages = async () => {
      for (const ref of [...refs.values(), ...pushed]) await docker(['rmi', '--force', ref]).catch(() => '');
    };
    await forgetImages();
    const reg = registry;
    return {
      dockerHost: daemon.host,
      registry: reg.address,
      user: reg.user,
      password: reg.password,
      image(name) {
        const ref = refs.get(name);
        if (!ref) throw new Error(`test image ${name} was not built (startDockerWorld images option)`);
        return ref;
      },
      docker,
      async pushMultiPlatform(repository, platforms) {
        const ref = await pushManifestList(dir, reg, repository, platforms);
        pushed.push(ref);
        return ref;
      },
      importImage: (name, tag) => buildImage(dir, name, tag, env),
      forgetImages,
      log: daemon.log,
      async stop() {
        await reg.stop();
        await daemon.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await registry?.stop();
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

interface Dockerd {
  readonly host: string;
  log(): string;
  stop(): Promise<void>;
}

/** dockerd in its own roots; stop() ends it and its containers, then unmounts what it left. */
export async function startDockerd(dir: string): Promise<Dockerd> {
  const socket = join(dir, 'docker.sock');
  const logFile = join(dir, 'dockerd.log');
  // Networks of two test daemons must not overlap: each bridge adds a route on the host.
  const pool = `base=10.${100 + (randomBytes(1)[0]! % 150)}.0.0/16,size=24`;
  const child = spawn(
    DOCKERD,
    [
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--storage-driver=vfs',
      `--default-address-pool=${pool}`,
      '--data-root',
      join(dir, 'data'),
      '--exec-root',
      join(dir, 'exec'),
      '--pidfile',
      join(dir, 'dockerd.pid'),
      '-H',
      `unix://${socket}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
  );
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    log = (log + chunk).slice(-200_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const host = `unix://${socket}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      // Containers first, so no runc process outlives the daemon.
      await run('docker', ['-H', host, 'rm', '--force', '--volumes', ...(await containerIds(host))]).catch(
        () => undefined,
      );
      child.kill('SIGTERM');
      const killed = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(killed);
    }
    writeFileSync(logFile, log);
    // vfs leaves nothing mounted, but the exec root holds netns bind mounts on some kernels.
    await run('sh', ['-c', `grep -o ' ${dir}[^ ]*' /proc/mounts | xargs -r -n1 umount -l`]).catch(
      () => undefined,
    );
  };
  // Bounded wait for the API: dockerd starts containerd first.
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dockerd exited at start:\n${log.slice(-2000)}`);
    try {
      await run('docker', ['-H', host, 'version', '--format', '{{.Server.Version}}']);
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`dockerd did not answer within 60 s:\n${log.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return { host, log: () => log, stop };
}

async function containerIds(host: string): Promise<string[]> {
  const { stdout } = await run('docker', ['-H', host, 'ps', '-aq']);
  const ids = stdout.split(/\s+/).filter(Boolean);
  return ids.length ? ids : ['--'];
}

/** docker-registry on 127.0.0.1 with one htpasswd user. */
async function startRegistry(dir: string, password = `pw-${randomBytes(8).toString('hex')}`) {
  const root = join(dir, 'registry');
  mkdirSync(join(root, 'data'), { recursive: true });
  const user = 'rf-pusher';
  execFileSync('htpasswd', ['-Bbc', join(root, 'htpasswd'), user, password], { stdio: 'ignore' });
  const port = await freePort();
  const config = join(root, 'config.yml');
  writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(root, 'data')}`,
      'http:',
      `  addr: 127.0.0.1:${port}`,
      'auth:',
      '  htpasswd:',
      '    realm: runner-fleet-test',
      `    path: ${join(root, 'htpasswd')}`,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(REGISTRY, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    log = (log + c).slice(-20_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const status = await fetch(`http://127.0.0.1:${port}/v2/`)
      .then((r) => r.status)
      .catch(() => 0);
    if (status === 401) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`docker-registry did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { address: `127.0.0.1:${port}`, user, password, stop };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Builds one test image from this machine's files and tags it `ref`. */
async function buildImage(dir: string, name: TestImage, ref: string, env: NodeJS.ProcessEnv): Promise<void> {
  const root = join(dir, 'rootfs', name);
  mkdirSync(root, { recursive: true });
  busyboxRoot(root);
  const changes: string[] = ['ENV PATH=/usr/local/bin:/usr/bin:/bin', 'CMD ["sh"]'];
  if (name !== 'busybox' && name !== 'service' && name !== 'deaf-service') copyBinary(root, '/bin/bash');
  if (name === 'entrypoint') {
    writeFileSync(
      join(root, 'entrypoint.sh'),
      '#!/bin/sh\necho "image entrypoint ran" >/tmp/entrypoint-ran\nexec "$@"\n',
      { mode: 0o755 },
    );
    changes.push('ENTRYPOINT ["/entrypoint.sh"]');
  }
  if (name === 'service') {
    writeFileSync(
      join(root, 'serve.sh'),
      // Answers every connection with who it is and the variable the job gave it.
      '#!/bin/sh\nexec nc -ll -p 5432 -e sh -c \'echo "ready from $(hostname) ${SERVICE_GREETING:-}"\'\n',
      { mode: 0o755 },
    );
    changes.push('EXPOSE 5432', 'CMD ["/serve.sh"]');
  }
  if (name === 'deaf-service') {
    writeFileSync(
      join(root, 'never.sh'),
      '#!/bin/sh\necho "deaf service starting, never listening"\nexec sleep 3600\n',
      {
        mode: 0o755,
      },
    );
    changes.push('EXPOSE 6000', 'CMD ["/never.sh"]');
  }
  if (name === 'node') {
    const { node, npmDir } = nodeInstallation();
    copyBinary(root, node, '/usr/local/bin/node');
    copyCRuntime(root, node);
    cpSync(npmDir, join(root, 'usr/local/lib/node_modules/npm'), { recursive: true });
    mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
    symlinkSync('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
    symlinkSync('../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx'));
    if (existsSync('/usr/bin/git')) copyBinary(root, '/usr/bin/git');
  }
  // tar | docker import: the rootfs never needs to be a file.
  await new Promise<void>((resolve, reject) => {
    const tar = spawn('tar', ['--owner=0', '--group=0', '-C', root, '-c', '.'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const child = spawn('docker', ['import', ...changes.flatMap((c) => ['--change', c]), '-', ref], {
      env,
      stdio: [tar.stdout!, 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (c: Buffer) => (err += c));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`docker import ${name}: ${err.trim()}`)),
    );
  });
  rmSync(root, { recursive: true, force: true });
}

/**
 * A manifest list pushed through the registry's HTTP API (docker can neither import nor build an
 * image of another platform without BuildKit): per platform, a busybox layer with /etc/rf-platform,
 * an image config of that os/architecture, and its manifest; then the list naming them.
 */
async function pushManifestList(
  dir: string,
  registry: { address: string; user: string; password: string },
  repository: string,
  platforms: readonly string[],
): Promise<string> {
  const base = `http://${registry.address}/v2/${repository}`;
  const auth = `Basic ${Buffer.from(`${registry.user}:${registry.password}`).toString('base64')}`;
  const digest = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const request = async (url: string, init: RequestInit) => {
    const response = await fetch(url, { ...init, headers: { authorization: auth, ...init.headers } });
    if (!response.ok)
      throw new Error(`registry ${init.method} ${url}: ${response.status} ${await response.text()}`);
    return response;
  };
  const putBlob = async (data: Buffer) => {
    const started = await request(`${base}/blobs/uploads/`, { method: 'POST' });
    const location = new URL(started.headers.get('location')!, base);
    location.searchParams.set('digest', digest(data));
    await request(location.href, {
      method: 'PUT',
      body: new Uint8Array(data),
      headers: { 'content-type': 'application/octet-stream' },
    });
    return { digest: digest(data), size: data.length };
  };
  const putManifest = async (reference: string, mediaType: string, body: unknown) => {
    const data = Buffer.from(JSON.stringify(body));
    await request(`${base}/manifests/${reference}`, {
      method: 'PUT',
      body: new Uint8Array(data),
      headers: { 'content-type': mediaType },
    });
    return { digest: digest(data), size: data.length, mediaType };
  };
  const manifests = [];
  for (const platform of platforms) {
    const [os, architecture] = platform.split('/') as [string, string];
    const root = join(dir, 'rootfs', `platform-${architecture}`);
    mkdirSync(root, { recursive: true });
    busyboxRoot(root);
    writeFileSync(join(root, 'etc/rf-platform'), `${platform}\n`);
    const tar = execFileSync('tar', ['--owner=0', '--group=0', '-C', root, '-c', '.'], {
      maxBuffer: 64 * 1024 * 1024,
    });
    rmSync(root, { recursive: true, force: true });
    const layer = await putBlob(gzipSync(tar));
    const config = await putBlob(
      Buffer.from(
        JSON.stringify({
          architecture,
          os,
          config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['sh'] },
          rootfs: { type: 'layers', diff_ids: [digest(tar)] },
        }),
      ),
    );
    const manifest = await putManifest(architecture, 'application/vnd.docker.distribution.manifest.v2+json', {
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', ...config },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', ...layer }],
    });
    manifests.push({ ...manifest, platform: { os, architecture } });
  }
  const listType = 'application/vnd.docker.distribution.manifest.list.v2+json';
  await putManifest('1', listType, { schemaVersion: 2, mediaType: listType, manifests });
  return `${registry.address}/${repository}:1`;
}

/**
 * The Node.js that `npm` on PATH belongs to, and that npm: this machine's installation (Node 20 in
 * CI), even when the tests themselves run on another node (the Node 24 pass of .ci/run).
 */
function nodeInstallation(): { node: string; npmDir: string } {
  const npm = execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim();
  // <prefix>/lib/node_modules/npm/bin/npm-cli.js, linked from <prefix>/bin/npm.
  const npmDir = dirname(dirname(realpathSync(npm)));
  const node = join(dirname(dirname(dirname(npmDir))), 'bin', 'node');
  return { node: existsSync(node) ? node : process.execPath, npmDir };
}

/** A minimal Linux root: busybox and its applets, /etc/passwd, /tmp. */
function busyboxRoot(root: string): void {
  for (const d of ['bin', 'etc', 'tmp', 'root', 'usr/bin', 'usr/local/bin', 'dev', 'proc', 'sys']) {
    mkdirSync(join(root, d), { recursive: true });
  }
  chmodSync(join(root, 'tmp'), 0o1777);
  cpSync('/usr/bin/busybox', join(root, 'bin/busybox'));
  const applets = execFileSync('/usr/bin/busybox', ['--list'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
  for (const applet of applets) {
    if (applet === 'busybox') continue;
    const link = join(root, 'bin', applet);
    if (!existsSync(link)) symlinkSync('busybox', link);
  }
  // `#!/usr/bin/env node` (npm, node_modules/.bin) needs env where every distribution has it.
  symlinkSync('../../bin/busybox', join(root, 'usr/bin/env'));
  writeFileSync(
    join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n',
  );
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  // Tells a test image from this machine (which may itself run in a container).
  writeFileSync(join(root, 'etc/runner-fleet-test-image'), 'yes\n');
}

/**
 * The rest of the C library a Debian image has beside what `binary` links (librt, libresolv, …):
 * native addons that npm installs in a job (rolldown's binding needs librt) load them.
 */
function copyCRuntime(root: string, binary: string): void {
  const libc = /(\/\S+)\/libc\.so\.6/.exec(execFileSync('ldd', [binary], { encoding: 'utf8' }))?.[1];
  if (!libc) return;
  const names = ['libc.so.6', 'libm.so.6', 'librt.so.1', 'libpthread.so.0', 'libdl.so.2', 'libresolv.so.2'];
  for (const name of [...names, 'libutil.so.1', 'libanl.so.1', 'libgcc_s.so.1', 'libstdc++.so.6']) {
    const lib = join(libc, name);
    if (!existsSync(lib) || existsSync(join(root, lib))) continue;
    mkdirSync(join(root, libc), { recursive: true });
    writeFileSync(join(root, lib), readFileSync(lib), { mode: 0o755 });
  }
}

/** Copies a dynamically linked binary and the libraries ldd names, at the same paths. */
function copyBinary(root: string, source: string, target = source): void {
  mkdirSync(join(root, dirname(target)), { recursive: true });
  cpSync(source, join(root, target));
  const ldd = execFileSync('ldd', [source], { encoding: 'utf8' });
  for (const match of ldd.matchAll(/(\/\S+\.so[^\s]*)/g)) {
    const lib = match[1]!;
    const real = readFileSync(lib);
    mkdirSync(join(root, dirname(lib)), { recursive: true });
    if (!existsSync(join(root, lib))) writeFileSync(join(root, lib), real, { mode: 0o755 });
  }
}
