/** What every hook shares: turning any failure into the right exit code and one clear line. */
import { fallbackExitCodes, HookInputError } from '../job-env.js';

export class SystemFailure extends Error {
  override name = 'SystemFailure';
}

/**
 * Run a hook body; a thrown error becomes a one-line message on stderr (the job log) and a
 * system failure, so GitLab can retry with `retry: when: runner_system_failure`. Never a stack
 * trace in the job log: set RUNNER_FLEET_DEBUG=1 to get one on the runner's side.
 */
export async function runHook(name: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    const codes = fallbackExitCodes();
    const known = error instanceof SystemFailure || error instanceof HookInputError;
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`runner-fleet ${name}: ${known ? '' : 'internal error: '}${message}\n`);
    if (process.env.RUNNER_FLEET_DEBUG === '1' && error instanceof Error && error.stack) {
      process.stderr.write(`${error.stack}\n`);
    }
    return codes.system;
  }
}
