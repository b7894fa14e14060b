/**
 * The operator's credential for the control socket's operator ops (`status`, `drain`): a random
 * token in a 0600 file beside the socket, created by the daemon at start. Whoever can read it —
 * root and the daemon's user — is the operator; a job's hooks never send it, and a job never gets
 * it (local jobs run as other users when the daemon is root, AWS jobs run on other machines).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export function operatorTokenPath(socketPath: string): string {
  return join(dirname(socketPath), 'operator.token');
}

/** The daemon's side: read the token, creating it (0600) on first start. Returns a checker. */
export function ensureOperatorToken(socketPath: string): {
  path: string;
  check(token: string | undefined): boolean;
} {
  const path = operatorTokenPath(socketPath);
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
    // An operator may have copied it with a lax umask: the file is a credential.
    if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    token = '';
  }
  if (token.length < 32) {
    token = randomBytes(32).toString('base64url');
    writeFileSync(path, `${token}\n`, { mode: 0o600 });
    chmodSync(path, 0o600);
  }
  const expected = createHash('sha256').update(token).digest();
  return {
    path,
    check: (given) =>
      typeof given === 'string' && timingSafeEqual(expected, createHash('sha256').update(given).digest()),
  };
}

/** The operator commands' side. Throws an error naming the file and what to do. */
export function readOperatorToken(socketPath: string): string {
  const path = operatorTokenPath(socketPath);
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES')
      throw new Error(`cannot read the operator token ${path}: run this as root or as the daemon's user`);
    if (code === 'ENOENT')
      throw new Error(`no operator token at ${path}: is the daemon running on ${socketPath}?`);
    throw new Error(`cannot read the operator token ${path}: ${(error as Error).message}`);
  }
}
