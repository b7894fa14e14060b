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
