import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  CENSOR,
  isSecretKey,
  loggerRedaction,
  redactValue,
  scrubSecrets,
  withRedaction,
} from '../../manager/log-redact.js';

/** A pino logger with the root redaction, writing into memory. */
function memoryLogger() {
  const lines: string[] = [];
  const log = pino({ level: 'trace', ...loggerRedaction }, { write: (chunk: string) => lines.push(chunk) });
  return { log, output: () => lines.join('') };
}

const sentinel = (name: string) => `SENTINEL_${name}_${Math.random().toString(36).slice(2, 10)}`;

// Secret-shaped values that are caught by shape even where no key names them.
const JWT = `eyJhbGciOiJSUzI1NiIsImtpZCI6ImtpZC0xIn0.${Buffer.from('{"job_id":"456"}').toString('base64url')}.c2lnbmF0dXJlLWJ5dGVz`;
const RUNNER_TOKEN = 'glrt-t1_AbCdEfGhIjKlMnOpQrSt';
const JOB_TOKEN = 'glcbt-64_abcdefghijklmnopqrstu';
const PEM =
  '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n-----END OPENSSH PRIVATE KEY-----';

describe('root logger redaction', () => {
  it('no planted secret reaches the output', () => {
    const { log, output } = memoryLogger();
    const s = {
      token: sentinel('token'),
      idToken: sentinel('idToken'),
      nestedToken: sentinel('nestedToken'),
      variable: sentinel('variable'),
      env: sentinel('env'),
      privateKey: sentinel('privateKey'),
      deepKey: sentinel('deepKey'),
      authorization: sentinel('authorization'),
      reqAuth: sentinel('reqAuth'),
      customEnv: sentinel('customEnv'),
      binding: sentinel('binding'),
      errProp: sentinel('errProp'),
      password: sentinel('password'),
      runnerToken: sentinel('runnerToken'),
      jobResponse: sentinel('jobResponse'),
    };

    log.info({ token: s.token, idToken: s.idToken }, 'top level');
    log.info({ job: { id: 456, idToken: s.nestedToken, token: s.nestedToken } }, 'one level');
    log.info({ job: { variables: [{ key: 'AWS_SECRET', value: s.variable, masked: true }] } }, 'variables');
    log.info({ hook: { env: { CUSTOM_ENV_DEPLOY_KEY: s.env } } }, 'env');
    log.info({ instance: { ssh: { privateKey: s.privateKey } } }, 'two levels');
    log.info({ a: { b: { c: { d: { privateKey: s.deepKey } } } } }, 'four levels');
    log.info({ headers: { authorization: `Bearer ${s.authorization}` } }, 'headers');
    log.info({ req: { headers: { authorization: s.reqAuth, 'private-token': s.reqAuth } } }, 'request');
    log.info({ CUSTOM_ENV_SECRET: s.customEnv, ci: { CI_JOB_TOKEN: s.customEnv } }, 'custom env');
    log.info({ config: { runnerToken: s.runnerToken, db: { password: s.password } } }, 'config');
    log.info(
      { jobResponse: { token: s.jobResponse, variables: [{ value: s.jobResponse }] } },
      'job response',
    );
    log.child({ job: { token: s.binding }, idToken: s.binding }).info('child bindings');

    const err = Object.assign(new Error(`prepare failed for token ${JWT}`), {
      token: s.errProp,
      jobId: '456',
    });
    log.error({ err }, 'error object');
    log.error(err);
    log.error(new Error('wrapped', { cause: new Error(`ssh said ${PEM}`) }), 'with cause');

    log.warn(`message with ${JWT} and ${RUNNER_TOKEN}`);
    log.warn('format args %s %s %s', JWT, JOB_TOKEN, RUNNER_TOKEN);
    log.warn({ stderr: `line 1\n${PEM}\nline 3` }, 'stderr tail');
    log.info({ launchToken: 'launch-abc-123', tokenVariable: 'RUNNER_FLEET_ID_TOKEN' }, 'not secrets');

    const text = output();
    for (const [name, value] of Object.entries(s)) expect(text, `${name} leaked`).not.toContain(value);
    for (const value of [
      JWT,
      RUNNER_TOKEN,
      JOB_TOKEN,
      'b3BlbnNzaC1rZXktdjEAAAAABG5vbmU',
      'c2lnbmF0dXJlLWJ5dGVz',
    ]) {
      expect(text).not.toContain(value);
    }
    expect(text).toContain(CENSOR);
    // Useful, non-secret context survives.
    expect(text).toContain('launch-abc-123');
    expect(text).toContain('RUNNER_FLEET_ID_TOKEN');
    expect(text).toContain('"jobId":"456"');
    expect(text).toContain('prepare failed for token');
  });

  it('withRedaction keeps existing options (level formatter, own paths, own hook) and adds ours', () => {
    const lines: string[] = [];
    const seen: string[] = [];
    const log = pino(
      withRedaction({
        level: 'info',
        timestamp: pino.stdTimeFunctions.isoTime,
        formatters: { level: (label: string) => ({ level: label }) },
        redact: { paths: ['custom.field'], censor: 'x' },
        hooks: {
          logMethod(args, method) {
            seen.push(String(args.at(-1)));
            method.apply(this, args);
          },
        },
      }),
      { write: (chunk: string) => lines.push(chunk) },
    );
    const secret = sentinel('merged');
    log.info({ custom: { field: secret }, deep: { a: { b: { idToken: secret } } } }, `jwt ${JWT}`);
    const text = lines.join('');
    expect(text).not.toContain(secret);
    expect(text).not.toContain(JWT);
    expect(text).toContain('"level":"info"');
    expect(seen).toHaveLength(1);
  });

  it('does not mutate the logged object', () => {
    const { log } = memoryLogger();
    const job = { token: 'keep-me-in-memory', nested: { idToken: 'also-me' } };
    log.info({ job }, 'x');
    expect(job).toEqual({ token: 'keep-me-in-memory', nested: { idToken: 'also-me' } });
  });

  it('survives circular and deep objects', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a['self'] = a;
    expect(redactValue(a)).toEqual({ name: 'a', self: '[circular]' });
    let deep: Record<string, unknown> = { token: 'x' };
    for (let i = 0; i < 30; i += 1) deep = { next: deep };
    expect(JSON.stringify(redactValue(deep))).not.toContain('"x"');
  });
});

