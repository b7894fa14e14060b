/**
 * Per-instance SSH key material: a client key pair (the manager logs in with it) and a host key
 * pair (the instance serves it, the manager pins its public half). Both are ed25519 and written in
 * OpenSSH's own formats so `ssh`, `sshd` and `ssh-keygen` read them unchanged.
 *
 * Keys are generated in-process with node:crypto and encoded here: about 0.1 ms per pair, against
 * several milliseconds for each `ssh-keygen` process, and no dependency on ssh2 in the manager.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface KeyPair {
  /** `-----BEGIN OPENSSH PRIVATE KEY-----` block, unencrypted. */
  readonly privateKey: string;
  /** One authorized_keys / known_hosts style line: `ssh-ed25519 AAAA… comment`. */
  readonly publicKey: string;
}

export interface InstanceKeys {
  readonly client: KeyPair;
  readonly host: KeyPair;
}

/** Where the key files of one instance live, as written by {@link storeInstanceKeys}. */
export interface StoredInstanceKeys {
  readonly dir: string;
  /** Client private key: the `identityFile` of the instance's SshConnectInfo. */
  readonly identityFile: string;
  /** The pinned host public key line (type and base64 only): the `hostKey` of SshConnectInfo. */
  readonly hostKey: string;
  /** The client public key line, for the instance's authorized_keys. */
  readonly clientPublicKey: string;
}

const FILES = {
  clientPrivate: 'client_ed25519',
  clientPublic: 'client_ed25519.pub',
  hostPrivate: 'host_ed25519',
  hostPublic: 'host_ed25519.pub',
} as const;

export function generateKeyPair(comment: string): KeyPair {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  if (!jwk.d || !jwk.x) throw new Error('ed25519 key export did not return raw key bytes');
  const seed = Buffer.from(jwk.d, 'base64url');
  const pub = Buffer.from(jwk.x, 'base64url');
  return { privateKey: encodePrivateKey(seed, pub, comment), publicKey: encodePublicKey(pub, comment) };
}

export function generateInstanceKeys(comment = 'runner-fleet'): InstanceKeys {
  return { client: generateKeyPair(`${comment}-client`), host: generateKeyPair(`${comment}-host`) };
}

/** `ssh-ed25519 AAAA…` without the comment: the form pinned in leases and known_hosts files. */
export function publicKeyWithoutComment(line: string): string {
  const [type, blob] = line.trim().split(/\s+/);
  if (!type || !blob) throw new Error('not an OpenSSH public key line');
  return `${type} ${blob}`;
}

/**
 * Writes the four key files into `dir` (created 0700, files 0600). The host private key is kept
 * too: a launch retried with the same idempotency token must render byte-identical user data.
 */
export async function storeInstanceKeys(dir: string, keys: InstanceKeys): Promise<StoredInstanceKeys> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode is filtered by the umask and ignored for an existing directory.
  await chmod(dir, 0o700);
  const info = await lstat(dir);
  if (!info.isDirectory() || (typeof process.getuid === 'function' && info.uid !== process.getuid())) {
    throw new Error(`${dir} is not a directory owned by this user; refusing to store keys there`);
  }
  await writePrivateFile(join(dir, FILES.clientPrivate), keys.client.privateKey);
  await writePrivateFile(join(dir, FILES.clientPublic), `${keys.client.publicKey}\n`);
  await writePrivateFile(join(dir, FILES.hostPrivate), keys.host.privateKey);
  await writePrivateFile(join(dir, FILES.hostPublic), `${keys.host.publicKey}\n`);
  return describe(dir, keys.client.publicKey, keys.host.publicKey);
}

/** Reads back what {@link storeInstanceKeys} wrote, e.g. after a daemon restart. */
export async function loadInstanceKeys(dir: string): Promise<StoredInstanceKeys & { keys: InstanceKeys }> {
  const [clientPrivate, clientPublic, hostPrivate, hostPublic] = await Promise.all(
    [FILES.clientPrivate, FILES.clientPublic, FILES.hostPrivate, FILES.hostPublic].map((name) =>
      readFile(join(dir, name), 'utf8'),
    ),
  );
  const keys: InstanceKeys = {
    client: { privateKey: clientPrivate!, publicKey: clientPublic!.trim() },
    host: { privateKey: hostPrivate!, publicKey: hostPublic!.trim() },
  };
  return { ...describe(dir, keys.client.publicKey, keys.host.publicKey), keys };
}

/** Removes an instance's key files. Missing files or directory are not an error. */
export async function deleteInstanceKeys(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

function describe(dir: string, clientPublicKey: string, hostPublicKey: string): StoredInstanceKeys {
  return {
    dir,
    identityFile: join(dir, FILES.clientPrivate),
    hostKey: publicKeyWithoutComment(hostPublicKey),
    clientPublicKey: clientPublicKey.trim(),
  };
}

async function writePrivateFile(path: string, content: string): Promise<void> {
  // Write then rename, so a crash never leaves a half-written key where ssh would find it.
  const temp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(temp, content, { mode: 0o600, flag: 'wx' });
    await chmod(temp, 0o600);
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

// OpenSSH wire encoding (RFC 4251): uint32 big-endian lengths in front of byte strings.
function sshString(data: Buffer | string): Buffer {
  const body = typeof data === 'string' ? Buffer.from(data) : data;
  const length = Buffer.alloc(4);
  length.writeUInt32BE(body.length);
  return Buffer.concat([length, body]);
}

function uint32(value: number): Buffer {
  const buf = Buffer.alloc(4);
  buf.writeUInt32BE(value);
  return buf;
}

function publicBlob(pub: Buffer): Buffer {
  return Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]);
}

function encodePublicKey(pub: Buffer, comment: string): string {
  return `ssh-ed25519 ${publicBlob(pub).toString('base64')} ${comment}`;
}

/** The `openssh-key-v1` container (PROTOCOL.key in OpenSSH), unencrypted, one key. */
function encodePrivateKey(seed: Buffer, pub: Buffer, comment: string): string {
  const check = randomBytes(4);
  let section = Buffer.concat([
    check,
    check,
    sshString('ssh-ed25519'),
    sshString(pub),
    // OpenSSH stores the 32-byte seed followed by the public key as the "private key".
    sshString(Buffer.concat([seed, pub])),
    sshString(comment),
  ]);
  // Pad to the cipher block size (8 for "none") with 1, 2, 3, … as the format requires.
  const padding: number[] = [];
  for (let i = 1; (section.length + padding.length) % 8 !== 0; i++) padding.push(i);
  section = Buffer.concat([section, Buffer.from(padding)]);
  const body = Buffer.concat([
    Buffer.from('openssh-key-v1\0'),
    sshString('none'),
    sshString('none'),
    sshString(''),
    uint32(1),
    sshString(publicBlob(pub)),
    sshString(section),
  ]);
  const lines = body.toString('base64').match(/.{1,70}/g) ?? [];
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join('\n')}\n-----END OPENSSH PRIVATE KEY-----\n`;
}
