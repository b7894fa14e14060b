/**
 * Keeping secrets out of logs, configured once at the root logger:
 *
 *   const log = pino({ level, ...loggerRedaction });
 *
 * Three layers, because each one alone has gaps:
 * 1. `redact.paths`: pino's fast path censoring for the known shapes, up to three levels deep
 *    (pino's wildcards do not recurse), including child-logger bindings.
 * 2. `formatters.log` + the `err` serializer: a recursive walk that censors any key that names a
 *    secret (token, idToken, variables, env, privateKey, authorization, CUSTOM_ENV_*, …) at any
 *    depth, and scrubs secret-shaped strings (JWTs, PEM private keys, GitLab tokens) in any value.
 * 3. `hooks.logMethod`: the same pattern scrub for the message string and its format arguments.
 *
 * None of this can recognise an arbitrary secret value by itself (a job variable holding a
 * password looks like any string), so code that builds error texts from job input uses
 * `scrubSecrets(text, knownSecrets)` with the values it knows to be secret.
 */
import type { LoggerOptions } from 'pino';

export const CENSOR = '[redacted]';

/** Keys whose values are secret wherever they appear (compared case-insensitively, ignoring `_`/`-`). */
const SECRET_KEYS = [
  'token',
  'idToken',
  'jobToken',
  'runnerToken',
  'registrationToken',
  'accessToken',
  'sessionToken',
  'refreshToken',
  'jwt',
  'variables',
  'env',
  'jobEnv',
  'privateKey',
  'identity',
  'authorization',
  'cookie',
  'password',
  'passphrase',
  'secret',
  'secretAccessKey',
  'userData',
] as const;

/** Keys that end like a secret but are not one, and are worth seeing in logs. */
const NOT_SECRET = new Set(['launchtoken', 'clienttoken', 'tokenvariable']);

function normalise(key: string): string {
  return key.toLowerCase().replace(/[-_]/g, '');
}

const SECRET_SET = new Set(SECRET_KEYS.map(normalise));

/** Whether a log field with this key must be censored. */
export function isSecretKey(key: string): boolean {
  const k = normalise(key);
  if (NOT_SECRET.has(k)) return false;
  return (
    SECRET_SET.has(k) ||
    k.startsWith('customenv') ||
    k.endsWith('token') ||
    k.endsWith('secret') ||
    k.endsWith('password') ||
    k.endsWith('privatekey')
  );
}

/** pino redact paths: every secret key at the top level and one and two levels down. */
export const REDACT_PATHS: readonly string[] = [
  ...SECRET_KEYS.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
  'headers.authorization',
  'headers.cookie',
  '*.headers.authorization',
  '*.headers.cookie',
  '*.headers["private-token"]',
  '*.headers["job-token"]',
  'CI_JOB_TOKEN',
  '*.CI_JOB_TOKEN',
];

/** Secret-shaped strings, scrubbed from every string even when nobody told us the value. */
const SECRET_PATTERNS: readonly RegExp[] = [
  // JWS compact serialisation (ID tokens, CI_JOB_JWT): header.payload.signature, base64url, header starts "{".
  /eyJ[\w-]{2,}\.[\w-]*\.[\w-]*/g,
  // PEM and OpenSSH private keys, whole block (or to the end of the text if cut off).
  /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g,
  // GitLab tokens with their documented prefixes (runner, job, personal/project/group, deploy, …).
  /\b(?:glrt|glcbt|glpat|gldt|glptt|glft|glimt|glagent|glsoat|gloas|glrtr|GR1348941)-?[\w-]{10,}/g,
  // AWS temporary credentials: secret keys have no shape, session tokens and key ids do.
  /\b(?:ASIA|AKIA)[A-Z0-9]{16}\b/g,
];

/** Secrets shorter than this are not scrubbed: replacing "1" or "on" everywhere helps nobody. */
const MIN_SECRET_LENGTH = 4;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Remove known secret values and secret-shaped strings from a text (error messages, stderr tails)
 * before it is logged or shown in a job log. Longest secrets first, so a secret containing another
 * is removed whole.
 */
