import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createIdTokenVerifier,
  type ExpectedJob,
  type IdTokenVerifier,
  idTokenFromEnv,
} from '../../manager/credentials/verify.js';
import {
  AUDIENCE,
  gitlabClaims,
  hmacWithPublicKey,
  type JwksServer,
  makeKey,
  type SigningKey,
  signToken,
  startJwksServer,
  tamperPayload,
  unsignedToken,
} from './harness.js';

const JOB = { jobId: '456', projectPath: 'platform/api' };

let key1: SigningKey;
let key2: SigningKey;
let stranger: SigningKey;
let server: JwksServer;

beforeAll(async () => {
  [key1, key2, stranger] = await Promise.all([makeKey('kid-1'), makeKey('kid-2'), makeKey('kid-1')]);
  server = await startJwksServer([key1]);
});
afterAll(async () => {
  await server.close();
});
afterEach(() => {
  server.mode = 'serve';
  server.keys = [key1];
});

function verifier(overrides: Partial<Parameters<typeof createIdTokenVerifier>[0]> = {}): IdTokenVerifier {
  return createIdTokenVerifier({
    gitlabUrl: server.url,
    audience: AUDIENCE,
    clockSkewSeconds: 30,
    jwksTimeoutMs: 500,
    cacheTtlMs: 600_000,
    ...overrides,
  });
}

async function expectRefused(token: string, reason: string | RegExp, v = verifier(), job: ExpectedJob = JOB) {
  const result = await v.verify(token, job);
  expect(result.ok).toBe(false);
  if (result.ok) return;
  if (typeof reason === 'string') expect(result.reason).toContain(reason);
  else expect(result.reason).toMatch(reason);
  // Reasons never echo the token or any part of it.
  for (const part of token.split('.').filter((p) => p.length > 8)) expect(result.reason).not.toContain(part);
  return result;
}

