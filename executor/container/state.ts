/**
 * Marks a job as a container job in its TMPDIR (prepare writes it before touching Docker), so
 * `run` knows without parsing the job response and `cleanup` knows there may be something to
 * remove. Nothing secret: the job id only. Kept apart so a bare job's hooks load nothing more.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const FILE = 'runner-fleet-container.json';

export interface ContainerState {
  readonly jobId: string;
}

export function writeContainerState(tmpDir: string, state: ContainerState): void {
  writeFileSync(join(tmpDir, FILE), JSON.stringify(state), { mode: 0o600 });
}

export function readContainerState(tmpDir: string): ContainerState | undefined {
  try {
    const state = JSON.parse(readFileSync(join(tmpDir, FILE), 'utf8')) as ContainerState;
    return typeof state?.jobId === 'string' ? state : undefined;
  } catch {
    return undefined;
  }
}
