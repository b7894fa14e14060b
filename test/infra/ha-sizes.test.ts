import { describe, expect, it } from 'vitest';
import { readInfraConfig } from '../../infra/config.js';
import { HA_3K, haSize, replicationFactor } from '../../infra/gitlab/ha/sizes.js';
import { cdkJson } from './cdk-context.js';

const from = (values: Record<string, unknown>) => readInfraConfig((key) => values[key]);

describe('size in the infra config', () => {
  it('defaults to the POC, also with cdk.json', () => {
    expect(from({}).size).toBe('poc');
    expect(from(cdkJson.context).size).toBe('poc');
  });

  it('selects the 3k layout with the reference architecture AWS column', () => {
    const c = from({ size: '3k' });
    expect(c.size).toBe('3k');
    expect(c.ha).toEqual(HA_3K);
    expect([c.ha.rails.count, c.ha.sidekiq.count, c.ha.gitaly.count, c.ha.praefect.count]).toEqual([
      3, 2, 3, 3,
    ]);
    expect([c.ha.rails.instanceType, c.ha.sidekiq.instanceType]).toEqual(['c5.2xlarge', 'm5.xlarge']);
    expect([c.ha.gitaly.instanceType, c.ha.praefect.instanceType]).toEqual(['m5.xlarge', 'c5.large']);
    expect(replicationFactor(c.ha)).toBe(3);
  });

  it('takes overrides from -c (a JSON string) and cdk.json (an object) alike', () => {
    const c = from({ size: '3k', sizeOverrides: '{"rails":{"count":"4","instanceType":"c6i.2xlarge"}}' });
    expect(c.ha.rails).toEqual({ ...HA_3K.rails, count: 4, instanceType: 'c6i.2xlarge' });
    expect(c.ha.sidekiq).toEqual(HA_3K.sidekiq);
    const d = from({ size: '3k', sizeOverrides: { gitaly: { dataVolumeGiB: 1000 }, zones: 2 } });
    expect(d.ha.gitaly.dataVolumeGiB).toBe(1000);
    expect(d.ha.zones).toBe(2);
    expect(HA_3K.gitaly.dataVolumeGiB).toBe(500);
  });

  it('rejects bad sizes and overrides, naming the key', () => {
    expect(() => from({ size: '10k' })).toThrow(/context size must be one of poc,3k/);
    expect(() => from({ sizeOverrides: { rails: { count: 4 } } })).toThrow(/size=3k only/);
    expect(() => haSize({ railz: { count: 4 } })).toThrow(/sizeOverrides\.railz: unknown role/);
    expect(() => haSize({ rails: { cuont: 4 } })).toThrow(/sizeOverrides\.rails\.cuont: unknown key/);
    expect(() => haSize({ rails: { count: 0 } })).toThrow(
      /sizeOverrides\.rails\.count: expected a positive integer/,
    );
    expect(() => haSize({ rails: { instanceType: 'big one' } })).toThrow(
      /sizeOverrides\.rails\.instanceType/,
    );
    expect(() => haSize({ gitaly: { count: 2 } })).toThrow(/gitaly\.count: must be odd/);
    expect(() => haSize({ database: { instanceType: 'db.m6i.large' } })).toThrow(
      /sizeOverrides\.database\.instanceType: write the class without "db\." \(e\.g\. "m6i\.large"\)/,
    );
    expect(() => haSize({ redis: { nodeType: 'm6g.large' } })).toThrow(/sizeOverrides\.redis\.nodeType/);
    expect(haSize({ database: { instanceType: 'm6i.large' } }).database.instanceType).toBe('m6i.large');
    expect(() => haSize({ zones: 4 })).toThrow(/zones/);
    expect(() => haSize('{nope')).toThrow(/not valid JSON/);
    expect(() => haSize('[1]')).toThrow(/JSON object/);
  });

  it('caps the replication factor at three copies', () => {
    expect(replicationFactor(haSize({ gitaly: { count: 5 } }))).toBe(3);
    expect(replicationFactor(haSize({ gitaly: { count: 1 } }))).toBe(1);
  });
});
