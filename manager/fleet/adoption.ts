/**
 * Adoption: taking back an instance the fleet did not know (after a daemon restart, or a crash
 * between a launch and its bookkeeping). First whether it is ours at all (provenanceOf: tags
 * anyone can write, so they are not proof), then in what state: the provider's tags and the
 * lease journal say; leases are only in the journal, written before a lease is handed out.
 */
import type { ProviderInstance } from '../providers/provider.js';
import { TAG } from '../providers/tags.js';
import { type InstanceRecord, recordFrom } from './instance.js';
import type { LeaseStore } from './lease-journal.js';
import type { LaunchSigner } from './provenance.js';
import { type InstanceState, isInstanceState } from './states.js';

/** What the fleet does with an adopted instance once it is recorded. */
export type AdoptionNext =
  | { readonly kind: 'await-ready' }
  | { readonly kind: 'idle' }
  /** Leased (the orphan reaper decides about it), or a state that needs nothing now. */
  | { readonly kind: 'keep' }
  /** Terminate it: it was on its way out before the restart. */
  | { readonly kind: 'retire'; readonly reason: string };

export interface Adoption {
  readonly record: InstanceRecord;
  readonly next: AdoptionNext;
  /** The journal had it as being retired. */
  readonly retiring: boolean;
}

/** Rebuild the record of a listed instance from its tags and the lease journal. */
export function adoptionOf(
  listed: ProviderInstance,
  journal: Pick<LeaseStore, 'byInstance' | 'isRetiring' | 'loadProblem'>,
  now: number,
): Adoption {
  const tagState = listed.tags[TAG.state] ?? '';
  const lease = journal.byInstance(listed.id);
  let state: InstanceState = isInstanceState(tagState) ? tagState : 'booting';
  if (lease) state = 'leased';
  // Leases live in the journal, not in tags: if it could not be read, any instance may be
  // running a job. Treat each as leased by an unknown job; the orphan reaper ends them.
  const unknownLease =
    !lease && journal.loadProblem !== undefined && (state === 'booting' || state === 'idle');
  if (unknownLease) state = 'leased';
  const retiring = journal.isRetiring(listed.id);
  const record = recordFrom(listed, state === 'creating' ? 'booting' : state, now);
  record.useCount = Number(listed.tags[TAG.useCount] ?? '0') || 0;
  const marked = Date.parse(listed.tags[TAG.orphanMarkedAt] ?? '');
  if (!Number.isNaN(marked)) record.orphanMarkedAt = marked;
  if (lease) {
    record.jobId = lease.jobId;
    record.leasedAt = Date.parse(lease.leasedAt);
    record.credentialClass = lease.credentialClass;
    record.projectPath = lease.projectPath;
  } else if (unknownLease) {
    record.leasedAt = now;
  } else if (state === 'leased') {
    // Tagged leased but no journal entry: the job may still run. Keep it leased; the orphan
    // reaper decides, never this guess.
    record.jobId = listed.tags[TAG.jobId];
    record.leasedAt = Date.parse(listed.tags[TAG.leasedAt] ?? '') || now;
  }
  let next: AdoptionNext;
  // We had decided to terminate it before the restart: finish that.
  if (retiring && !lease) next = { kind: 'retire', reason: 'was being terminated before the restart' };
  else if (record.state === 'booting') next = { kind: 'await-ready' };
  else if (record.state === 'idle') next = { kind: 'idle' };
  else if (record.state === 'draining' || record.state === 'failed' || record.state === 'terminating')
    next = { kind: 'retire', reason: 'found half-terminated after restart' };
  else next = { kind: 'keep' };
  return { record, next, retiring };
}

/** Whether a listed instance was launched by this manager, and if not, why it is refused. */
export type Provenance =
  | { readonly ours: true; readonly proof: 'launch journal' | 'lease journal' | 'launch token' }
  | { readonly ours: false; readonly why: string };

/** How far an instance's launch time may be from its token's, either way (clock skew, retries). */
export const TOKEN_LAUNCH_WINDOW_MS = 60 * 60_000;

/**
 * The provenance rule. Tags (fleet, manager) only select candidates; what makes an instance ours
 * is evidence a third party cannot write:
 * - this manager's journal in the state directory lists it (launched, leased or being retired);
 * - or the cloud recorded, at launch, a launch token this manager minted (provenance.ts) within
 *   TOKEN_LAUNCH_WINDOW_MS of the instance's launch time (of the end of the token's use, for a
 *   token the provider says was launched under over a span: an asg key window). This covers a
 *   crash between a launch call and the journal write, and instances Auto Scaling launches on
 *   its own from a window (replacements) long after it opened.
 * Anything else is foreign: never adopted, leased, reaped or terminated (see Fleet).
 */
export function provenanceOf(
  listed: ProviderInstance,
  journal: Pick<LeaseStore, 'isLaunched' | 'byInstance' | 'isRetiring'>,
  signer: LaunchSigner,
): Provenance {
  if (journal.isLaunched(listed.id)) return { ours: true, proof: 'launch journal' };
  if (journal.byInstance(listed.id) || journal.isRetiring(listed.id))
    return { ours: true, proof: 'lease journal' };
  const notJournaled = "this manager's launch journal does not list it";
  if (!listed.clientToken)
    return { ours: false, why: `${notJournaled}, and the provider reports no launch token for it` };
  const check = signer.verify(listed.clientToken);
  if (!check.ok) return { ours: false, why: `${notJournaled}, and ${check.why}` };
  // A token used over a span (an asg key window, see ProviderInstance.tokenInUseUntil) covers
  // launches until the span ended: measure from its end, not from the mint alone.
  const launched = listed.launchedAt.getTime();
  const until = Math.max(check.mintedAt, listed.tokenInUseUntil?.getTime() ?? check.mintedAt);
  if (check.mintedAt - launched > TOKEN_LAUNCH_WINDOW_MS || launched - until > TOKEN_LAUNCH_WINDOW_MS) {
    return {
      ours: false,
      why: `${notJournaled}, and its launch token was minted at ${new Date(check.mintedAt).toISOString()} but it was launched at ${listed.launchedAt.toISOString()}`,
    };
  }
  return { ours: true, proof: 'launch token' };
}
