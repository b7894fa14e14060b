/**
 * The one interface between the fleet logic and a cloud. It is deliberately small (fleeting's
 * plugin contract is four calls): list what exists, launch, terminate by name, write tags, and say
 * how to reach an instance. Real providers (local, aws) and every test double implement it, and
 * one contract suite (test/providers/contract.ts) runs against all of them.
 *
 * Nothing in here may import an AWS SDK type: providers map their cloud's shapes to these records.
 */

/** Tags are the source of truth for ownership and life-cycle state (see tags.ts for the keys). */
export type Tags = Readonly<Record<string, string>>;

/** What the provider says about one instance, in the provider's own terms. */
export interface ProviderInstance {
  /** The provider's id: the EC2 instance id on AWS, a generated id locally. */
  readonly id: string;
  /** Coarse cloud-side status. `gone` covers terminated, shutting-down and vanished instances. */
  readonly status: 'pending' | 'running' | 'gone';
  readonly tags: Tags;
  readonly launchedAt: Date;
  /** Free-form detail for status output and logs, e.g. instance type, AZ, spot or on-demand. */
  readonly detail?: Readonly<Record<string, string>>;
  /**
   * The launch's idempotency token as the cloud recorded it at launch, which nobody can change
   * afterwards (EC2: the instance's `ClientToken`; local: the token in its metadata, written only
   * at launch). Never the launch-token tag: anyone allowed to tag can write that. Providers that
   * cannot tell leave it out; adoption then relies on the fleet's launch journal (adoption.ts).
   */
  readonly clientToken?: string;
  /**
   * Until when the cloud kept launching under `clientToken`, when one token covers launches over
   * a span of time: an Auto Scaling key window's template version is `$Latest`, and launched from
   * (a replacement, a retried launch), until the next window replaces it. Provenance then measures
   * an instance's launch time against that span rather than the token's mint time alone. Set only
   * from evidence the cloud recorded (the version EC2 tagged the instance with), never from tags.
   */
  readonly tokenInUseUntil?: Date;
}

export interface LaunchRequest {
  /** How many instances to launch. */
  readonly count: number;
  /**
   * Idempotency token: retrying the same request with the same token must not launch a second
   * batch (EC2 ClientToken semantics). Minted by the fleet (fleet/provenance.ts); a provider
   * gives the cloud this token for a single instance and `token-<i>` (i < count) for several,
   * the only forms that later prove the instance is ours.
   */
  readonly token: string;
  /** Tags every launched instance carries from its first moment. */
  readonly tags: Tags;
  /** Optional instance profile (name or ARN) the instances start with. */
  readonly instanceProfile?: string;
  /** Where to launch, when a credential rule says so; absent means the provider's defaults. */
  readonly shape?: LaunchShape;
}

/**
 * A credential rule's launch settings (fleet/shape.ts). Each one replaces the provider's default
 * for that setting; settings left out keep the default.
 */
export interface LaunchShape {
  /** Stable name of these settings, carried in the launch-shape tag: `s-<hash>`. */
  readonly key: string;
  readonly launchTemplate?: string;
  readonly subnets?: readonly string[];
  readonly instanceTypes?: readonly string[];
}

export interface LaunchFailure {
  /** Machine-readable cause, e.g. `InsufficientInstanceCapacity`, `RequestLimitExceeded`. */
  readonly code: string;
  readonly message: string;
  /** How many of the requested instances this failure accounts for. */
  readonly count: number;
}

export interface LaunchResult {
  readonly launched: readonly ProviderInstance[];
  readonly failures: readonly LaunchFailure[];
  /**
   * Instances asked for whose ids are not known yet (an Auto Scaling group launches them on its
   * own): they show up in later listings, and `awaitingLaunch()` counts them until then.
   */
  readonly requested?: number;
}

/** How the executor reaches a leased instance. Written into the job's lease file by `prepare`. */
export type ConnectInfo = LocalConnectInfo | SshConnectInfo;

export interface LocalConnectInfo {
  readonly kind: 'local';
  /** The instance's private directory tree on this machine. */
  readonly root: string;
  /** The instance's own uid/gid, when the daemon runs as root: stages run as it. */
  readonly uid?: number;
  readonly gid?: number;
}

export interface SshConnectInfo {
  readonly kind: 'ssh';
  readonly host: string;
  readonly port: number;
  readonly user: string;
  /** Absolute path of the per-instance client private key (0600). */
  readonly identityFile: string;
  /** The pinned host public key line (`ssh-ed25519 AAAA…`); any other key is refused. */
  readonly hostKey: string;
}

/**
 * Result of one readiness probe. `retryInMs`: the probe made no cloud call and may be repeated
 * that soon (a refused SSH port is about to open); without it the fleet backs off.
 */
export type ReadyCheck =
  | { readonly ready: true }
  | { readonly ready: false; readonly reason: string; readonly retryInMs?: number };

export interface Provider {
  /** `local` or `aws`: shown in status and logs. */
  readonly name: string;

  /** Optional one-time checks at daemon start (e.g. AZRebalance suspended). Throw with a fix. */
  start?(): Promise<void>;

  /** Every instance carrying this fleet's and this manager's tags, in one (paginated) listing. */
  list(): Promise<ProviderInstance[]>;

  /** Launch instances. Partial success is normal: report what launched and what failed. */
  launch(request: LaunchRequest): Promise<LaunchResult>;

  /** Instances a launch asked for that no listing has shown yet (see LaunchResult.requested). */
  awaitingLaunch?(): number;

  /** Terminate exactly these instances. Unknown or already gone ids are not an error. */
  terminate(ids: readonly string[]): Promise<void>;

  /** Merge tags into an instance's tags (the state machine writes its state here). */
  setTags(id: string, tags: Tags): Promise<void>;

  /** Whether the instance can take a job now (reachable, cloud-init done, tools present). */
  checkReady(id: string): Promise<ReadyCheck>;

  /** How the executor reaches the instance. */
  connectInfo(id: string): Promise<ConnectInfo>;

  /**
   * Called when a job leases the instance, before `prepare` answers: attach the job's instance
   * profile (AWS), give the job its paths (local). Throwing fails the acquire with that message.
   */
  prepareLease?(id: string, lease: LeaseContext): Promise<void>;

  /**
   * builds_dir and cache_dir for a job, when they depend on the provider (local instances live
   * under the state directory); providers without it use the [executor] settings.
   */
  jobPaths?(jobId: string): { buildsDir: string; cacheDir: string };

  /**
   * Why an instance can no longer serve its job, if the provider can tell ("spot interruption
   * (Server.SpotInstanceTermination)"); undefined when it looks alive. Asked after a stage failed
   * as a system failure, so the job log names the cause.
   */
  explainGone?(id: string): Promise<string | undefined>;

  /** Called when the job releases the instance (whether or not it is then terminated). */
  endLease?(id: string, jobId: string): Promise<void>;
}

export interface LeaseContext {
  readonly jobId: string;
  /** Instance profile chosen by the credential rules; undefined means the default (maybe none). */
  readonly instanceProfile?: string;
  readonly hopLimit?: number;
}
