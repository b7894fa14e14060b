/**
 * The embedded default provider: an "instance" is a private directory tree on this machine
 * (home, builds, cache, tmp) with its own id, and its tags live in a meta.json beside it. It has
 * the same shape as EC2 (launch with an idempotency token, list by tags, terminate by name) so
 * the fleet logic and the contract tests treat both alike, and a newcomer needs no AWS account.
 */
import { randomBytes } from 'node:crypto';
import {
  chmod,
  chown,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import type {
  ConnectInfo,
  LaunchRequest,
  LaunchResult,
  LeaseContext,
  Provider,
  ProviderInstance,
  ReadyCheck,
  Tags,
} from '../provider.js';
import { TAG } from '../tags.js';
import {
  claimJobUid,
  holdsJobUid,
  type JobUidRange,
  killUid,
  passwdUids,
  reclaimJobUid,
  releaseJobUid,
} from './job-users.js';

interface Meta {
  id: string;
  tags: Record<string, string>;
  launchedAt: string;
  bootTimeMs: number;
  /** The launch's idempotency token, written once at launch (unlike tags): the local ClientToken. */
  clientToken?: string;
  /** The instance's own uid (= gid) when jobs run isolated; absent: the daemon's user. */
  uid?: number;
}

export interface LocalProviderOptions {
  root: string;
  fleetName: string;
  managerId: string;
  bootTimeMs: number;
  /**
   * Run each instance's jobs as a uid of its own from this range (needs root). The instance's
   * job directories become that uid's; everything else (meta.json, pgids, the state directory,
   * the control socket) stays root's and out of the job's reach.
   */
  jobUids?: JobUidRange;
  /** The daemon's state directory, when `root` is inside it: made traversable (0711), not listable. */
  stateDir?: string;
}

/** Sub-directories every local instance has; `pgids` records the run hooks' process groups. */
const INSTANCE_DIRS = ['home', 'builds', 'cache', 'tmp', 'pgids'] as const;
/** The ones the job writes to (its uid's when isolated); `pgids` stays the manager's. */
const JOB_DIRS: ReadonlySet<string> = new Set(['home', 'builds', 'cache', 'tmp']);

export class LocalProvider implements Provider {
  readonly name = 'local';
  private readonly instancesDir: string;
  /** Per-job links (<root>/jobs/<jobId>) that point at the leased instance's tree. */
  readonly jobsDir: string;

  constructor(private readonly options: LocalProviderOptions) {
    this.instancesDir = join(options.root, 'instances');
    this.jobsDir = join(options.root, 'jobs');
  }

  async start(): Promise<void> {
    await mkdir(this.instancesDir, { recursive: true, mode: 0o700 });
    await mkdir(this.jobsDir, { recursive: true, mode: 0o700 });
    if (this.options.jobUids) await this.openPathForJobs();
  }

  /**
   * A job running as its own uid must reach its tree (<root>/jobs/<id>/builds …): every directory
   * on the way gets search permission for others but no read permission, so nothing in them can
   * be listed and the 0600 files among them (leases, secrets, operator token, socket) stay shut.
   * Directories above the state directory are not ours to change: name the one that blocks.
   */
  private async openPathForJobs(): Promise<void> {
    const root = this.options.root;
    const top = this.options.stateDir && isInside(root, this.options.stateDir) ? this.options.stateDir : root;
    for (let dir = root; ; dir = dirname(dir)) {
      await chmod(dir, 0o711);
      if (dir === top || dirname(dir) === dir) break;
    }
    await chmod(this.instancesDir, 0o711);
    await chmod(this.jobsDir, 0o711);
    // After a reboot /run is empty again while instance trees survive: claim their uids anew.
    for (const meta of await this.readAll()) {
      if (meta.uid !== undefined && !reclaimJobUid(meta.uid, this.dirOf(meta.id)))
        throw new Error(
          `local instance ${meta.id} runs jobs as uid ${meta.uid}, which another instance on this host now holds; terminate one of them`,
        );
    }
    for (let dir = dirname(top); ; dir = dirname(dir)) {
      const st = await stat(dir);
      if ((st.mode & 0o001) === 0)
        throw new Error(
          `local jobs run as their own users and cannot reach ${root}: ${dir} has mode ${(st.mode & 0o777).toString(8)}; allow search by others (chmod o+x ${dir}) or set [local] root elsewhere`,
        );
      if (dirname(dir) === dir) break;
    }
  }

  async list(): Promise<ProviderInstance[]> {
    const result: ProviderInstance[] = [];
    for (const meta of await this.readAll()) {
      if (
        meta.tags[TAG.fleet] !== this.options.fleetName ||
        meta.tags[TAG.manager] !== this.options.managerId
      )
        continue;
      result.push(this.toInstance(meta));
    }
    return result;
  }

  /** Every instance under the root, whoever owns it: for tests that check managers keep apart. */
  async listAll(): Promise<ProviderInstance[]> {
    return (await this.readAll()).map((meta) => this.toInstance(meta));
  }

  async launch(request: LaunchRequest): Promise<LaunchResult> {
    // Idempotency: a retried launch with the same token returns what the first one created.
    const existing = (await this.readAll()).filter((m) => m.tags[TAG.launchToken] === request.token);
    if (existing.length > 0) return { launched: existing.map((m) => this.toInstance(m)), failures: [] };
    const launched: ProviderInstance[] = [];
    const range = this.options.jobUids;
    const named = range ? passwdUids() : new Set<number>();
    for (let i = 0; i < request.count; i++) {
      const id = `local-${randomBytes(6).toString('hex')}`;
      const dir = this.dirOf(id);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // Claimed host-wide (other daemons share the range) once the directory that owns it exists.
      const uid = range ? claimJobUid(range, dir, named) : undefined;
      if (uid !== undefined) await chmod(dir, 0o711);
      // Meta (the tags) first: from then on a crash leaves an instance the reconciler can see.
      const meta: Meta = {
        id,
        tags: { ...request.tags, [TAG.launchToken]: request.token },
        launchedAt: new Date().toISOString(),
        bootTimeMs: this.options.bootTimeMs,
        clientToken: request.count === 1 ? request.token : `${request.token}-${i}`,
        ...(uid !== undefined ? { uid } : {}),
      };
      await this.writeMeta(meta);
      await this.makeDirs(dir, uid);
      launched.push(this.toInstance(meta));
    }
    return { launched, failures: [] };
  }

  async terminate(ids: readonly string[]): Promise<void> {
    for (const id of ids) {
      const dir = this.dirOf(id);
      // Like EC2 terminating a machine: whatever the jobs left running there dies with it.
      await this.killRecordedProcessGroups(dir);
      const uid = (await this.readMeta(id))?.uid;
      // Only while the claim is this instance's: never another instance's processes.
      if (uid !== undefined && holdsJobUid(uid, dir)) killUid(uid);
      const grave = join(this.instancesDir, `.terminated-${id}-${randomBytes(3).toString('hex')}`);
      try {
        await rename(dir, grave);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw error;
      }
      if (uid !== undefined) releaseJobUid(uid, dir);
      await rm(grave, { recursive: true, force: true });
    }
  }

  async setTags(id: string, tags: Tags): Promise<void> {
    const meta = await this.readMeta(id);
    if (!meta) throw new Error(`local instance ${id} does not exist`);
    for (const [key, value] of Object.entries(tags)) {
      if (value === '') delete meta.tags[key];
      else meta.tags[key] = value;
    }
    await this.writeMeta(meta);
  }

  async checkReady(id: string): Promise<ReadyCheck> {
    const meta = await this.readMeta(id);
    if (!meta) return { ready: false, reason: 'instance is gone' };
    if (this.statusOf(meta) !== 'running') return { ready: false, reason: 'still booting' };
    await this.makeDirs(this.dirOf(id), meta.uid);
    return { ready: true };
  }

  private async makeDirs(dir: string, uid: number | undefined): Promise<void> {
    for (const sub of INSTANCE_DIRS) {
      await mkdir(join(dir, sub), { recursive: true, mode: 0o700 });
      if (uid !== undefined && JOB_DIRS.has(sub)) await chown(join(dir, sub), uid, uid);
    }
  }

  async connectInfo(id: string): Promise<ConnectInfo> {
    const uid = (await this.readMeta(id))?.uid;
    return { kind: 'local', root: this.dirOf(id), ...(uid !== undefined ? { uid, gid: uid } : {}) };
  }

  async explainGone(id: string): Promise<string | undefined> {
    return (await this.readMeta(id))
      ? undefined
      : 'the local instance was terminated (its directory is gone)';
  }

  /** Give the job its stable path (<root>/jobs/<jobId>) into the instance's tree. */
  async prepareLease(id: string, lease: LeaseContext): Promise<void> {
    const link = this.jobLinkPath(lease.jobId);
    await unlink(link).catch(() => undefined);
    await symlink(this.dirOf(id), link);
  }

  async endLease(_id: string, jobId: string): Promise<void> {
    await unlink(this.jobLinkPath(jobId)).catch(() => undefined);
  }

  jobPaths(jobId: string): { buildsDir: string; cacheDir: string } {
    const link = this.jobLinkPath(jobId);
    return { buildsDir: join(link, 'builds'), cacheDir: join(link, 'cache') };
  }

  jobLinkPath(jobId: string): string {
    return join(this.jobsDir, safeName(jobId));
  }

  private async killRecordedProcessGroups(dir: string): Promise<void> {
    let entries: string[] = [];
    try {
      entries = await readdir(join(dir, 'pgids'));
    } catch {
      return;
    }
    for (const entry of entries) {
      const pgid = Number(entry);
      if (!Number.isInteger(pgid) || pgid <= 1) continue;
      try {
        process.kill(-pgid, 'SIGKILL');
      } catch {
        // Already gone: the usual case.
      }
    }
  }

  private dirOf(id: string): string {
    return join(this.instancesDir, safeName(id));
  }

  private statusOf(meta: Meta): ProviderInstance['status'] {
    return Date.now() - Date.parse(meta.launchedAt) >= meta.bootTimeMs ? 'running' : 'pending';
  }

  private toInstance(meta: Meta): ProviderInstance {
    return {
      id: meta.id,
      status: this.statusOf(meta),
      tags: { ...meta.tags },
      launchedAt: new Date(meta.launchedAt),
      ...(meta.clientToken ? { clientToken: meta.clientToken } : {}),
      detail: { root: this.dirOf(meta.id), ...(meta.uid !== undefined ? { uid: String(meta.uid) } : {}) },
    };
  }

  private async readAll(): Promise<Meta[]> {
    let names: string[];
    try {
      names = await readdir(this.instancesDir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const metas: Meta[] = [];
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const meta = await this.readMeta(name);
      if (meta) metas.push(meta);
    }
    return metas;
  }

  private async readMeta(id: string): Promise<Meta | undefined> {
    try {
      const parsed = JSON.parse(await readFile(join(this.dirOf(id), 'meta.json'), 'utf8')) as Meta;
      return parsed && typeof parsed.id === 'string' && parsed.tags ? parsed : undefined;
    } catch {
      // Missing or half-written meta: a launch that died before its first write. The reconcile
      // loop never sees it as ours, so it cannot be leased; the directory is inert.
      return undefined;
    }
  }

  private async writeMeta(meta: Meta): Promise<void> {
    const path = join(this.dirOf(meta.id), 'meta.json');
    const tmp = `${path}.${process.pid}.${randomBytes(3).toString('hex')}.tmp`;
    await writeFile(tmp, JSON.stringify(meta), { mode: 0o600 });
    await rename(tmp, path);
  }
}

function isInside(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !rel.startsWith(sep));
}

/** Ids come from GitLab or from us; never let one escape its directory. */
function safeName(id: string): string {
  if (!/^[A-Za-z0-9._-]+$/.test(id) || id === '.' || id === '..')
    throw new Error(`invalid id: ${JSON.stringify(id)}`);
  return id;
}
