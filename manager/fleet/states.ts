/**
 * The instance life cycle, in taskscaler's words. Every instance the manager owns is in exactly one
 * of these states, and the state is also written to the instance's tags so a restarted daemon can
 * rebuild its view from the provider alone.
 */
export const INSTANCE_STATES = [
  'creating',
  'booting',
  'idle',
  'leased',
  'draining',
  'terminating',
  'terminated',
  'failed',
] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

/** Which moves the state machine allows. Anything else is a bug, and is refused. */
export const ALLOWED_TRANSITIONS: Readonly<Record<InstanceState, readonly InstanceState[]>> = {
  creating: ['booting', 'failed', 'terminating'],
  booting: ['idle', 'leased', 'failed', 'terminating'],
  idle: ['leased', 'draining', 'terminating'],
  leased: ['idle', 'draining', 'terminating'],
  draining: ['terminating'],
  terminating: ['terminated'],
  terminated: [],
  failed: ['terminating'],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return from === to || ALLOWED_TRANSITIONS[from].includes(to);
}

export function isInstanceState(value: string): value is InstanceState {
  return (INSTANCE_STATES as readonly string[]).includes(value);
}
