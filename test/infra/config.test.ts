import { describe, expect, it } from 'vitest';
import { readInfraConfig } from '../../infra/config.js';
import { cdkJson } from './cdk-context.js';

const from = (values: Record<string, unknown>) => readInfraConfig((key) => values[key]);
const stages = (dev: Record<string, unknown>, prod: Record<string, unknown>) => ({
  stages: {
    dev: { domainName: 'gitlab.dev.example.com', fleetName: 'ci-dev', ...dev },
    prod: { domainName: 'gitlab.example.com', fleetName: 'ci', ...prod },
  },
});

describe('readInfraConfig', () => {
  it('has offline defaults, with distinct Dev and Prod names', () => {
    const c = from({});
    expect(c.region).toBe('eu-west-1');
    expect(c.accounts).toEqual({ devops: '111111111111', dev: '222222222222', prod: '333333333333' });
    expect(c.stages.prod).toEqual({
      name: 'prod',
      domainName: 'gitlab.example.com',
      fleetName: 'ci',
      runnerTokenParameter: '/runner-fleet/ci/runner-token',
      certificateArn: undefined,
      hostedZone: undefined,
      gitlabVersion: '18.2.1',
      gitlabDeployedVersion: undefined,
    });
    expect(c.postgresMajor).toBe(16);
    expect(c.stages.dev.domainName).toBe('gitlab.dev.example.com');
    expect(c.stages.dev.runnerTokenParameter).toBe('/runner-fleet/ci-dev/runner-token');
    expect(c.pipeline.gitlabUrl).toBe('https://gitlab.example.com');
  });

  it('reads cdk.json and -c strings alike', () => {
    const fromJson = from(cdkJson.context);
    expect(fromJson.sizing).toBe('1k');
    expect(fromJson.stages.dev.domainName).not.toBe(fromJson.stages.prod.domainName);
    const c = from({
      natGateways: '2',
      multiAz: 'true',
      sizing: '2k',
      fleetMode: 'fleet',
      // -c stages='{…}' arrives as text.
      stages: JSON.stringify(stages({ hostedZoneId: 'Z1', hostedZoneName: 'dev.example.com' }, {}).stages),
    });
    expect(c.natGateways).toBe(2);
    expect(c.multiAz).toBe(true);
    expect(c.sizing).toBe('2k');
    expect(c.fleet.mode).toBe('fleet');
    expect(c.stages.dev.hostedZone).toEqual({ id: 'Z1', name: 'dev.example.com' });
    expect(c.stages.prod.hostedZone).toBeUndefined();
  });

  it('refuses two stages with one host name, fleet name or token parameter', () => {
    expect(() => from(stages({ domainName: 'gitlab.example.com' }, {}))).toThrow(
      /dev and prod both use the host name gitlab.example.com/,
    );
    expect(() => from(stages({ domainName: 'GitLab.Example.com' }, {}))).toThrow(/both use the host name/);
    expect(() => from(stages({ fleetName: 'ci' }, {}))).toThrow(/both use the fleet name "ci"/);
    expect(() => from(stages({ runnerTokenParameter: '/rt' }, { runnerTokenParameter: '/rt' }))).toThrow(
      /both read the runner token from \/rt/,
    );
  });

  it('names the key of a bad or misplaced stage setting', () => {
    expect(() => from({ domainName: 'gitlab.example.com' })).toThrow(
      /context domainName is set per stage: use stages.dev.domainName/,
    );
    expect(() => from({ fleetName: 'ci' })).toThrow(/stages.prod.fleetName/);
    expect(() => from(stages({ fleetName: 'Has Spaces' }, {}))).toThrow(/stages.dev.fleetName must match/);
    expect(() => from(stages({ domainName: 'not a host' }, {}))).toThrow(/stages.dev.domainName/);
    expect(() => from(stages({ colour: 'blue' }, {}))).toThrow(/stages.dev.colour: unknown key/);
    expect(() => from({ stages: { dev: stages({}, {}).stages.dev } })).toThrow(/stages.prod is missing/);
    expect(() => from({ stages: { ...stages({}, {}).stages, qa: {} } })).toThrow(/stages.qa: unknown stage/);
    expect(() => from(stages({}, { hostedZoneId: 'Z1', hostedZoneName: 'other.org' }))).toThrow(
      /not inside hostedZoneName other.org/,
    );
    expect(() => from(stages({ certificateArn: 'cert-1' }, {}))).toThrow(/stages.dev.certificateArn/);
  });

  it('pins GitLab per stage and refuses, naming the stop, a jump over a required upgrade stop', () => {
    const c = from({
      gitlabVersion: '18.2.4',
      ...stages({ gitlabVersion: '18.5.1', gitlabDeployedVersion: '18.2.4' }, {}),
    });
    expect(c.stages.dev.gitlabVersion).toBe('18.5.1');
    expect(c.stages.prod.gitlabVersion).toBe('18.2.4');
    expect(() => from(stages({ gitlabVersion: '18.5.1', gitlabDeployedVersion: '17.11.3' }, {}))).toThrow(
      /GitLab 17.11.3 → 18.5.1 skips the required upgrade stop 18.2: set gitlabVersion to the latest 18.2.z patch first/,
    );
    expect(() => from(stages({ gitlabVersion: '18.2.1', gitlabDeployedVersion: '18.5.0' }, {}))).toThrow(
      /downgrade/,
    );
    expect(() => from(stages({ gitlabVersion: '18.2' }, {}))).toThrow(
      /stages.dev.gitlabVersion must be an exact GitLab version/,
    );
  });

  it('checks PostgreSQL against every stage’s GitLab version', () => {
    expect(() => from({ postgresMajor: 17 })).not.toThrow();
    expect(() => from({ ...stages({ gitlabVersion: '19.0.2' }, {}), postgresMajor: 16 })).toThrow(
      /GitLab 19.0.2 runs on PostgreSQL 17, but postgresMajor is 16/,
    );
    expect(() => from({ ...stages({ gitlabVersion: '17.11.3' }, {}), postgresMajor: 17 })).toThrow(
      /GitLab 17.11.3 runs on PostgreSQL 14–16/,
    );
    expect(() => from({ postgresMajor: 15 })).toThrow(/postgresMajor must be 16 or 17/);
  });

  it('rejects values that would deploy something unintended', () => {
    expect(() => from({ natGateways: 3 })).toThrow(/natGateways/);
    expect(() => from({ sizing: '10k' })).toThrow(/sizing/);
    expect(() => from({ devAccount: '12345' })).toThrow(/devAccount/);
    expect(() => from({ fleetMode: 'spot' })).toThrow(/fleetMode/);
  });
});
