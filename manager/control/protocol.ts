/**
 * The control socket speaks newline-delimited JSON: one request line from the client, then any
 * number of `progress` lines and exactly one final `ok` or `error` line from the daemon. Types
 * only: the hooks import this file, so it must stay free of runtime dependencies.
 */
import type { ContainerSettings } from '../../executor/container/spec.js';
import type { ConnectInfo } from '../providers/provider.js';

/** What prepare knows about the job. Never job variables: only ids and the ID token to verify. */
export interface JobInfo {
  readonly id: string;
  /** From the job variables: a hint for logs, not trusted for any decision. */
  readonly projectPath?: string;
  /** From gitlab-runner's job response: trusted. */
  readonly projectId?: string;
  readonly pipelineId?: string;
  /** GitLab ID token (id_tokens:) for credential rules; verified by the daemon, never logged. */
  readonly idToken?: string;
  /**
   * CI_JOB_TOKEN, used only to ask the configured GitLab whether the job is still running; never
   * logged. No server URL travels with it: CI_SERVER_URL is the job author's to set.
   */
  readonly jobToken?: string;
  /** The job runs in containers (image: or default_image): its instance needs IMDS hop limit 2. */
  readonly container?: boolean;
}

/**
 * Who may send what: `ping` anyone who can open the socket; `config` mints the job's secret;
 * `acquire`, `release`, `lease` and `fate` need that job's secret (`jobSecret`, from config_exec's
 * job_env); `status` and `drain` need the operator token (operator-token.ts). Optional in the
 * types so an old client's request still parses and is refused with a message naming what is
 * missing.
 */
export type ControlRequest =
  | { readonly op: 'ping' }
  | { readonly op: 'config'; readonly jobId: string; readonly jobSecret?: string }
  | { readonly op: 'acquire'; readonly job: JobInfo; readonly jobSecret?: string }
  | {
      readonly op: 'release';
      readonly jobId: string;
      readonly reason?: string;
      readonly jobSecret?: string;
      /** The instance prepare's lease file names: claims an instance only an unreadable journal lost. */
      readonly instanceId?: string;
    }
  | { readonly op: 'lease'; readonly jobId: string; readonly jobSecret?: string }
  | {
      readonly op: 'fate';
      readonly jobId: string;
      readonly jobSecret?: string;
      /**
       * Answer only once the daemon learns the job's instance is gone (its listing reports it
       * terminated), or never: the run hook holds this open during a stage and closes it after.
       */
      readonly wait?: boolean;
    }
  | { readonly op: 'status'; readonly operatorToken?: string }
  | { readonly op: 'drain'; readonly wait?: boolean; readonly operatorToken?: string };

/** What config_exec prints, as the daemon computes it for the configured provider. */
export interface ExecutorConfig {
  readonly builds_dir: string;
  readonly cache_dir: string;
  readonly builds_dir_is_shared: boolean;
  readonly hostname: string;
  readonly driver: { readonly name: string; readonly version: string };
  readonly shell: 'bash';
  /** The job variable holding the GitLab ID token ([credentials] token_variable). */
  readonly idTokenVariable: string;
  /** [executor] daemon_wait: how long later hooks wait for a restarting daemon. */
  readonly daemonWaitMs: number;
  /** This job's secret, for its later hooks only (job_env); the daemon keeps its hash. */
  readonly jobSecret: string;
  /** [container], for prepare, run and cleanup (through job_env). */
  readonly container: ContainerSettings;
}

/** Everything the run and cleanup hooks need, persisted by prepare in the job's TMPDIR. */
export interface Lease {
  readonly jobId: string;
  readonly instanceId: string;
  readonly provider: string;
  readonly connect: ConnectInfo;
  readonly leasedAt: string;
  readonly killGraceMs: number;
  /** Lines for the job log, e.g. which credential rule matched. */
  readonly notes: readonly string[];
}

export interface InstanceStatus {
  readonly id: string;
  readonly state: string;
  readonly jobId: string | null;
  readonly provider: string;
  readonly createdAt: string;
  readonly readyAt: string | null;
  readonly leasedAt: string | null;
  readonly useCount: number;
  /** The launch settings it was made with: `default`, or a credential rule's (`s-<hash>`). */
  readonly shape?: string;
  readonly detail: Readonly<Record<string, string>>;
}

export interface StatusReport {
  readonly manager: {
    readonly id: string;
    readonly fleet: string;
    readonly provider: string;
    readonly pid: number;
    readonly startedAt: string;
    readonly version: string;
    readonly draining: boolean;
  };
  readonly instances: readonly InstanceStatus[];
  readonly leases: readonly {
    readonly jobId: string;
    readonly instanceId: string;
    readonly leasedAt: string;
  }[];
  readonly waiting: number;
  /**
   * Instances carrying this manager's tags that it did not launch (provenance failed): never
   * adopted, leased or terminated. Absent from daemons older than this field.
   */
  readonly foreign?: readonly {
    readonly id: string;
    readonly why: string;
    readonly seenAt: string;
    readonly launchedAt: string;
  }[];
  /**
   * The launch shapes the credential rules define (an instance's `shape` names one): where their
   * jobs' instances are launched. Absent from daemons older than this field.
   */
  readonly shapes?: readonly {
    readonly key: string;
    readonly rules: readonly string[];
    readonly launchTemplate?: string;
    readonly subnets?: readonly string[];
    readonly instanceTypes?: readonly string[];
  }[];
}

export type ControlResponse =
  | { readonly type: 'progress'; readonly message: string }
  | { readonly type: 'ok'; readonly data?: unknown }
  | { readonly type: 'error'; readonly message: string; readonly code?: string };
