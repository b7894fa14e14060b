/**
 * The daemon's small local record of leases. Tags on the instance say the same thing, but a tag
 * write is a cloud call and may lag; the journal is written before `prepare` gets its answer, so
 * a daemon killed right after handing out a lease still knows, after restart, that the instance
 * is busy. Written atomically (temp file + rename), 0600: it may hold job tokens.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface LeaseEntry {
  readonly jobId: string;
  readonly instanceId: string;
  readonly leasedAt: string;
  readonly credentialClass: string;
  readonly projectPath?: string;
  /** CI_JOB_TOKEN and server URL, to ask GitLab whether the job still runs (orphan reaping). */
  readonly jobToken?: string;
  readonly serverUrl?: string;
}

interface JournalFile {
  version: 1;
  leases: LeaseEntry[];
}

export class LeaseJournal {
  private readonly leases = new Map<string, LeaseEntry>();
  readonly path: string;
  /** Set when the file on disk was unreadable at load: reported, then overwritten. */
  readonly loadProblem: string | undefined;

  constructor(stateDir: string) {
    this.path = join(stateDir, 'leases.json');
    this.loadProblem = this.load();
  }

  get(jobId: string): LeaseEntry | undefined {
    return this.leases.get(jobId);
  }

  byInstance(instanceId: string): LeaseEntry | undefined {
    for (const lease of this.leases.values()) if (lease.instanceId === instanceId) return lease;
    return undefined;
  }

  all(): LeaseEntry[] {
    return [...this.leases.values()];
  }

  put(entry: LeaseEntry): void {
    this.leases.set(entry.jobId, entry);
    this.save();
  }

  delete(jobId: string): boolean {
    const had = this.leases.delete(jobId);
    if (had) this.save();
    return had;
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
        if (typeof lease?.jobId === 'string' && typeof lease.instanceId === 'string')
          this.leases.set(lease.jobId, lease);
      }
      return undefined;
    } catch (error) {
      // A corrupt journal must not stop the daemon: instance tags still say which are leased.
      return `lease journal ${this.path} is corrupt (${(error as Error).message}); rebuilding leases from instance tags`;
    }
  }

  private save(): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.tmp`;
    const body: JournalFile = { version: 1, leases: this.all() };
    writeFileSync(tmp, JSON.stringify(body), { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
