/**
 * One provider contract, three providers: local, and AWS on the wire-level fake in `asg` and
 * `fleet` mode (through the real SDK, instances backed by real sshd).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe } from 'vitest';
import { LocalProvider } from '../../manager/providers/local/local-provider.js';
import { addJobGroup, awsProvider, GROUP, startAwsWorld } from './aws-harness.js';
import { type ContractSubject, FLEET, providerContract } from './contract.js';

const subjects: [string, () => Promise<ContractSubject>][] = [
  [
    'local',
    async () => {
      const root = mkdtempSync(join(tmpdir(), 'rf-contract-local-'));
      const make = (managerId: string) =>
        new LocalProvider({ root, fleetName: FLEET, managerId, bootTimeMs: 50 });
      return {
        provider: make('manager-a'),
        other: make('manager-b'),
        cleanup: async () => rmSync(root, { recursive: true, force: true }),
      };
    },
  ],
  ...(['asg', 'fleet'] as const).map((mode): [string, () => Promise<ContractSubject>] => [
    `aws (${mode} mode, on the fake)`,
    async () => {
      const world = await startAwsWorld();
      const a = awsProvider(world, mode, { managerId: 'manager-a', fleetName: FLEET });
      // In asg mode each manager steers its own group (its key window is the template's $Latest).
      if (mode === 'asg') addJobGroup(world.fake, '-b');
      const b = awsProvider(world, mode, {
        managerId: 'manager-b',
        fleetName: FLEET,
        ...(mode === 'asg' ? { config: { asg_name: `${GROUP}-b` } } : {}),
      });
      return {
        provider: a.provider,
        other: b.provider,
        cleanup: async () => {
          await world.close();
          a.cleanup();
          b.cleanup();
        },
      };
    },
  ]),
];

describe.each(subjects)('provider contract: %s', (_name, make) => {
  providerContract(make);
});
