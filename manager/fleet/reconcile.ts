/**
 * Reconcile: what one listing means for the fleet's view, and which instances are orphans. The
 * functions here decide; the fleet applies their answers (forget, adopt, repair tags, mark,
 * retire), so every state change still happens in one place, synchronously.
 */
import type { ProviderInstance } from '../providers/provider.js';
import type { Clock } from './clock.js';
import { type InstanceRecord, tagsMatter, tagsOf } from './instance.js';
import type { JobChecker } from './job-check.js';
import type { LeaseEntry, LeaseStore } from './lease-journal.js';
import { planReap, type ReapCandidate, type ReapPlan, type ReapPolicy } from './policy.js';

/** How long an instance we know may be missing from listings before we call it gone. */
export const LISTING_GRACE_MS = 60_000;
/** GitLab checks in flight at once, so that a thousand leases do not open a thousand sockets. */
const JOB_CHECK_CONCURRENCY = 8;

export interface ListingMerge {
  /** Known instances that no longer exist, and why we think so. */
  readonly vanished: ReadonlyArray<{
    readonly instance: InstanceRecord;
    readonly why: string;
    /** The provider said so (listed as gone), rather than the fleet inferring it. */
    readonly reported?: boolean;
  }>;
  /** Known instances whose listed tags differ from what the fleet means them to say. */
  readonly drifted: readonly InstanceRecord[];
  /** Listed instances the fleet does not know: candidates for adoption. */
  readonly unknown: readonly ProviderInstance[];
  /** Retiring journal records of instances that exist nowhere any more. */
  readonly staleRetiring: readonly string[];
  /** Launch journal records old enough that their instance cannot exist any more. */
  readonly staleLaunched: readonly string[];
  /** Foreign instances (failed provenance) that are gone. */
  readonly foreignGone: readonly string[];
}

export interface MergeContext {
  readonly now: number;
  /** When the listing call began: tags written since then are newer than what it shows. */
  readonly listedFrom: number;
  /** Instances whose terminate call is queued or in flight: their absence is not news yet. */
  readonly terminationPending: (id: string) => boolean;
  readonly retiring: readonly string[];
  /** The launch journal: id → when launched. */
  readonly launched: ReadonlyMap<string, number>;
  /** How long a launch record is kept while its instance is not listed (EC2 lists late). */
  readonly launchedRetentionMs: number;
  /** Instances already refused by provenance: not offered for adoption again. */
  readonly foreign: ReadonlyMap<string, unknown>;
}

/**
 * Compare a listing with the known instances. Marks every listed known instance as seen now
 * (`lastSeen`); everything else is left for the caller to apply.
 */
export function mergeListing(
  known: ReadonlyMap<string, InstanceRecord>,
  listing: readonly ProviderInstance[],
  context: MergeContext,
): ListingMerge {
  const { now, listedFrom } = context;
  const seen = new Set<string>();
  const live = new Set<string>();
  const vanished: Array<{ instance: InstanceRecord; why: string; reported?: boolean }> = [];
  const drifted: InstanceRecord[] = [];
  const unknown: ProviderInstance[] = [];
  for (const listed of listing) {
    seen.add(listed.id);
    const record = known.get(listed.id);
    if (listed.status === 'gone') {
      if (record)
        vanished.push({ instance: record, why: 'the provider reports it terminated', reported: true });
      continue;
    }
    live.add(listed.id);
    if (record) {
      record.lastSeen = now;
      // Tags written since the listing began are newer than what it shows: no drift.
      if ((record.tagsWrittenAt ?? Number.NEGATIVE_INFINITY) < listedFrom && hasDrifted(record, listed))
        drifted.push(record);
      continue;
    }
    if (!context.foreign.has(listed.id)) unknown.push(listed);
  }
  for (const record of known.values()) {
    if (seen.has(record.id)) continue;
    if (record.state === 'terminating' && !context.terminationPending(record.id))
      vanished.push({ instance: record, why: 'terminated' });
    else if (now - record.lastSeen > LISTING_GRACE_MS)
      vanished.push({ instance: record, why: 'it is missing from the listing' });
  }
  const staleRetiring = context.retiring.filter((id) => !seen.has(id) && !known.has(id));
  const staleLaunched: string[] = [];
  for (const [id, at] of context.launched)
    if (!seen.has(id) && !known.has(id) && now - at > context.launchedRetentionMs) staleLaunched.push(id);
  const foreignGone = [...context.foreign.keys()].filter((id) => !live.has(id));
  return { vanished, drifted, unknown, staleRetiring, staleLaunched, foreignGone };
}

