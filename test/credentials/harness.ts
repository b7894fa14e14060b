/**
 * Test double of the GitLab side of ID tokens: a JWKS endpoint on 127.0.0.1 serving keys the test
 * generates, and a signer producing tokens with GitLab's claim set.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';

export interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
}

export async function makeKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, use: 'sig', alg: 'RS256' };
  return { kid, privateKey, publicJwk };
}

export type JwksMode = 'serve' | 'down' | 'hang' | 'garbage' | 'error500';

export interface JwksServer {
  /** Base URL, like a GitLab external URL: `http://127.0.0.1:<port>`. */
  readonly url: string;
  keys: SigningKey[];
  mode: JwksMode;
  /** How many requests reached /oauth/discovery/keys. */
  readonly hits: () => number;
  close(): Promise<void>;
}

export async function startJwksServer(initial: SigningKey[]): Promise<JwksServer> {
  let hits = 0;
  const hanging = new Set<ServerResponse>();
  const state = { keys: initial, mode: 'serve' as JwksMode };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url !== '/oauth/discovery/keys') {
      res.writeHead(404).end();
      return;
    }
    hits += 1;
    switch (state.mode) {
      case 'hang':
        // Headers never come: the verifier's timeout must end the wait, not us.
        hanging.add(res);
        return;
      case 'down':
        req.socket.destroy();
        return;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"not":"a jwks"');
        return;
      case 'error500':
        res.writeHead(500).end('oops');
        return;
      default:
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ keys: state.keys.map((k) => k.publicJwk) }));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get keys() {
      return state.keys;
    },
    set keys(keys: SigningKey[]) {
      state.keys = keys;
    },
    get mode() {
      return state.mode;
    },
    set mode(mode: JwksMode) {
      state.mode = mode;
    },
    hits: () => hits,
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export const AUDIENCE = 'runner-fleet';

export interface GitLabClaims {
  [claim: string]: unknown;
}

/** GitLab's claim set for a protected-main push pipeline of platform/api, job 456. */
export function gitlabClaims(issuer: string, overrides: GitLabClaims = {}): GitLabClaims {
  const base: GitLabClaims = {
    iss: issuer,
    aud: AUDIENCE,
    sub: 'project_path:platform/api:ref_type:branch:ref:main',
    namespace_id: '72',
    namespace_path: 'platform',
    project_id: '20',
    project_path: 'platform/api',
    job_project_id: '20',
    job_project_path: 'platform/api',
    job_namespace_id: '72',
    job_namespace_path: 'platform',
    user_id: '1',
    user_login: 'alice',
    user_email: 'alice@example.com',
    pipeline_id: '574',
    pipeline_source: 'push',
    job_id: '456',
    ref: 'main',
    ref_type: 'branch',
    ref_path: 'refs/heads/main',
    ref_protected: 'true',
    environment: 'production',
    environment_protected: 'true',
    deployment_tier: 'production',
    runner_id: 1,
    runner_environment: 'self-hosted',
    sha: '714a629c0b401fdce83e847fc9589983fc6f46bc',
    jti: 'b1f6f3a4-7c31-4a1e-9b9e-0c8f4d9e1a2b',
  };
  const merged = { ...base, ...overrides };
  for (const [key, value] of Object.entries(merged)) if (value === undefined) delete merged[key];
  return merged;
}

export interface SignOptions {
  /** Seconds relative to now. */
  readonly iatOffset?: number;
  readonly nbfOffset?: number;
  readonly expOffset?: number;
  readonly alg?: string;
  readonly kid?: string;
}

export async function signToken(
  key: SigningKey,
  claims: GitLabClaims,
  options: SignOptions = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: options.alg ?? 'RS256', kid: options.kid ?? key.kid, typ: 'JWT' })
    .setIssuedAt(now + (options.iatOffset ?? 0))
    .setNotBefore(now + (options.nbfOffset ?? -5))
    .setExpirationTime(now + (options.expOffset ?? 300))
    .sign(key.privateKey);
}

function b64url(text: string | Uint8Array): string {
  return Buffer.from(text).toString('base64url');
}

/** `alg: none`: what an attacker writes by hand, no signature at all. */
export function unsignedToken(claims: GitLabClaims): string {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }));
  const payload = b64url(JSON.stringify({ ...claims, iat: now, nbf: now - 5, exp: now + 300 }));
  return `${header}.${payload}.`;
}

/** HS256 with the server's *public* key as the HMAC secret: the classic key-confusion forgery. */
export async function hmacWithPublicKey(key: SigningKey, claims: GitLabClaims): Promise<string> {
  const secret = new TextEncoder().encode(JSON.stringify(key.publicJwk));
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', kid: key.kid, typ: 'JWT' })
    .setIssuedAt(now)
    .setNotBefore(now - 5)
    .setExpirationTime(now + 300)
    .sign(secret);
}

/** A token whose payload was edited after signing (signature left as is). */
export function tamperPayload(token: string, edit: (claims: GitLabClaims) => GitLabClaims): string {
  const [header, payload, signature] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString('utf8')) as GitLabClaims;
  return `${header}.${b64url(JSON.stringify(edit(claims)))}.${signature}`;
}
