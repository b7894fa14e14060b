// The fake wired to real OpenSSH servers (test/support/sshd.ts): each instance gets its own sshd
// when it boots, the SDK sees it running at the sshd's address, and a spot reclaim kills the
// sshd with its sessions, the way a vanished instance drops a job's connection.

import { DescribeInstancesCommand, EC2Client, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { Client } from 'ssh2';
import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../../manager/ssh/keys.js';
import { type Sshd, sshdInstalled, startSshd } from '../../support/sshd.js';
import { AwsFake } from './fake.js';

function exec(conn: Client, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    conn.exec(command, (err, stream) => {
      if (err) return reject(err);
      let out = '';
      stream.on('data', (d: Buffer) => {
        out += d.toString();
      });
      stream.on('close', () => resolve(out));
    });
  });
}

function connect(host: string, port: number, username: string, privateKey: string): Promise<Client> {
  return new Promise((resolve, reject) => {
    const conn = new Client();
    conn.once('ready', () => resolve(conn));
    conn.once('error', reject);
    conn.connect({ host, port, username, privateKey, readyTimeout: 10_000 });
  });
}

let fake: AwsFake | undefined;
let ec2: EC2Client | undefined;

afterEach(async () => {
  ec2?.destroy();
  await fake?.close();
});

// .ci/run installs openssh-server: without it this fails loudly instead of skipping.
describe('fake instances backed by real sshd', () => {
  it('has an sshd to back instances with', () => {
    expect(sshdInstalled(), 'sshd is missing: apt-get install -y openssh-server').toBe(true);
  });

  it('runs a command over SSH on a launched instance, and a spot reclaim drops the session', async () => {
    const client = generateKeyPair('aws-fake-test');
    const servers = new Map<string, Sshd>();
    fake = await AwsFake.start({
      timing: { pendingMs: 20, shuttingDownMs: 20 },
      backing: {
        onRunning: async (instance) => {
          const sshd = await startSshd({ authorizedKeys: [client.publicKey] });
          servers.set(instance.InstanceId, sshd);
          return { host: sshd.host, port: sshd.port };
        },
        onTerminated: async (instance) => {
          await servers.get(instance.InstanceId)?.crash();
          await servers.get(instance.InstanceId)?.stop();
        },
      },
    });
    ec2 = new EC2Client({ ...fake.clientConfig(), maxAttempts: 1 });
    const res = await ec2.send(
      new RunInstancesCommand({
        ImageId: 'ami-0123456789abcdef0',
        MinCount: 1,
        MaxCount: 1,
        InstanceMarketOptions: { MarketType: 'spot' },
      }),
    );
    const id = res.Instances![0]!.InstanceId!;
    await fake.waitFor(() => fake?.instance(id)?.State === 'running');

    const described = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
    const inst = described.Reservations![0]!.Instances![0]!;
    expect(inst.State?.Name).toBe('running');
    // The provider learns the port from its test config; the fake exposes it per instance.
    const endpoint = fake.endpoint(id)!;
    expect(endpoint.host).toBe(inst.PrivateIpAddress);

    const sshd = servers.get(id)!;
    const conn = await connect(inst.PrivateIpAddress!, endpoint.port, sshd.user, client.privateKey);
    const closed = new Promise<void>((resolve) => conn.once('close', () => resolve()));
    expect((await exec(conn, 'echo "hello from $((6 * 7))"')).trim()).toBe('hello from 42');

    fake.vanish(id, 'spot');
    await closed;
    await fake.settle();
    expect(fake.instance(id)?.StateReason?.Code).toBe('Server.SpotInstanceTermination');
    expect(sshd.processTree()).toEqual([]);
  });
});
