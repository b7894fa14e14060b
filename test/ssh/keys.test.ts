import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSshTransport } from '../../executor/transports/ssh.js';
import {
  deleteInstanceKeys,
  generateInstanceKeys,
  loadInstanceKeys,
  publicKeyWithoutComment,
  storeInstanceKeys,
} from '../../manager/ssh/keys.js';
import { renderSshUserData } from '../../manager/ssh/user-data.js';
import { derivePublicKey, startSshd } from '../support/sshd.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp('/tmp/rf-keys-test-');
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('instance keys', () => {
  it('generates ed25519 pairs that OpenSSH reads and derives the same public key from', async () => {
    const keys = generateInstanceKeys('i-abc');
    expect(keys.client.publicKey).toMatch(
      /^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+ i-abc-client$/,
    );
    expect(keys.client.publicKey).not.toBe(keys.host.publicKey);
    const file = join(work, 'probe');
    await writeFile(file, keys.host.privateKey, { mode: 0o600 });
    expect(derivePublicKey(file)).toBe(publicKeyWithoutComment(keys.host.publicKey));
    // ssh-keygen also checks the private section's check integers and padding.
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', file], { encoding: 'utf8' });
    expect(fingerprint).toMatch(/^256 SHA256:\S+ i-abc-host \(ED25519\)/);
  });

  it('stores keys 0600 in a 0700 directory, loads them back, and deletes them', async () => {
    const dir = join(work, 'state', 'ssh', 'i-0001');
    const keys = generateInstanceKeys();
    const stored = await storeInstanceKeys(dir, keys);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    for (const name of ['client_ed25519', 'client_ed25519.pub', 'host_ed25519', 'host_ed25519.pub']) {
      expect(statSync(join(dir, name)).mode & 0o777).toBe(0o600);
    }
    expect(stored.identityFile).toBe(join(dir, 'client_ed25519'));
    expect(stored.hostKey).toBe(publicKeyWithoutComment(keys.host.publicKey));
    const loaded = await loadInstanceKeys(dir);
    expect(loaded.keys).toEqual(keys);
    expect(loaded.hostKey).toBe(stored.hostKey);
    // Storing again (a retried launch) replaces the files atomically.
    await storeInstanceKeys(dir, generateInstanceKeys());
    await deleteInstanceKeys(dir);
    expect(existsSync(dir)).toBe(false);
    await deleteInstanceKeys(dir);
  });
});

describe('user data', () => {
  it('installs host key and client key so the pinned connection works', async () => {
    const keys = generateInstanceKeys('ud');
    const stored = await storeInstanceKeys(join(work, 'ud-keys'), keys);
    const sshDir = join(work, 'etc-ssh');
    const home = join(work, 'home');
    const user = (await import('node:os')).userInfo().username;
    const snippet = renderSshUserData({
      user,
      clientPublicKey: keys.client.publicKey,
      hostPrivateKey: keys.host.privateKey,
      hostPublicKey: keys.host.publicKey,
      sshDir,
      homeDir: home,
      restartSshd: false,
    });
    expect(snippet).not.toMatch(/<</); // no heredoc: bash may back it with a temp file
    const result = spawnSync('bash', ['-c', snippet], { encoding: 'utf8' });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(statSync(join(sshDir, 'ssh_host_ed25519_key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(home, '.ssh')).mode & 0o777).toBe(0o700);
    expect(statSync(join(home, '.ssh', 'authorized_keys')).mode & 0o777).toBe(0o600);
    expect(derivePublicKey(join(sshDir, 'ssh_host_ed25519_key'))).toBe(stored.hostKey);

    const sshd = await startSshd({
      hostKeyFile: join(sshDir, 'ssh_host_ed25519_key'),
      authorizedKeysFile: join(home, '.ssh', 'authorized_keys'),
    });
    try {
      expect(sshd.hostKeyPublic).toBe(stored.hostKey);
      const jobDir = await mkdtemp(join(work, 'job-'));
      await writeFile(join(jobDir, 'script'), 'exit 42');
      const transport = createSshTransport({
        kind: 'ssh',
        host: sshd.host,
        port: sshd.port,
        user: sshd.user,
        identityFile: stored.identityFile,
        hostKey: stored.hostKey,
      });
      const outcome = await transport.runStage(
        {
          scriptPath: join(jobDir, 'script'),
          stage: 'build_script',
          env: {},
          jobTmpDir: jobDir,
          killGraceMs: 1000,
        },
        new AbortController().signal,
      );
      await transport.close(jobDir);
      expect(outcome).toEqual({ kind: 'exited', code: 42 });
    } finally {
      await sshd.stop();
    }
  });

  it('refuses input that could break out of the snippet', () => {
    const keys = generateInstanceKeys();
    const base = {
      user: 'ec2-user',
      clientPublicKey: keys.client.publicKey,
      hostPrivateKey: keys.host.privateKey,
      hostPublicKey: keys.host.publicKey,
    };
    expect(() => renderSshUserData({ ...base, user: "x'; rm -rf /" })).toThrow(/user name/);
    expect(() => renderSshUserData({ ...base, clientPublicKey: "ssh-ed25519 AAAA'$(id)" })).toThrow();
    expect(() => renderSshUserData({ ...base, hostPrivateKey: "'; id; '" })).toThrow(/private key/);
    expect(renderSshUserData(base)).toContain("getent passwd 'ec2-user'");
    expect(renderSshUserData(base)).toContain('systemctl restart sshd');
  });
});
