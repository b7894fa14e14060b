/**
 * `prepare` stores the lease in the job's TMPDIR (0600), so every `run` reaches the instance
 * without asking the daemon: a daemon restart mid-job cuts no stage.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Lease } from '../manager/control/protocol.js';

const FILE = 'runner-fleet-lease.json';

export function leaseFilePath(tmpDir: string): string {
  return join(tmpDir, FILE);
}

export function writeLeaseFile(tmpDir: string, lease: Lease): void {
  const path = leaseFilePath(tmpDir);
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(lease), { mode: 0o600 });
  renameSync(tmp, path);
}

/** The lease, undefined when there is no file; throws when the file is there but unusable. */
export function readLeaseFile(tmpDir: string): Lease | undefined {
  let text: string;
  try {
    text = readFileSync(leaseFilePath(tmpDir), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let lease: Lease;
  try {
    lease = JSON.parse(text) as Lease;
  } catch {
    throw new Error(`lease file ${leaseFilePath(tmpDir)} is corrupt`);
  }
  if (typeof lease?.instanceId !== 'string' || typeof lease.connect?.kind !== 'string') {
    throw new Error(`lease file ${leaseFilePath(tmpDir)} is incomplete`);
  }
  return lease;
}

export function removeLeaseFile(tmpDir: string): void {
  rmSync(leaseFilePath(tmpDir), { force: true });
}

const LOST_FILE = 'runner-fleet-lost.json';

export interface LostInstance {
  readonly instanceId: string;
  /** One line for the job log: what was seen and, when known, why. */
  readonly cause: string;
  /** When the loss was seen (ISO time). */
  readonly at: string;
}

/**
 * Remember, for the rest of this job, that its instance is gone: every later stage (each its own
 * `run` process) then fails at once instead of spending its connect budget on a dead address.
 * Kept in the job's TMPDIR so no stage depends on the daemon to know it.
 */
export function writeLostFile(tmpDir: string, lost: LostInstance): void {
  const path = join(tmpDir, LOST_FILE);
  writeFileSync(`${path}.tmp`, JSON.stringify(lost), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

/** The recorded loss of `instanceId` in this job, if any; an unreadable file counts as none. */
export function readLostFile(tmpDir: string, instanceId: string): LostInstance | undefined {
  try {
    const lost = JSON.parse(readFileSync(join(tmpDir, LOST_FILE), 'utf8')) as LostInstance;
    return lost?.instanceId === instanceId && typeof lost.cause === 'string' ? lost : undefined;
  } catch {
    return undefined;
  }
}
