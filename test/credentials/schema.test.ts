import { readFileSync } from 'node:fs';
import { parse } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { credentialsSchema, credentialsSectionSchema } from '../../manager/credentials/schema.js';

const exampleToml = readFileSync(new URL('../../docs/credentials.example.toml', import.meta.url), 'utf8');

function load(section: Record<string, unknown>) {
  return credentialsSchema.safeParse(section);
}

function errors(section: Record<string, unknown>): string {
  const result = load(section);
  expect(result.success).toBe(false);
  if (result.success) return '';
  return result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`).join('\n');
}

const base = { gitlab_url: 'https://gitlab.example.com' };
const rule = { name: 'deploy-prod', project_path: 'platform/**', instance_profile: 'runner-fleet-prod' };

describe('credentials config', () => {
  it('parses the shipped example (docs/credentials.example.toml)', () => {
    const doc = parse(exampleToml) as { credentials: Record<string, unknown> };
    const config = credentialsSchema.parse(doc.credentials);
    expect(config.gitlabUrl).toBe('https://gitlab.example.com');
    expect(config.jwksUrl).toBe('https://gitlab.example.com/oauth/discovery/keys');
    expect(config.clockSkewMs).toBe(30_000);
    expect(config.jwksTimeoutMs).toBe(5_000);
    expect(config.jwksCacheTtlMs).toBe(600_000);
    expect(config.defaultProfile).toBeUndefined();
    expect(config.rules.map((r) => r.name)).toEqual(['deploy-prod', 'deploy-dev']);
    const prod = config.rules[0]!;
    expect(prod.denyForkMergeRequests).toBe(true);
    expect(prod.conditions.pipelineSource).toEqual(['push', 'web']);
    expect(prod.conditions.refProtected).toBe(true);
    expect(prod.conditions.projectPath?.regex.test('platform/api')).toBe(true);
  });

  it('has defaults for everything; absent section means no rules and no profile', () => {
    const config = credentialsSectionSchema.parse(undefined);
    expect(config).toMatchObject({
      gitlabUrl: undefined,
      audience: 'runner-fleet',
      tokenVariable: 'RUNNER_FLEET_ID_TOKEN',
      clockSkewMs: 30_000,
      defaultHopLimit: 1,
      rules: [],
    });
  });

  it('accepts string or list for pipeline_source and user_login, and a profile ARN with a path', () => {
    const config = credentialsSchema.parse({
      ...base,
      default_profile: 'runner-fleet-default',
      rule: [
        {
          ...rule,
          pipeline_source: 'push',
          user_login: ['alice', 'bob'],
          instance_profile: 'arn:aws-us-gov:iam::123456789012:instance-profile/ci/runner-fleet-prod',
          hop_limit: 2,
          instance_type: 'm7i.large',
          launch_template: 'lt-0123456789abcdef0',
          subnets: ['subnet-0123456789abcdef0'],
        },
      ],
    });
    const r = config.rules[0]!;
    expect(r.conditions.pipelineSource).toEqual(['push']);
    expect(r.conditions.userLogin).toEqual(['alice', 'bob']);
    expect(r.hopLimit).toBe(2);
    expect(r.overrides).toEqual({
      instanceType: 'm7i.large',
      launchTemplate: 'lt-0123456789abcdef0',
      subnets: ['subnet-0123456789abcdef0'],
    });
    expect(r.denyForkMergeRequests).toBe(true);
    expect(config.defaultProfile).toBe('runner-fleet-default');
  });

  it('normalises the GitLab URL (trailing slash, relative URL root)', () => {
    expect(credentialsSchema.parse({ gitlab_url: 'https://gitlab.example.com/' }).gitlabUrl).toBe(
      'https://gitlab.example.com',
    );
    expect(credentialsSchema.parse({ gitlab_url: 'https://example.com/gitlab/' }).jwksUrl).toBe(
      'https://example.com/gitlab/oauth/discovery/keys',
    );
  });

  it.each([
    ['GitLab.com', 'https://gitlab.com', 'https://gitlab.com/oauth/discovery/keys'],
    ['Self-Managed', 'https://gitlab.example.com', 'https://gitlab.example.com/oauth/discovery/keys'],
    [
      'Self-Managed with a relative URL root',
      'https://gitlab.example.com/sub/path/',
      'https://gitlab.example.com/sub/path/oauth/discovery/keys',
    ],
    [
      'Dedicated',
      'https://acme.gitlab-dedicated.com',
      'https://acme.gitlab-dedicated.com/oauth/discovery/keys',
    ],
  ])('takes %s as token issuer: iss and JWKS URL from gitlab_url', (_offering, url, jwks) => {
    const config = credentialsSchema.parse({ gitlab_url: url });
    expect(config.gitlabUrl).toBe(url.replace(/\/$/, ''));
    expect(config.jwksUrl).toBe(jwks);
  });

  it('names an unknown claim key', () => {
    const text = errors({ ...base, rule: [{ ...rule, project_id: '20' }] });
    expect(text).toContain('rule.0.project_id');
    expect(text).toContain('unknown key "project_id"');
  });

  it('names a misspelt claim key', () => {
    expect(errors({ ...base, rule: [{ ...rule, ref_protect: true }] })).toContain(
      'unknown key "ref_protect"',
    );
  });

  it('names a bad glob and its key', () => {
    const text = errors({ ...base, rule: [{ ...rule, ref: 'release/[0-9]*' }] });
    expect(text).toContain('rule.0.ref');
    expect(text).toContain('bad glob "release/[0-9]*"');
  });

  it.each([
    'arn:aws:iam::12345:instance-profile/x', // account id too short
    'arn:aws:iam::123456789012:role/runner-fleet-prod', // a role, not an instance profile
    'runner fleet prod', // space
    'a'.repeat(129),
  ])('refuses a bad instance profile %j', (profile) => {
    const text = errors({ ...base, rule: [{ ...rule, instance_profile: profile }] });
    expect(text).toContain('rule.0.instance_profile');
    expect(text).toContain('instance-profile ARN');
  });

  it('refuses a bad default profile', () => {
    expect(errors({ ...base, default_profile: 'arn:aws:iam::123456789012:role/x' })).toContain(
      'default_profile',
    );
  });

  it('refuses unknown keys in the section', () => {
    expect(errors({ ...base, audiance: 'x' })).toContain('audiance');
  });

  it('refuses a rule without any claim condition, duplicate names and the reserved name', () => {
    expect(errors({ ...base, rule: [{ name: 'x', instance_profile: 'p' }] })).toContain('matches no claim');
    expect(errors({ ...base, rule: [rule, rule] })).toContain('duplicate rule name');
    expect(errors({ ...base, rule: [{ ...rule, name: 'default' }] })).toContain('reserved');
  });

  it('refuses an unknown pipeline source, a bad ref_type and a string where a boolean belongs', () => {
    expect(errors({ ...base, rule: [{ ...rule, pipeline_source: ['merge_request'] }] })).toContain(
      'rule.0.pipeline_source',
    );
    expect(errors({ ...base, rule: [{ ...rule, ref_type: 'branches' }] })).toContain('rule.0.ref_type');
    expect(errors({ ...base, rule: [{ ...rule, ref_protected: 'true' }] })).toContain('rule.0.ref_protected');
  });

  it('refuses rules without gitlab_url, plain http to a remote host, and bad durations', () => {
    expect(errors({ rule: [rule] })).toContain('gitlab_url');
    expect(errors({ gitlab_url: 'http://gitlab.example.com' })).toContain('https');
    expect(errors({ ...base, clock_skew: '30 seconds' })).toContain('expected a duration like');
    expect(errors({ ...base, jwks_timeout: '10m' })).toContain('out of range');
    expect(errors({ ...base, default_hop_limit: 0 })).toContain('default_hop_limit');
  });

  it('uses the config-wide duration syntax', () => {
    const config = credentialsSchema.parse({
      ...base,
      clock_skew: '1m30s',
      jwks_timeout: '2500ms',
      jwks_cache_ttl: '1h',
    });
    expect([config.clockSkewMs, config.jwksTimeoutMs, config.jwksCacheTtlMs]).toEqual([
      90_000, 2_500, 3_600_000,
    ]);
  });
});