export function scrubSecrets(text: string, secrets: readonly string[] = []): string {
  let out = text;
  const known = [...new Set(secrets)]
    .filter((s) => s.length >= MIN_SECRET_LENGTH)
    .sort((a, b) => b.length - a.length);
  for (const secret of known) {
    out = out.replace(new RegExp(escapeRegExp(secret), 'g'), CENSOR);
    // A value may also appear with quoting escaped (JSON) or in one of its lines only.
    const json = JSON.stringify(secret).slice(1, -1);
    if (json !== secret) out = out.split(json).join(CENSOR);
  }
  for (const pattern of SECRET_PATTERNS) out = out.replace(pattern, CENSOR);
  return out;
}

/** Recursively censor secret keys and scrub strings. Bounded in depth; never mutates its input. */
export function redactValue(value: unknown, depth = 0, seen: WeakSet<object> = new WeakSet()): unknown {
  if (typeof value === 'string') return scrubSecrets(value);
  if (value === null || typeof value !== 'object') return value;
  if (depth > 12) return '[too deep]';
  if (seen.has(value)) return '[circular]';
  seen.add(value);
  if (Array.isArray(value)) return value.map((item) => redactValue(item, depth + 1, seen));
  if (value instanceof Error) return redactError(value);
  // Buffers, dates and the like serialise themselves; a Buffer could hold a key, so drop it.
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return '[binary]';
  if (value instanceof Date) return value;
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    out[key] = isSecretKey(key) ? CENSOR : redactValue(item, depth + 1, seen);
  }
  return out;
}

/** Error → plain object (like pino's std serializer), with message, stack and own fields scrubbed. */
export function redactError(error: unknown): unknown {
  if (!(error instanceof Error)) return redactValue(error);
  const out: Record<string, unknown> = {
    type: error.constructor?.name ?? 'Error',
    message: scrubSecrets(error.message),
    stack: error.stack === undefined ? undefined : scrubSecrets(error.stack),
  };
  for (const [key, item] of Object.entries(error)) {
    if (key === 'message' || key === 'stack') continue;
    out[key] = isSecretKey(key) ? CENSOR : redactValue(item, 1);
  }
  if (error.cause !== undefined) out['cause'] = redactError(error.cause);
  return out;
}

/** Spread into the root pino options. */
export const loggerRedaction = {
  redact: { paths: [...REDACT_PATHS], censor: CENSOR },
  serializers: { err: redactError, error: redactError },
  formatters: {
    log: (object: Record<string, unknown>) => redactValue(object) as Record<string, unknown>,
  },
  hooks: {
    logMethod(args, method) {
      let input: unknown[] = args;
      // `log.error(err)` makes pino use err.message as the message, past every other layer: turn
      // it into the `{ err }, message` form so the message is scrubbed like any other.
      const [first, ...rest] = args as unknown[];
      if (first instanceof Error) {
        input =
          typeof rest[0] === 'string' ? [{ err: first }, ...rest] : [{ err: first }, first.message, ...rest];
      }
      method.apply(
        this,
        input.map((arg) => (typeof arg === 'string' ? scrubSecrets(arg) : arg)) as Parameters<typeof method>,
      );
    },
  },
} satisfies LoggerOptions;

/**
 * Merge the redaction into existing root-logger options (keeps their formatters, serializers and
 * redact paths, adds ours): `pino(withRedaction({ level, formatters: { level: … } }), dest)`.
 */
export function withRedaction<T extends LoggerOptions>(options: T): T & typeof loggerRedaction {
  const existing = options.redact;
  const paths = Array.isArray(existing) ? existing : (existing?.paths ?? []);
  const ownLog = options.formatters?.log;
  const ownLogMethod = options.hooks?.logMethod;
  return {
    ...options,
    redact: { paths: [...new Set([...paths, ...REDACT_PATHS])], censor: CENSOR },
    serializers: { ...options.serializers, ...loggerRedaction.serializers },
    formatters: {
      ...options.formatters,
      // Theirs first, ours last: whatever their formatter adds is redacted too.
      log: (object: Record<string, unknown>) =>
        loggerRedaction.formatters.log(ownLog ? ownLog(object) : object),
    },
    hooks: {
      ...options.hooks,
      logMethod(args, method, level) {
        const next = ownLogMethod
          ? (function (this: unknown, ...inner: Parameters<typeof method>) {
              ownLogMethod.call(this as never, inner, method, level);
            } as typeof method)
          : method;
        loggerRedaction.hooks.logMethod.call(this, args, next);
      },
    },
  } as T & typeof loggerRedaction;
}
