/**
 * Launch tokens this manager can recognise later and nobody else can make.
 *
 * Tags prove nothing about who launched an instance: anyone allowed to tag EC2 instances can
 * write ours. Every launch therefore carries a token minted here, `<time>-<nonce>-<count>-<mac>`,
 * where the MAC (HMAC-SHA256 under a key kept only in the state directory) covers the time, the
 * nonce, the instance count and this manager's identity. A provider uses it as the cloud's
 * idempotency token (EC2 `ClientToken`): `token` itself for one instance, `token-<i>` (i < count)
 * for several, each with `-f<attempt>` when a capacity failover retried it in another pool (a
 * copied token gains a forger no more than an unused `-<i>` would). The cloud records that token at launch and never lets anyone change it, so an
 * instance that shows a valid one came from a launch this manager made (see adoption.ts for the
 * whole rule, which also accepts the fleet's own launch journal).
 *
 * A copied token is no use to a third party: the cloud refuses a second launch with a token it
 * has seen (EC2: the original instance comes back, or IdempotentParameterMismatch), and the MAC
 * covers the launch time, so an instance launched long after its token was minted is refused.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** The key's file in the state directory. */
export const LAUNCH_KEY_FILE = 'launch-key';
const KEY_BYTES = 32;
const MAC_HEX = 24;
// Optional `-<index>` (one of several instances), then optional `-f<attempt>`: a capacity failover
// retries the launch in another pool under a token of its own, derived from the signed one.
const TOKEN =
  /^([0-9a-z]{1,11})-([0-9a-f]{8})-([1-9][0-9]{0,3})-([0-9a-f]{24})(?:-([0-9]{1,4}))?(?:-f[1-9][0-9]?)?$/;

export type TokenCheck =
  | { readonly ok: true; readonly mintedAt: number }
  | { readonly ok: false; readonly why: string };

export class LaunchSigner {
  /**
   * @param key this manager's secret
   * @param scope what the MAC binds besides the token (fleet and manager id), so a token of
   *   another manager sharing the key file is still not ours
   */
  constructor(
    private readonly key: Buffer,
    private readonly scope: string,
  ) {
    if (key.length < 16) throw new Error('launch key is too short');
  }

  /** A key that lives only in memory: for the simulator and tests that never restart. */
  static ephemeral(scope: string): LaunchSigner {
    return new LaunchSigner(randomBytes(KEY_BYTES), scope);
  }

  /** A token for a launch of `count` instances at `now` (ms). At most 45 characters. */
  mint(count: number, now: number): string {
    const n = Math.min(Math.max(1, Math.floor(count)), 9999);
    const body = `${Math.floor(now).toString(36)}-${randomBytes(4).toString('hex')}-${n}`;
    return `${body}-${this.mac(body)}`;
  }

  /**
   * Whether an instance's idempotency token is one this manager minted, exactly as a provider
   * derives it (`token`, or `token-<i>` with i < count), and when.
   */
  verify(clientToken: string): TokenCheck {
    const m = TOKEN.exec(clientToken);
    if (!m) return { ok: false, why: 'its launch token is not one runner-fleet makes' };
    const [, time, nonce, countText, mac, index] = m as unknown as [
      string,
      string,
      string,
      string,
      string,
      string?,
    ];
    const body = `${time}-${nonce}-${countText}`;
    const want = Buffer.from(this.mac(body), 'hex');
    if (!timingSafeEqual(want, Buffer.from(mac, 'hex')))
      return { ok: false, why: "its launch token was not made with this manager's launch key" };
    const count = Number(countText);
    if (count === 1 ? index !== undefined : index === undefined || Number(index) >= count)
      return { ok: false, why: 'its launch token is a valid token with a suffix this manager never uses' };
    return { ok: true, mintedAt: Number.parseInt(time, 36) };
  }

  private mac(body: string): string {
    return createHmac('sha256', this.key).update(`${this.scope}\n${body}`).digest('hex').slice(0, MAC_HEX);
  }
}

/**
 * This manager's launch key, created on first start (0600) and kept across restarts: instances
 * launched before a restart must still prove themselves after it. Refuses a key file others can
 * read, since with it anyone could mint tokens.
 */
export function loadLaunchKey(stateDir: string): Buffer {
  const path = join(stateDir, LAUNCH_KEY_FILE);
  try {
    const fd = openSync(path, 'wx', 0o600);
    try {
      writeSync(fd, randomBytes(KEY_BYTES).toString('hex'));
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `${path} has mode ${mode.toString(8)}: the launch key must be readable by the daemon's user only (chmod 600 ${path})`,
    );
  }
  const key = Buffer.from(readFileSync(path, 'utf8').trim(), 'hex');
  if (key.length !== KEY_BYTES)
    throw new Error(`${path} is not a runner-fleet launch key (expected ${KEY_BYTES * 2} hex digits)`);
  return key;
}
