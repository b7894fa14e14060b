import { describe, expect, it } from 'vitest';
import { readInfraConfig } from '../../infra/config.js';
import { cdkJson } from './cdk-context.js';

const from = (values: Record<string, unknown>) => readInfraConfig((key) => values[key]);

describe('readInfraConfig', () => {
  it('has offline defaults', () => {
    const c = from({});
    expect(c.region).toBe('eu-west-1');
    expect(c.accounts).toEqual({ devops: '111111111111', dev: '222222222222', prod: '333333333333' });
    expect(c.domainName).toBe('gitlab.example.com');
    expect(c.pipeline.gitlabUrl).toBe('https://gitlab.example.com');
    expect(c.fleet.runnerTokenParameter).toBe('/runner-fleet/ci/runner-token');
    expect(c.hostedZone).toBeUndefined();
  });

  it('reads cdk.json and -c strings alike', () => {
    expect(from(cdkJson.context).sizing).toBe('1k');
    const c = from({
      natGateways: '2',
      multiAz: 'true',
      sizing: '2k',
      fleetMode: 'fleet',
      hostedZoneId: 'Z1',
    });
    expect(c.natGateways).toBe(2);
    expect(c.multiAz).toBe(true);
    expect(c.sizing).toBe('2k');
    expect(c.fleet.mode).toBe('fleet');
    expect(c.hostedZone).toEqual({ id: 'Z1', name: 'gitlab.example.com' });
  });

  it('rejects values that would deploy something unintended', () => {
    expect(() => from({ natGateways: 3 })).toThrow(/natGateways/);
    expect(() => from({ sizing: '10k' })).toThrow(/sizing/);
    expect(() => from({ devAccount: '12345' })).toThrow(/devAccount/);
    expect(() => from({ fleetMode: 'spot' })).toThrow(/fleetMode/);
    expect(() => from({ fleetName: 'Has Spaces' })).toThrow(/fleetName/);
  });
});