describe('ID token verification against a JWKS on 127.0.0.1', () => {
  it('accepts a valid GitLab token and returns its claims', async () => {
    const token = await signToken(key1, gitlabClaims(server.url));
    const result = await verifier().verify(token, JOB);
    expect(result).toEqual({
      ok: true,
      claims: expect.objectContaining({
        jobId: '456',
        projectPath: 'platform/api',
        jobProjectPath: 'platform/api',
        ref: 'main',
        refProtected: 'true',
        environment: 'production',
        environmentProtected: 'true',
        pipelineSource: 'push',
        userLogin: 'alice',
      }),
    });
  });

  it('accepts an audience array that contains ours and a numeric job_id', async () => {
    const token = await signToken(key1, gitlabClaims(server.url, { aud: ['vault', AUDIENCE], job_id: 456 }));
    expect((await verifier().verify(token, JOB)).ok).toBe(true);
  });

  it('refuses a token signed by another key with the same kid', async () => {
    await expectRefused(await signToken(stranger, gitlabClaims(server.url)), 'signature does not verify');
  });

  it('refuses a token whose claims were edited after signing', async () => {
    const token = await signToken(key1, gitlabClaims(server.url, { ref: 'feature', ref_protected: 'false' }));
    const forged = tamperPayload(token, (c) => ({ ...c, ref: 'main', ref_protected: 'true' }));
    await expectRefused(forged, 'signature does not verify');
  });

  it('refuses an expired token (beyond the clock skew)', async () => {
    await expectRefused(
      await signToken(key1, gitlabClaims(server.url), { expOffset: -60, iatOffset: -400 }),
      'expired',
    );
  });

  it('tolerates clock skew within the configured bound', async () => {
    const token = await signToken(key1, gitlabClaims(server.url), { expOffset: -10, iatOffset: -300 });
    expect((await verifier().verify(token, JOB)).ok).toBe(true);
  });

  it('refuses a token that is not yet valid', async () => {
    await expectRefused(await signToken(key1, gitlabClaims(server.url), { nbfOffset: 120 }), 'not yet valid');
  });

  it('refuses the wrong audience', async () => {
    await expectRefused(await signToken(key1, gitlabClaims(server.url, { aud: 'vault' })), 'wrong audience');
  });

  it('refuses the wrong issuer', async () => {
    const token = await signToken(key1, gitlabClaims('https://gitlab.evil.example'));
    await expectRefused(token, 'wrong issuer');
  });

  it('refuses a token of another job, and of another project', async () => {
    const other = await signToken(key1, gitlabClaims(server.url, { job_id: '123' }));
    await expectRefused(other, 'token belongs to job 123, not 456');
    const foreign = await signToken(
      key1,
      gitlabClaims(server.url, { project_path: 'attacker/api', job_project_path: 'attacker/api' }),
    );
    await expectRefused(foreign, 'token belongs to project attacker/api, not platform/api');
  });

  it('checks the project id when the caller knows it (JOB_RESPONSE_FILE job_info.project_id)', async () => {
    const token = await signToken(key1, gitlabClaims(server.url));
    expect((await verifier().verify(token, { ...JOB, projectId: '20' })).ok).toBe(true);
    await expectRefused(token, 'token belongs to project id 20, not 21', verifier(), {
      ...JOB,
      projectId: '21',
    });
  });

  it('uses project_path when the GitLab is too old for job_project_path', async () => {
    const token = await signToken(key1, gitlabClaims(server.url, { job_project_path: undefined }));
    expect((await verifier().verify(token, JOB)).ok).toBe(true);
  });

  it('refuses alg none', async () => {
    await expectRefused(unsignedToken(gitlabClaims(server.url)), 'algorithm none not allowed');
  });

  it('refuses HS256 signed with the public key as the secret', async () => {
    await expectRefused(
      await hmacWithPublicKey(key1, gitlabClaims(server.url)),
      'algorithm HS256 not allowed',
    );
  });

  it('refuses garbage, empty and oversized tokens without throwing', async () => {
    const v = verifier();
    await expectRefused('not-a-jwt', 'malformed token', v);
    await expectRefused('a.b.c', 'malformed token', v);
    expect(await v.verify('', JOB)).toEqual({ ok: false, reason: 'no ID token' });
    expect(await v.verify(undefined, JOB)).toEqual({ ok: false, reason: 'no ID token' });
    expect(await v.verify('x'.repeat(20_000), JOB)).toEqual({ ok: false, reason: 'token too large' });
    // Shapes a buggy or hostile socket client could send.
    expect((await v.verify(42 as unknown as string, JOB)).ok).toBe(false);
    const token = await signToken(key1, gitlabClaims(server.url));
    expect((await v.verify(token, {} as unknown as typeof JOB)).ok).toBe(false);
  });

  it('refuses an unknown kid, then picks up the rotated key once GitLab serves it', async () => {
    const v = verifier({ cooldownMs: 200 });
    // Warm the cache with key 1.
    expect((await v.verify(await signToken(key1, gitlabClaims(server.url)), JOB)).ok).toBe(true);
    const rotated = await signToken(key2, gitlabClaims(server.url));
    await expectRefused(rotated, 'signing key kid kid-2 not in the GitLab JWKS', v);

    server.keys = [key1, key2];
    await new Promise((resolve) => setTimeout(resolve, 250)); // past the refetch cooldown
    const before = server.hits();
    expect((await v.verify(rotated, JOB)).ok).toBe(true);
    expect(server.hits()).toBe(before + 1); // the unknown kid triggered exactly one refetch
    // The old key keeps working while GitLab still publishes it.
    expect((await v.verify(await signToken(key1, gitlabClaims(server.url)), JOB)).ok).toBe(true);
  });

  it('does not refetch for every made-up kid during the cooldown', async () => {
    const v = verifier({ cooldownMs: 60_000 });
    expect((await v.verify(await signToken(key1, gitlabClaims(server.url)), JOB)).ok).toBe(true);
    const before = server.hits();
    for (let i = 0; i < 5; i += 1) {
      await expectRefused(
        await signToken(key2, gitlabClaims(server.url), { kid: `made-up-${i}` }),
        'not in the GitLab JWKS',
        v,
      );
    }
    expect(server.hits()).toBe(before);
  });

  it('caches keys: many verifications, one fetch', async () => {
    const v = verifier();
    const before = server.hits();
    const token = await signToken(key1, gitlabClaims(server.url));
    const results = await Promise.all(Array.from({ length: 10 }, () => v.verify(token, JOB)));
    expect(results.every((r) => r.ok)).toBe(true);
    expect(server.hits()).toBe(before + 1);
  });

  it('JWKS down: clear, transient reason, no throw', async () => {
    server.mode = 'down';
    const result = await expectRefused(
      await signToken(key1, gitlabClaims(server.url)),
      /^JWKS unreachable: /,
    );
    expect(result?.transient).toBe(true);
  });

  it('JWKS on a closed port: clear reason', async () => {
    // A port that was free a moment ago: nothing listens there now.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const url = `http://127.0.0.1:${port}`;
    const v = createIdTokenVerifier({
      gitlabUrl: url,
      audience: AUDIENCE,
      clockSkewSeconds: 30,
      jwksTimeoutMs: 500,
      cacheTtlMs: 600_000,
    });
    const result = await expectRefused(await signToken(key1, gitlabClaims(url)), /^JWKS unreachable: /, v);
    expect(result?.reason).toBe('JWKS unreachable: ECONNREFUSED');
  });

  it('JWKS hanging: refused within the timeout', async () => {
    server.mode = 'hang';
    const started = Date.now();
    const result = await expectRefused(
      await signToken(key1, gitlabClaims(server.url)),
      'JWKS unreachable: timeout after 500ms',
    );
    // It waited for the timeout (the message names it), and no less.
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
    expect(result?.transient).toBe(true);
  });

  it('JWKS answering garbage or 500: clear reason', async () => {
    server.mode = 'garbage';
    await expectRefused(await signToken(key1, gitlabClaims(server.url)), /^JWKS unusable/);
    server.mode = 'error500';
    await expectRefused(
      await signToken(key1, gitlabClaims(server.url)),
      'JWKS unreachable: HTTP status other than 200',
    );
  });

  it('recovers once the JWKS is back', async () => {
    const v = verifier();
    const token = await signToken(key1, gitlabClaims(server.url));
    server.mode = 'down';
    expect((await v.verify(token, JOB)).ok).toBe(false);
    server.mode = 'serve';
    expect((await v.verify(token, JOB)).ok).toBe(true);
  });
});

