/**
 * The fleet's record of one instance, and how it maps to and from the provider's tags. Shared by
 * the fleet (which changes records), adoption (which rebuilds them from tags) and reconcile
 * (which compares them with a listing).
 */
import type { ConnectInfo, ProviderInstance } from '../providers/provider.js';
import { TAG } from '../providers/tags.js';
import type { JobVerdict } from './policy.js';
import { DEFAULT_SHAPE } from './shape.js';
import type { InstanceState } from './states.js';

export interface InstanceRecord {
  readonly id: string;
  state: InstanceState;
  /** When it entered its current state (or this daemon first saw it): what "stuck" is measured from. */
  stateSince: number;
  readonly createdAt: number;
  readyAt?: number;
  idleSince?: number;
  jobId?: string;
  leasedAt?: number;
  useCount: number;
  /** The launch settings it was made with (shape.ts): it serves only jobs of the same shape. */
  shape: string;
  /** Credential class and project of the jobs it served: reuse stays within both. */
  credentialClass?: string;
  projectPath?: string;
  detail: Record<string, string>;
  /** When the listing last showed it; instances missing from a listing long enough are gone. */
  lastSeen: number;
  /** How to reach it, asked once when it became ready so that acquiring makes no provider call. */
  connect?: ConnectInfo;
  /** Orphan reaping: when the first phase marked it, and why. */
  orphanMarkedAt?: number;
  orphanReason?: string;
  /** Last GitLab answer about the lease's job, and when it was asked. */
  jobVerdict?: JobVerdict;
  jobCheckedAt?: number;
  /** When its tags were last queued for writing; a listing older than that shows stale tags. */
  tagsWrittenAt?: number;
}

/** A fresh record for a listed or just-launched instance; the creation tag wins over launch time. */
export function recordFrom(listed: ProviderInstance, state: InstanceState, now: number): InstanceRecord {
  const createdTag = Date.parse(listed.tags[TAG.createdAt] ?? '');
  return {
    id: listed.id,
    state,
    stateSince: now,
    createdAt: Number.isNaN(createdTag) ? listed.launchedAt.getTime() : createdTag,
    useCount: 0,
    shape: listed.tags[TAG.launchShape] || DEFAULT_SHAPE,
    detail: { ...(listed.detail ?? {}) },
    lastSeen: now,
  };
}

/** The life-cycle tags the fleet writes; a restart reads them back (see adoption.ts). */
export function tagsOf(instance: InstanceRecord): Record<string, string> {
  return {
    [TAG.state]: instance.state,
    [TAG.jobId]: instance.jobId ?? '',
    [TAG.leasedAt]: instance.leasedAt ? new Date(instance.leasedAt).toISOString() : '',
    [TAG.useCount]: String(instance.useCount),
    [TAG.credentialClass]: instance.credentialClass ?? '',
    [TAG.orphanMarkedAt]: instance.orphanMarkedAt ? new Date(instance.orphanMarkedAt).toISOString() : '',
  };
}

/**
 * Only states a restart must see are kept in tags: a lease, and an idle instance that already
 * served a job (it must not look fresh). booting → idle and → terminating are not, see
 * lease-journal.ts.
 */
export function tagsMatter(instance: InstanceRecord): boolean {
  // Leases live in the journal (lease-journal.ts), not in tags: a used idle instance is what a
  // restart needs from tags (whose jobs it may take).
  return instance.state === 'idle' && instance.useCount > 0;
}
