// One scheduler for every delayed transition (pending → running, shutting-down → terminated,
// retention of terminated instances, Auto Scaling retries). In `real` mode a single timer is armed
// for the earliest event; in `virtual` mode nothing happens until a test calls advance(), which
// makes life-cycle tests exact and fast.

export type ClockMode = 'real' | 'virtual';

interface Scheduled {
  at: number;
  seq: number;
  fn: () => void;
}

// Bounds the work one runDue() may do, so a handler that keeps rescheduling itself at "now"
// cannot spin forever.
const MAX_EVENTS_PER_RUN = 100_000;
const MAX_TIMER_MS = 2 ** 31 - 1;

export class Scheduler {
  readonly mode: ClockMode;
  private virtualNow: number;
  private events: Scheduled[] = [];
  private seq = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Called after each batch of events, so dependants (Auto Scaling) can react to state changes. */
  afterRun: (() => void) | undefined;

  constructor(mode: ClockMode, start = Date.now()) {
    this.mode = mode;
    this.virtualNow = start;
  }

  now(): number {
    return this.mode === 'virtual' ? this.virtualNow : Date.now();
  }

  after(delayMs: number, fn: () => void): void {
    if (this.closed) return;
    this.events.push({ at: this.now() + Math.max(0, delayMs), seq: this.seq++, fn });
    this.arm();
  }

  /** Runs every event that is due, in time order, including ones scheduled by those events. */
  runDue(): void {
    let ran = 0;
    for (;;) {
      if (this.closed) return;
      const now = this.now();
      let best = -1;
      for (let i = 0; i < this.events.length; i++) {
        const e = this.events[i]!;
        if (e.at > now) continue;
        const b = best >= 0 ? this.events[best]! : undefined;
        if (!b || e.at < b.at || (e.at === b.at && e.seq < b.seq)) best = i;
      }
      if (best < 0) break;
      const [event] = this.events.splice(best, 1);
      event!.fn();
      if (++ran >= MAX_EVENTS_PER_RUN)
        throw new Error('aws fake: scheduler runaway (too many events at once)');
    }
    this.afterRun?.();
    this.arm();
  }

  /** Virtual mode: moves time forward in steps so events fire at their own time, in order. */
  advance(ms: number): void {
    if (this.mode !== 'virtual') throw new Error('aws fake: advance() needs clock: "virtual"');
    const target = this.virtualNow + Math.max(0, ms);
    for (let i = 0; i < MAX_EVENTS_PER_RUN; i++) {
      const next = this.events.reduce((m, e) => Math.min(m, e.at), Number.POSITIVE_INFINITY);
      if (next > target) break;
      this.virtualNow = Math.max(this.virtualNow, next);
      this.runDue();
    }
    this.virtualNow = target;
    this.runDue();
  }

  close(): void {
    this.closed = true;
    this.events = [];
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    if (this.mode !== 'real' || this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.events.length === 0) return;
    const next = this.events.reduce((m, e) => Math.min(m, e.at), Number.POSITIVE_INFINITY);
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, next - Date.now()));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runDue();
    }, delay);
    // The HTTP server keeps a process alive when it should be; a forgotten close() must not.
    this.timer.unref();
  }
}
