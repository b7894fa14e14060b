import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  CIPHERS,
  clientOptions,
  jobPaths,
  killCommand,
  scriptPrefix,
  stageCommand,
  validateConnectInfo,
} from '../../executor/transports/ssh/args.js';
import { classifySshLog, describeFailure } from '../../executor/transports/ssh/classify.js';

const info = {
  kind: 'ssh' as const,
  host: '10.0.0.5',
  port: 22,
  user: 'ec2-user',
  identityFile: '/var/lib/runner-fleet/ssh/i-1/client_ed25519',
  hostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0= runner-fleet-host',
};

describe('connection info', () => {
  it('pins the key without its comment and rejects unsafe values', () => {
    expect(validateConnectInfo(info).pinnedKey).toBe('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0=');
    expect(() => validateConnectInfo({ ...info, host: '-oProxyCommand=id' })).toThrow(/host/);
    expect(() => validateConnectInfo({ ...info, user: 'a b' })).toThrow(/user/);
    expect(() => validateConnectInfo({ ...info, port: 0 })).toThrow(/port/);
    expect(() => validateConnectInfo({ ...info, hostKey: 'AAAA' })).toThrow(/host key/);
    expect(() => validateConnectInfo({ ...info, identityFile: 'key' })).toThrow(/absolute/);
  });

  it('keeps the control socket within the unix socket path limit', () => {
    expect(jobPaths('/tmp/custom-executor123').controlPath).toBe(
      '/tmp/custom-executor123/.runner-fleet-ssh/cm',
    );
    const long = jobPaths(`/tmp/${'d'.repeat(120)}`);
    expect(long.controlPath).toMatch(/^\/tmp\/rf-ssh-[0-9a-f]{16}\/cm$/);
    expect(long.dir.startsWith('/tmp/ddd')).toBe(true);
    expect(jobPaths('/tmp/a').jobKey).toBe(jobPaths('/tmp/a').jobKey);
  });

  it('quotes and escapes local paths for ssh', () => {
    const options = clientOptions(validateConnectInfo(info), jobPaths('/tmp/job 100%'));
    expect(options).toContain('UserKnownHostsFile="/tmp/job 100%%/.runner-fleet-ssh/known_hosts"');
    expect(options).toContain('StrictHostKeyChecking=yes');
    expect(options.slice(0, 2)).toEqual(['-F', 'none']);
  });

  it('offers AES-GCM first and every other default cipher after it, as ssh itself resolves them', () => {
    const options = clientOptions(validateConnectInfo(info), jobPaths('/tmp/job'));
    const resolved = spawnSync('ssh', ['-G', ...options, '--', info.host], { encoding: 'utf8' });
    expect(resolved.stderr).toBe('');
    const ciphers = /^ciphers (.*)$/m.exec(resolved.stdout)?.[1];
    expect(ciphers).toBe(CIPHERS);
    expect(ciphers?.split(',')[0]).toBe('aes128-gcm@openssh.com');
    // The fallbacks are this client's own defaults (what an sshd that refuses GCM still speaks).
    const defaults = spawnSync('ssh', ['-G', '-F', 'none', info.host], { encoding: 'utf8' });
    const defaultSet = /^ciphers (.*)$/m.exec(defaults.stdout)?.[1]?.split(',');
    expect(new Set(ciphers?.split(','))).toEqual(new Set(defaultSet));
  });
});

describe('remote commands', () => {
  it('exports the environment on the first line, quoted', () => {
    const prefix = scriptPrefix({ A: "it's", B: '$(id) `x` \\' });
    expect(prefix).not.toContain('\n');
    const out = spawnSync('bash', ['-c', `${prefix} printf '%s|%s' "$A" "$B"`], { encoding: 'utf8' });
    expect(out.stdout).toBe("it's|$(id) `x` \\");
    expect(() => scriptPrefix({ 'A;B': 'x' })).toThrow(/name/);
  });

  it('parses in sh and bash', () => {
    for (const shell of ['sh', 'bash']) {
      for (const command of [
        stageCommand('x.pid'),
        stageCommand('x.pid', 1234),
        killCommand('x.pid', 'TERM'),
      ]) {
        expect(spawnSync(shell, ['-n', '-c', command]).status).toBe(0);
      }
    }
  });
});

describe('ssh log classification', () => {
  const where = { host: '10.0.0.5', port: 22, user: 'ec2-user' };
  it.each([
    ['Host key verification failed.', 'host-key', /host key mismatch/],
    [
      'No ED25519 host key is known for runner-fleet-instance and you have requested strict checking.',
      'host-key',
      /host key mismatch/,
    ],
    ['ec2-user@10.0.0.5: Permission denied (publickey).', 'auth', /authentication refused/],
    ['ssh: connect to host 10.0.0.5 port 22: Connection refused', 'unreachable', /unreachable/],
    ['ssh: connect to host 10.0.0.5 port 22: Connection timed out', 'unreachable', /unreachable/],
    ['kex_exchange_identification: read: Connection reset by peer', 'unreachable', /unreachable/],
    ['Timeout, server 10.0.0.5 not responding.', 'lost', /lost mid-stage/],
    ['client_loop: send disconnect: Broken pipe', 'lost', /lost mid-stage/],
    ['something new', 'other', /failed \(something new\)/],
  ])('%s', (line, kind, message) => {
    const failure = classifySshLog(`Warning: Permanently added 'x'\n${line}\n`)!;
    expect(failure.kind).toBe(kind);
    expect(describeFailure(failure, where)).toMatch(message);
  });

  it('an empty log is no ssh failure', () => {
    expect(classifySshLog('')).toBeUndefined();
    expect(classifySshLog('\n\n')).toBeUndefined();
  });
});
