/**
 * Virtual time for the simulator: timers sit in a heap and `runUntil` jumps from one to the next.
 * After each timer fires, the microtask queue is drained (one macrotask turn) so that every
 * promise chain the timer started (the fleet's awaits on the simulated provider) settles before
 * time moves on, and so does real file I/O those chains started (the AWS provider writes each
 * instance's SSH keys to its state directory): virtual time stands still while a file operation
 * is in flight. Nothing here touches real timers, so a simulated day takes seconds.
 */
import type { Clock } from '../fleet/clock.js';

interface Timer {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly heap: Timer[] = [];
  /** Timers fired so far: a cheap measure of how much happened. */
  fired = 0;

  constructor(start: number) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer: Timer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
    this.push(timer);
    return timer;
  }

  clearTimeout(handle: unknown): void {
    if (handle && typeof handle === 'object' && 'cancelled' in handle) (handle as Timer).cancelled = true;
  }

  /** Fire every timer due up to `until` (and what they schedule in turn), then stand at `until`. */
  async runUntil(until: number, stop?: () => boolean): Promise<void> {
    // What ran before this call may have file I/O in flight; it belongs to the present moment.
    if (fileIoInFlight()) await settle();
    for (;;) {
      const next = this.heap[0];
      if (!next || next.at > until || stop?.()) break;
      this.pop();
      if (next.cancelled) continue;
      this.t = Math.max(this.t, next.at);
      this.fired++;
      next.fn();
      await settle();
    }
    if (!stop?.()) this.t = Math.max(this.t, until);
  }

  get pending(): number {
    return this.heap.length;
  }

  private push(timer: Timer): void {
    const h = this.heap;
    h.push(timer);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i] as Timer, h[parent] as Timer)) break;
      [h[i], h[parent]] = [h[parent] as Timer, h[i] as Timer];
      i = parent;
    }
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (h.length === 0 || !last) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && before(h[l] as Timer, h[m] as Timer)) m = l;
      if (r < h.length && before(h[r] as Timer, h[m] as Timer)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m] as Timer, h[i] as Timer];
      i = m;
    }
  }
}

function before(a: Timer, b: Timer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/**
 * One macrotask turn: every microtask queued so far (and those they queue) runs first; then more
 * turns while file operations are in flight (bounded), so their continuations run too.
 */
export async function settle(): Promise<void> {
  await turn();
  // A few quick turns catch fast operations; then wait in the event loop's poll phase rather than
  // spin, which would take the CPU from the thread pool doing the I/O.
  for (let n = 0; n < MAX_IO_WAITS && fileIoInFlight(); n++) await (n < 4 ? turn() : pause());
}

const MAX_IO_WAITS = 100_000;

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function pause(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 1));
}

function fileIoInFlight(): boolean {
  // FSReq*: a file operation; CloseReq: a FileHandle closing (the last step of readFile).
  for (const r of process.getActiveResourcesInfo())
    if (r.startsWith('FSReq') || r === 'CloseReq') return true;
  return false;
}
