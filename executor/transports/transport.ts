/**
 * How the `run` hook executes one stage script on a leased instance. The local transport runs it
 * in a child process group on this machine; the SSH transport streams it to `bash` on the
 * instance. Both relay stdout/stderr to the hook's own stdout/stderr (the job log) live, in order
 * and with back-pressure, and turn cancellation into the end of the remote process tree.
 */

export interface StageRequest {
  /** Absolute path of the script gitlab-runner wrote (in the job's TMPDIR). */
  readonly scriptPath: string;
  /**
   * The script itself, when it is not a file: runner-fleet's own container control scripts
   * (wrapping scriptPath's into the job container). On an isolated local instance these run with
   * the hook's privileges, since they drive dockerd; the job's code runs inside the container.
   */
  readonly script?: Buffer;
  /**
   * With `script` only: bytes streamed right after the script, which the script finds unread on
   * fd 3 and hands on (the container stage gives them to `docker exec` as the job's script). The
   * script is read exactly, not to the end of the stream, so no process is needed to feed these.
   */
  readonly input?: Buffer;
  /** gitlab-runner's stage name; any name must be accepted. */
  readonly stage: string;
  /** Extra environment for the script, e.g. RUNNER_FLEET_INSTANCE_ID. Never job secrets. */
  readonly env: Readonly<Record<string, string>>;
  /** Per-job directory owned by the hook (TMPDIR): a place for sockets or pid files. */
  readonly jobTmpDir: string;
  /** After a cancel, how long to wait between SIGTERM and SIGKILL of the remote tree. */
  readonly killGraceMs: number;
  /**
   * Asked when a connection attempt fails, before retrying: a cause (e.g. the daemon knows the
   * instance was reclaimed) ends the retries at once. Must answer quickly and never throw;
   * undefined (no answer, daemon restarting) means keep trying for the whole connect budget.
   */
  readonly probeGone?: () => Promise<string | undefined>;
  /**
   * Resolves with a cause if the daemon learns mid-stage that the instance is gone (its listing
   * reports it terminated): the stage ends at once as a system failure instead of waiting for the
   * connection to time out. May never resolve.
   */
  readonly lost?: Promise<string>;
}

export type StageOutcome =
  /** The script ran to the end (or was killed by a signal: code is 128 + signal). */
  | { readonly kind: 'exited'; readonly code: number }
  /**
   * The infrastructure failed: connection lost, auth refused, host key mismatch, instance gone.
   * `instanceLost`: the instance could not be reached or the connection to it was lost, so later
   * stages of the job should not wait for it again. `cause`: why, when probeGone said.
   */
  | {
      readonly kind: 'system-failure';
      readonly message: string;
      readonly instanceLost?: boolean;
      readonly cause?: string;
    }
  /** The stage was canceled through the abort signal and its process tree has ended. */
  | { readonly kind: 'canceled' };

export interface Transport {
  runStage(request: StageRequest, signal: AbortSignal): Promise<StageOutcome>;
  /** Release per-job resources (e.g. a multiplexed SSH master). Idempotent. */
  close?(jobTmpDir: string): Promise<void>;
}