describe('scrubSecrets', () => {
  it('removes known values, longest first, and their JSON-escaped form', () => {
    const secret = 'p@ss"word\\with-quote';
    const text = `failed: ${secret} / ${JSON.stringify({ v: secret })} / abcd`;
    const out = scrubSecrets(text, [secret, 'abc', 'abcd']);
    expect(out).not.toContain('p@ss');
    expect(out).not.toContain('abcd');
    expect(out).toContain('failed: [redacted]');
  });

  it('ignores values too short to be secrets and regex metacharacters are literal', () => {
    expect(scrubSecrets('on and on', ['on'])).toBe('on and on');
    expect(scrubSecrets('a.*b and aXXb', ['a.*b'])).toBe('[redacted] and aXXb');
  });

  it('removes secret-shaped strings without being told', () => {
    const out = scrubSecrets(`jwt=${JWT} runner=${RUNNER_TOKEN} key=${PEM} aws=AKIAABCDEFGHIJKLMNOP`);
    expect(out).toBe('jwt=[redacted] runner=[redacted] key=[redacted] aws=[redacted]');
  });

  it('classifies keys', () => {
    for (const key of [
      'token',
      'idToken',
      'id_token',
      'CI_JOB_TOKEN',
      'variables',
      'privateKey',
      'CUSTOM_ENV_X',
    ]) {
      expect(isSecretKey(key), key).toBe(true);
    }
    for (const key of ['launchToken', 'tokenVariable', 'jobId', 'instanceId', 'identityFile']) {
      expect(isSecretKey(key), key).toBe(false);
    }
  });
});
