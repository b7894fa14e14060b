/**
 * Local jobs as their own users. When the daemon runs as root, each local instance gets a uid of
 * its own (no passwd entry needed: the kernel checks numbers), its job-writable directories are
 * that uid's, and the run hook starts stages with it. One shared job user would not do: jobs of
 * the same uid can read each other's /proc/<pid>/environ (job tokens, variables), signal each
 * other and enter each other's trees.
 */
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';

/** uids per range: [local] job_uid_base … job_uid_base + 1999. */
export const JOB_UID_COUNT = 2000;

export interface JobUidRange {
  /** First uid (and gid) handed to an instance. */
  readonly base: number;
  /** How many uids the range holds. */
  readonly count: number;
}

/** uids named in /etc/passwd (never handed out, whatever the range says). */
export function passwdUids(path = '/etc/passwd'): Set<number> {
  const uids = new Set<number>();
  try {
    for (const line of readFileSync(path, 'utf8').split('\n')) {
      const uid = Number(line.split(':')[2]);
      if (line && Number.isInteger(uid)) uids.add(uid);
    }
  } catch {
    // No passwd file (minimal containers): the range is all there is to go by.
  }
  return uids;
}

/**
 * Host-wide claims, one file per uid naming the instance directory that holds it: several
 * daemons (other fleets, other state directories) on one host share the uid range, and a uid
 * must be one instance's at a time, or terminating one instance would kill another's job. Under
 * /run, so a reboot (which ends every process) clears them.
 */
export const CLAIMS_DIR = '/run/runner-fleet/job-uids';

/** Claim the lowest free uid of the range for `owner` (an instance directory). */
export function claimJobUid(
  range: JobUidRange,
  owner: string,
  named: ReadonlySet<number> = passwdUids(),
  claimsDir = CLAIMS_DIR,
): number {
  mkdirSync(claimsDir, { recursive: true, mode: 0o700 });
  for (let uid = range.base; uid < range.base + range.count; uid++) {
    if (named.has(uid)) continue;
    const path = join(claimsDir, String(uid));
    if (tryCreate(path, owner)) return uid;
    const holder = readClaim(path);
    if (holder === owner) return uid;
    // A claim whose instance directory is gone was left by a crash between terminate and release.
    if (holder !== undefined && !existsSync(holder) && takeOver(path, holder) && tryCreate(path, owner))
      return uid;
  }
  throw new Error(
    `no free job uid in ${range.base}..${range.base + range.count - 1}: each is claimed in ${claimsDir} or a named user's ([local] job_uid_base)`,
  );
}

/** Re-claim a uid an existing instance already has (after a reboot cleared /run); false if another holds it. */
export function reclaimJobUid(uid: number, owner: string, claimsDir = CLAIMS_DIR): boolean {
  mkdirSync(claimsDir, { recursive: true, mode: 0o700 });
  const path = join(claimsDir, String(uid));
  return tryCreate(path, owner) || readClaim(path) === owner;
}

export function holdsJobUid(uid: number, owner: string, claimsDir = CLAIMS_DIR): boolean {
  return readClaim(join(claimsDir, String(uid))) === owner;
}

export function releaseJobUid(uid: number, owner: string, claimsDir = CLAIMS_DIR): void {
  const path = join(claimsDir, String(uid));
  if (readClaim(path) !== owner) return;
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

function tryCreate(path: string, owner: string): boolean {
  try {
    writeFileSync(path, owner, { flag: 'wx', mode: 0o600 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
}

function readClaim(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Move a stale claim aside; if what was moved is not the stale one (a race), put it back. */
function takeOver(path: string, staleHolder: string): boolean {
  const aside = `${path}.stale-${randomBytes(4).toString('hex')}`;
  try {
    renameSync(path, aside);
  } catch {
    return false;
  }
  if (readClaim(aside) !== staleHolder) {
    try {
      renameSync(aside, path);
    } catch {
      // Lost it; the next uid will do.
    }
    return false;
  }
  unlinkSync(aside);
  return true;
}

/**
 * SIGKILL every process whose real or effective uid is `uid`: terminating a local instance ends
 * whatever its job left behind, even a process that escaped its process group (setsid), so the
 * next instance given this uid starts clean.
 */
export function killUid(uid: number): number {
  let killed = 0;
  let pids: string[];
  try {
    pids = readdirSync('/proc');
  } catch {
    return 0;
  }
  for (const name of pids) {
    if (!/^\d+$/.test(name)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${name}/status`, 'utf8');
    } catch {
      continue; // Gone meanwhile.
    }
    const ids = /^Uid:\s+(\d+)\s+(\d+)/m.exec(status);
    if (!ids || (Number(ids[1]) !== uid && Number(ids[2]) !== uid)) continue;
    try {
      process.kill(Number(name), 'SIGKILL');
      killed++;
    } catch {
      // Gone meanwhile.
    }
  }
  return killed;
}