describe('idTokenFromEnv', () => {
  it('reads CUSTOM_ENV_<variable> and nothing else', () => {
    expect(idTokenFromEnv({ CUSTOM_ENV_RUNNER_FLEET_ID_TOKEN: ' abc ' }, 'RUNNER_FLEET_ID_TOKEN')).toBe(
      'abc',
    );
    expect(idTokenFromEnv({ RUNNER_FLEET_ID_TOKEN: 'abc' }, 'RUNNER_FLEET_ID_TOKEN')).toBeUndefined();
    expect(idTokenFromEnv({ CUSTOM_ENV_RUNNER_FLEET_ID_TOKEN: '' }, 'RUNNER_FLEET_ID_TOKEN')).toBeUndefined();
  });
});

describe('GitLab offerings as token issuer', () => {
  // Each offering signs with its own key and serves it at <gitlab_url>/oauth/discovery/keys.
  const offerings = [
    ['GitLab.com', 'https://gitlab.com', 'https://gitlab.com/oauth/discovery/keys'],
    ['Self-Managed', 'https://gitlab.example.com', 'https://gitlab.example.com/oauth/discovery/keys'],
    [
      'Self-Managed with a relative URL root',
      'https://example.com/gitlab',
      'https://example.com/gitlab/oauth/discovery/keys',
    ],
    [
      'Dedicated',
      'https://acme.gitlab-dedicated.com',
      'https://acme.gitlab-dedicated.com/oauth/discovery/keys',
    ],
  ] as const;
  let keys: Map<string, SigningKey>;
  beforeAll(async () => {
    keys = new Map(
      await Promise.all(offerings.map(async ([name]) => [name, await makeKey(`${name}-kid`)] as const)),
    );
  });
  /** A fetch that is each offering's GitLab: it serves the offering's keys at its JWKS URL only. */
  const fetched: string[] = [];
  const offeringsFetch = async (url: string) => {
    fetched.push(url);
    const offering = offerings.find(([, , jwks]) => jwks === url);
    if (!offering) return new Response('not found', { status: 404 });
    const key = keys.get(offering[0]) as SigningKey;
    return new Response(JSON.stringify({ keys: [key.publicJwk] }), {
      headers: { 'content-type': 'application/json' },
    });
  };

  it.each(offerings)(
    'verifies a token of %s: iss = gitlab_url, keys from its JWKS URL',
    async (name, url, jwks) => {
      fetched.length = 0;
      // The configured URL may carry a trailing slash; GitLab's iss never does.
      const v = verifier({ gitlabUrl: `${url}/`, fetch: offeringsFetch });
      const token = await signToken(keys.get(name) as SigningKey, gitlabClaims(url));
      expect(await v.verify(token, JOB)).toMatchObject({ ok: true });
      expect(fetched).toEqual([jwks]);
      // Every other offering's token, signed by its own GitLab, is foreign here.
      for (const [other, otherUrl] of offerings.filter(([n]) => n !== name)) {
        const foreign = await signToken(keys.get(other) as SigningKey, gitlabClaims(otherUrl));
        await expectRefused(foreign, /wrong issuer|not in the GitLab JWKS|signature/, v);
        // Our key but another offering's iss: still refused, naming the issuer.
        const wrongIss = await signToken(keys.get(name) as SigningKey, gitlabClaims(otherUrl));
        await expectRefused(wrongIss, 'wrong issuer', v);
      }
    },
  );
});
