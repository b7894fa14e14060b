/**
 * A token bucket for launch calls: bursts up to `burst`, refilled at `ratePerSecond`. A launch
 * that would wait longer than `maxWaitMs` is refused instead, so a stuck bucket turns into a
 * launch failure the fleet retries rather than an unbounded wait.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly ratePerSecond: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Takes one token, waiting for it if needed; false when the wait would exceed `maxWaitMs`. */
  async take(maxWaitMs: number): Promise<boolean> {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    const waitMs = Math.ceil(((1 - this.tokens) / this.ratePerSecond) * 1000);
    if (waitMs > maxWaitMs) return false;
    // Reserve the token now so concurrent callers queue behind each other instead of all waking.
    this.tokens -= 1;
    await this.sleep(waitMs);
    return true;
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerSecond);
    this.last = now;
  }
}