function hasDrifted(record: InstanceRecord, listed: ProviderInstance): boolean {
  if (!tagsMatter(record)) return false;
  const want = tagsOf(record);
  for (const key in want) if ((listed.tags[key] ?? '') !== want[key]) return true;
  return false;
}

export interface JobCheckContext {
  readonly journal: Pick<LeaseStore, 'get'>;
  readonly checker: JobChecker;
  readonly clock: Clock;
  /** A lease's job is asked about at most this often (and not before the lease is this old). */
  readonly intervalMs: number;
  readonly signal: AbortSignal;
}

/**
 * Ask GitLab about the jobs of leases that are due (or marked as orphans), a few at a time, and
 * record each verdict on its instance.
 */
export async function checkLeasedJobs(
  instances: Iterable<InstanceRecord>,
  context: JobCheckContext,
): Promise<void> {
  const now = context.clock.now();
  const due: Array<{ instance: InstanceRecord; entry: LeaseEntry }> = [];
  for (const instance of instances) {
    if (instance.state !== 'leased' || !instance.jobId) continue;
    const entry = context.journal.get(instance.jobId);
    if (!entry?.jobToken) continue;
    const since = instance.jobCheckedAt ?? instance.leasedAt ?? now;
    if (instance.orphanMarkedAt !== undefined || now - since >= context.intervalMs)
      due.push({ instance, entry });
  }
  let next = 0;
  const worker = async () => {
    while (next < due.length && !context.signal.aborted) {
      const item = due[next++];
      if (!item) break;
      const verdict = await context.checker(item.entry.jobToken as string, context.signal);
      // The lease may have ended while we asked; the answer is only about that job.
      if (item.instance.jobId === item.entry.jobId) {
        item.instance.jobVerdict = verdict;
        item.instance.jobCheckedAt = context.clock.now();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(JOB_CHECK_CONCURRENCY, due.length) }, worker));
}

export interface OrphanPlan extends ReapPlan {
  /** What each candidate looked like when the plan was made, for compare-and-set. */
  readonly seen: ReadonlyMap<string, ReapCandidate & { readonly jobId: string | undefined }>;
}

/**
 * Orphan reaping, two phases: a first sighting marks the instance, and only a second sighting at
 * least `recheckAfterMs` later terminates it (after GitLab was asked again, see checkLeasedJobs).
 */
export function planOrphans(
  instances: Iterable<InstanceRecord>,
  now: number,
  policy: ReapPolicy,
): OrphanPlan {
  const candidates: Array<ReapCandidate & { jobId: string | undefined }> = [];
  for (const i of instances) {
    if (i.state !== 'leased' && i.state !== 'booting' && i.state !== 'creating') continue;
    candidates.push({
      id: i.id,
      state: i.state,
      createdAt: i.createdAt,
      ...(i.leasedAt !== undefined ? { leasedAt: i.leasedAt } : {}),
      ...(i.jobVerdict !== undefined ? { verdict: i.jobVerdict } : {}),
      ...(i.orphanMarkedAt !== undefined ? { markedAt: i.orphanMarkedAt } : {}),
      jobId: i.jobId,
    });
  }
  return { ...planReap(candidates, now, policy), seen: new Map(candidates.map((c) => [c.id, c])) };
}
