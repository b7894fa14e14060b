/**
 * Per-job secrets: the control socket's proof that a request comes from the hooks of that job.
 *
 * `config_exec` (the first hook of every job) asks the daemon for one; the daemon mints it, keeps
 * only its SHA-256, and the config hook hands it to the job's later hooks through gitlab-runner's
 * `job_env`, which reaches the hook processes only (executors/custom prepareCommand), never the
 * job's script. Every later op on that job (acquire, lease, fate, release) must carry it. A job id
 * has at most one live secret: a second `config` for a job whose secret is live is refused, so
 * whoever reaches the socket cannot mint a second key to a running job. The config hook proposes
 * the secret itself and sends the same one when it asks again: a daemon killed after recording
 * the secret but before answering gets the same proposal from the retry and accepts it, which a
 * caller that never held the secret cannot do.
 *
 * Persisted (hashes only, 0600, atomic) so that a daemon restarted mid-job still accepts the job's
 * later hooks.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ControlError } from './server.js';

interface Record_ {
  /** base64url SHA-256 of the secret. */
  readonly sha256: string;
  readonly mintedAt: number;
  /** Released jobs keep their record until pruned, so a retried release is still answered. */
  released?: boolean;
}

interface SecretsFile {
  version: 1;
  jobs: Record<string, Record_>;
}

/** 32 random bytes in base64url are 43 characters: a proposal must be at least that strong. */
const PROPOSED_SECRET = /^[A-Za-z0-9_-]{43,128}$/;

const digest = (secret: string) => createHash('sha256').update(secret).digest();

export class JobSecrets {
  private readonly jobs = new Map<string, Record_>();
  readonly path: string | undefined;

  /** `stateDir` undefined: memory only (tests). */
  constructor(
    stateDir: string | undefined,
    private readonly maxAgeMs: number,
  ) {
    this.path = stateDir === undefined ? undefined : join(stateDir, 'job-secrets.json');
    this.load();
  }

  /**
   * The job's secret: `proposed` (the config hook's own, at least 32 random bytes) or a fresh one.
   * Refused while the job has a live secret, unless `proposed` is that secret (a retried config).
   */
  mint(
    jobId: string,
    now = Date.now(),
    isBusy: (jobId: string) => boolean = () => false,
    proposed?: string,
  ): string {
    this.prune(now, isBusy);
    if (proposed !== undefined && !PROPOSED_SECRET.test(proposed))
      throw new ControlError('config: "jobSecret" must be 43 to 128 base64url characters', 'bad-request');
    const existing = this.jobs.get(jobId);
    if (existing && !existing.released) {
      if (proposed !== undefined && this.matches(existing, proposed)) return proposed;
      throw new ControlError(
        `job ${jobId} already has a job secret: its config stage ran before, and only that job's hooks may act on it`,
        'job-exists',
      );
    }
    const secret = proposed ?? randomBytes(32).toString('base64url');
    this.jobs.set(jobId, { sha256: digest(secret).toString('base64url'), mintedAt: now });
    this.save();
    return secret;
  }

  /** Throws a ControlError (code `unauthorized`) unless `secret` is the job's. */
  check(jobId: string, secret: string | undefined): void {
    if (!secret)
      throw new ControlError(
        `job ${jobId}: the request carries no job secret (RUNNER_FLEET_JOB_SECRET, handed out by the config stage through job_env): hooks older than the daemon, or a hook run without gitlab-runner's config stage`,
        'unauthorized',
      );
    const record = this.jobs.get(jobId);
    if (!record)
      throw new ControlError(
        `job ${jobId} has no job secret at this daemon: its config stage did not run here`,
        'unauthorized',
      );
    if (!this.matches(record, secret))
      throw new ControlError(
        `job ${jobId}: wrong job secret; only the hooks of job ${jobId} may act on it`,
        'unauthorized',
      );
  }

  private matches(record: Record_, secret: string): boolean {
    const expected = Buffer.from(record.sha256, 'base64url');
    const given = digest(secret);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  released(jobId: string): void {
    const record = this.jobs.get(jobId);
    if (!record || record.released) return;
    record.released = true;
    this.save();
  }

  /** Drop records older than maxAgeMs whose job holds nothing any more. */
  prune(now: number, isBusy: (jobId: string) => boolean = () => false): void {
    let changed = false;
    for (const [jobId, record] of this.jobs) {
      if (now - record.mintedAt > this.maxAgeMs && !isBusy(jobId)) {
        this.jobs.delete(jobId);
        changed = true;
      }
    }
    if (changed) this.save();
  }

  private load(): void {
    if (!this.path) return;
    try {
      const parsed = JSON.parse(readFileSync(this.path, 'utf8')) as SecretsFile;
      if (parsed?.version !== 1 || typeof parsed.jobs !== 'object' || parsed.jobs === null) return;
      for (const [jobId, r] of Object.entries(parsed.jobs)) {
        if (typeof r?.sha256 === 'string' && typeof r.mintedAt === 'number')
          this.jobs.set(jobId, {
            sha256: r.sha256,
            mintedAt: r.mintedAt,
            ...(r.released ? { released: true } : {}),
          });
      }
    } catch {
      // Missing or corrupt: jobs configured before now must start again (their hooks are refused
      // with a message naming the job secret), which is safer than accepting anyone.
    }
  }

  private save(): void {
    if (!this.path) return;
    const body: SecretsFile = { version: 1, jobs: Object.fromEntries(this.jobs) };
    const tmp = `${this.path}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(body), { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
