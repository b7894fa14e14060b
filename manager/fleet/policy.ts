/**
 * Scaling decisions as pure functions of a snapshot and the clock (no I/O, no mocks needed to
 * test them). The fleet gathers the snapshot, calls `planScale`, and applies the plan.
 */
import type { InstanceState } from './states.js';

export interface PolicyInstance {
  readonly id: string;
  readonly state: InstanceState;
  readonly createdAt: number;
  /** When it last became idle (ms epoch), for idle instances. */
  readonly idleSince?: number;
  readonly useCount: number;
  /** Fresh instances (never leased) can serve any credential class. */
  readonly fresh: boolean;
}

export interface PoolPolicy {
  /** Idle job slots to keep warm. */
  readonly idleCount: number;
  /** How long an instance above idleCount may stay idle before it is scaled in. */
  readonly idleTimeMs: number;
  readonly maxInstances: number;
  readonly maxInstanceLifetimeMs: number;
}

export interface PoolSnapshot {
  readonly now: number;
  readonly instances: readonly PolicyInstance[];
  /** Jobs waiting that no idle instance could serve. */
  readonly waiting: number;
  /** Instances asked for whose launch call has not returned yet. */
  readonly launching: number;
  /** While draining, nothing new is launched and idle instances go. */
  readonly draining: boolean;
}

export interface ScalePlan {
  readonly launch: number;
  /** Idle instances to remove, by name (never a leased one). */
  readonly scaleIn: readonly string[];
  /** The figures the decision was made from, for the one log line per decision. */
  readonly inputs: Readonly<Record<string, number | boolean>>;
}

const ACTIVE: ReadonlySet<InstanceState> = new Set(['creating', 'booting', 'idle', 'leased']);

export function planScale(snapshot: PoolSnapshot, policy: PoolPolicy): ScalePlan {
  const active = snapshot.instances.filter((i) => ACTIVE.has(i.state));
  const idle = active.filter((i) => i.state === 'idle');
  const booting = active.filter((i) => i.state === 'creating' || i.state === 'booting');
  const leased = active.filter((i) => i.state === 'leased');
  const idleTarget = snapshot.draining ? 0 : policy.idleCount;

  // Instances on their way serve waiting jobs first; the warm pool comes on top.
  const coming = booting.length + snapshot.launching;
  const spareComing = Math.max(0, coming - snapshot.waiting);
  const uncoveredWaiting = Math.max(0, snapshot.waiting - coming);
  const freshIdle = idle.filter((i) => i.fresh).length;
  const idleShortfall = Math.max(0, idleTarget - freshIdle - spareComing);
  const headroom = Math.max(0, policy.maxInstances - active.length - snapshot.launching);
  const launch = snapshot.draining ? 0 : Math.min(headroom, uncoveredWaiting + idleShortfall);

  const scaleIn: string[] = [];
  // Worn-out instances go whatever the pool needs: the dead-man switch would end them anyway.
  for (const instance of idle) {
    if (snapshot.now - instance.createdAt >= policy.maxInstanceLifetimeMs) scaleIn.push(instance.id);
  }
  if (snapshot.waiting === 0) {
    // Keep the idleTarget most recently idle; let the longest-idle go once past idle_time.
    const candidates = idle
      .filter((i) => !scaleIn.includes(i.id))
      .sort((a, b) => (b.idleSince ?? 0) - (a.idleSince ?? 0));
    for (const instance of candidates.slice(idleTarget)) {
      const idleFor = snapshot.now - (instance.idleSince ?? snapshot.now);
      if (snapshot.draining || idleFor >= policy.idleTimeMs) scaleIn.push(instance.id);
    }
  }
  return {
    launch,
    scaleIn,
    inputs: {
      instances: active.length,
      max: policy.maxInstances,
      leased: leased.length,
      idle: idle.length,
      booting: booting.length,
      launching: snapshot.launching,
      waiting: snapshot.waiting,
      idle_count: idleTarget,
      draining: snapshot.draining,
    },
  };
}
