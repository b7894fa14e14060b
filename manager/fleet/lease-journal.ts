/**
 * The daemon's small local record of leases: the one record of which instance runs which job.
 * Instance tags do not carry leases (that cost a tag write and a tag delete per job, the largest
 * part of the AWS calls per job); the journal is written before `prepare` gets its answer, so a
 * daemon killed right after handing out a lease still knows, after restart, that the instance is
 * busy. EC2 stays the source of truth for which instances exist. The journal lives in the state
 * directory beside the instances' SSH keys: losing that directory loses the keys too, and with
 * them every running job, whatever the tags said. If the file is unreadable, the fleet treats
 * every adopted instance as leased by an unknown job. Written atomically (temp file + rename),
 * 0600: it may hold job tokens.
 *
 * It also remembers which instances are being retired. Retiring an instance is decided locally
 * and the terminate call follows within a second, so writing a `terminating` tag first would cost
 * one cloud call per job for a window that this file covers for free: after a crash in between,
 * the restarted daemon finds the id here and finishes the termination.
 *
 * And it remembers which instances this manager launched (until they are gone): tags can be
 * written by anyone allowed to tag, this file only by the daemon, so it is the first proof of
 * provenance that adoption.ts accepts.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface LeaseEntry {
  readonly jobId: string;
  readonly instanceId: string;
  readonly leasedAt: string;
  readonly credentialClass: string;
  readonly projectPath?: string;
  /** CI_JOB_TOKEN, to ask the configured GitLab whether the job still runs (orphan reaping). */
  readonly jobToken?: string;
}

/** What the fleet needs from a lease record; the simulator uses the in-memory one. */
export interface LeaseStore {
  readonly loadProblem?: string | undefined;
  get(jobId: string): LeaseEntry | undefined;
  byInstance(instanceId: string): LeaseEntry | undefined;
  all(): LeaseEntry[];
  put(entry: LeaseEntry): void;
  delete(jobId: string): boolean;
  /** Instances decided to be terminated whose termination is not confirmed yet. */
  addRetiring(ids: readonly string[]): void;
  removeRetiring(ids: readonly string[]): void;
  isRetiring(id: string): boolean;
  retiring(): string[];
  /** Instances this manager launched, with when, until they are terminated or gone. */
  addLaunched(ids: readonly string[], at: number): void;
  removeLaunched(ids: readonly string[]): void;
  isLaunched(id: string): boolean;
  launched(): ReadonlyMap<string, number>;
  /** Several changes, one write. */
  batch(fn: () => void): void;
}

interface JournalFile {
  version: 1;
  leases: LeaseEntry[];
  retiring?: string[];
  launched?: Array<{ id: string; at: number }>;
}

export class MemoryLeaseStore implements LeaseStore {
  protected readonly leases = new Map<string, LeaseEntry>();
  protected readonly byInstanceId = new Map<string, LeaseEntry>();
  protected readonly retiringIds = new Set<string>();
  protected readonly launchedIds = new Map<string, number>();
  private batching = 0;
  private dirty = false;

  get(jobId: string): LeaseEntry | undefined {
    return this.leases.get(jobId);
  }

  byInstance(instanceId: string): LeaseEntry | undefined {
    return this.byInstanceId.get(instanceId);
  }

  all(): LeaseEntry[] {
    return [...this.leases.values()];
  }

  put(entry: LeaseEntry): void {
    const previous = this.leases.get(entry.jobId);
    if (previous) this.byInstanceId.delete(previous.instanceId);
    this.leases.set(entry.jobId, entry);
    this.byInstanceId.set(entry.instanceId, entry);
    this.changed();
  }

  delete(jobId: string): boolean {
    const entry = this.leases.get(jobId);
    if (!entry) return false;
    this.leases.delete(jobId);
    if (this.byInstanceId.get(entry.instanceId) === entry) this.byInstanceId.delete(entry.instanceId);
    this.changed();
    return true;
  }

  addRetiring(ids: readonly string[]): void {
    const before = this.retiringIds.size;
    for (const id of ids) this.retiringIds.add(id);
    if (this.retiringIds.size !== before) this.changed();
  }

  removeRetiring(ids: readonly string[]): void {
    let removed = false;
    for (const id of ids) removed = this.retiringIds.delete(id) || removed;
    if (removed) this.changed();
  }

  isRetiring(id: string): boolean {
    return this.retiringIds.has(id);
  }

  retiring(): string[] {
    return [...this.retiringIds];
  }

  addLaunched(ids: readonly string[], at: number): void {
    if (ids.length === 0) return;
    for (const id of ids) this.launchedIds.set(id, at);
    this.changed();
  }

  removeLaunched(ids: readonly string[]): void {
    let removed = false;
    for (const id of ids) removed = this.launchedIds.delete(id) || removed;
    if (removed) this.changed();
  }

  isLaunched(id: string): boolean {
    return this.launchedIds.has(id);
  }

  launched(): ReadonlyMap<string, number> {
    return this.launchedIds;
  }

  batch(fn: () => void): void {
    this.batching++;
    try {
      fn();
    } finally {
      this.batching--;
      if (this.batching === 0 && this.dirty) {
        this.dirty = false;
        this.save();
      }
    }
  }

  private changed(): void {
    if (this.batching > 0) this.dirty = true;
    else this.save();
  }

  protected save(): void {}
}

export class LeaseJournal extends MemoryLeaseStore {
  readonly path: string;
  /** Set when the file on disk was unreadable at load: reported, then overwritten. */
  readonly loadProblem: string | undefined;

  constructor(stateDir: string) {
    super();
    this.path = join(stateDir, 'leases.json');
    this.loadProblem = this.load();
  }

  private load(): string | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      return `cannot read ${this.path}: ${(error as Error).message}`;
    }
    try {
      const parsed = JSON.parse(text) as JournalFile;
      if (parsed?.version !== 1 || !Array.isArray(parsed.leases)) throw new Error('unexpected shape');
      for (const lease of parsed.leases) {
        if (typeof lease?.jobId === 'string' && typeof lease.instanceId === 'string') {
          this.leases.set(lease.jobId, lease);
          this.byInstanceId.set(lease.instanceId, lease);
        }
      }
      for (const id of parsed.retiring ?? []) if (typeof id === 'string') this.retiringIds.add(id);
      for (const l of parsed.launched ?? [])
        if (typeof l?.id === 'string' && typeof l.at === 'number') this.launchedIds.set(l.id, l.at);
      return undefined;
    } catch (error) {
      // A corrupt journal must not stop the daemon: instance tags still say which are leased.
      return `lease journal ${this.path} is corrupt (${(error as Error).message}); rebuilding leases from instance tags`;
    }
  }

  protected override save(): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.tmp`;
    const body: JournalFile = {
      version: 1,
      leases: this.all(),
      retiring: this.retiring(),
      launched: [...this.launched()].map(([id, at]) => ({ id, at })),
    };
    writeFileSync(tmp, JSON.stringify(body), { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
