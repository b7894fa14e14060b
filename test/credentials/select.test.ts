import { readFileSync } from 'node:fs';
import { parse } from 'smol-toml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifierFor } from '../../manager/credentials/index.js';
import { type CredentialsConfig, credentialsSchema } from '../../manager/credentials/schema.js';
import { canReuse, isForkMergeRequest, selectCredentials } from '../../manager/credentials/select.js';
import {
  createIdTokenVerifier,
  type IdTokenVerifier,
  idTokenFromEnv,
  type VerifiedClaims,
} from '../../manager/credentials/verify.js';
import {
  AUDIENCE,
  type GitLabClaims,
  gitlabClaims,
  type JwksServer,
  makeKey,
  type SigningKey,
  signToken,
  startJwksServer,
  unsignedToken,
} from './harness.js';

const JOB = { jobId: '456', projectPath: 'platform/api' };
const PROD = 'runner-fleet-prod-deploy';
const DEV = 'runner-fleet-dev-deploy';

let key: SigningKey;
let server: JwksServer;
let config: CredentialsConfig;
let verifier: IdTokenVerifier;

/** The shipped example rule set, pointed at the test's GitLab. */
function exampleConfig(gitlabUrl: string, extra: Record<string, unknown> = {}): CredentialsConfig {
  const doc = parse(
    readFileSync(new URL('../../docs/credentials.example.toml', import.meta.url), 'utf8'),
  ) as {
    credentials: Record<string, unknown>;
  };
  return credentialsSchema.parse({ ...doc.credentials, gitlab_url: gitlabUrl, ...extra });
}

beforeAll(async () => {
  key = await makeKey('kid-1');
  server = await startJwksServer([key]);
  config = exampleConfig(server.url);
  verifier = verifierFor(config)!;
});
afterAll(async () => {
  await server.close();
});

/** What the daemon does for one prepare: token from the job's env, verify, select. */
async function prepare(env: Record<string, string>, cfg = config, job = JOB) {
  const token = idTokenFromEnv(env, cfg.tokenVariable);
  const verification = token === undefined ? undefined : await verifier.verify(token, job);
  return selectCredentials(cfg, verification);
}

async function envWithToken(claims: GitLabClaims, extra: Record<string, string> = {}) {
  return { CUSTOM_ENV_RUNNER_FLEET_ID_TOKEN: await signToken(key, claims), ...extra };
}

const featureBranch = () =>
  gitlabClaims(server.url, {
    ref: 'feature/x',
    ref_path: 'refs/heads/feature/x',
    ref_protected: 'false',
    environment: undefined,
    environment_protected: undefined,
  });

describe('selectCredentials with verified tokens (example Dev/Prod rule set)', () => {
  it('protected main deploying to protected production gets the prod profile', async () => {
    const selection = await prepare(await envWithToken(gitlabClaims(server.url)));
    expect(selection).toEqual({
      credentialClass: 'deploy-prod',
      instanceProfile: PROD,
      hopLimit: 1,
      ruleName: 'deploy-prod',
      verifiedProject: 'platform/api',
      overrides: { instanceType: undefined, launchTemplate: undefined, subnets: undefined },
      logLine:
        'Credentials: rule "deploy-prod" matched (verified ID token); instance profile runner-fleet-prod-deploy',
    });
  });

  it('a protected release branch without environment gets the dev profile', async () => {
    const claims = gitlabClaims(server.url, {
      ref: 'release/1.2',
      environment: undefined,
      environment_protected: undefined,
    });
    const selection = await prepare(await envWithToken(claims));
    expect(selection.credentialClass).toBe('deploy-dev');
    expect(selection.instanceProfile).toBe(DEV);
  });

  it('production environment that is not protected falls through to dev', async () => {
    const selection = await prepare(
      await envWithToken(gitlabClaims(server.url, { environment_protected: 'false' })),
    );
    expect(selection.credentialClass).toBe('deploy-dev');
  });

  it('an unprotected feature branch gets the default (none)', async () => {
    const selection = await prepare(await envWithToken(featureBranch()));
    expect(selection).toMatchObject({ credentialClass: 'default', instanceProfile: undefined, hopLimit: 1 });
    expect(selection.logLine).toBe(
      'Credentials: verified ID token matched no rule; using the default profile (none)',
    );
  });

  it('a protected main of a project outside platform/ gets the default', async () => {
    const claims = gitlabClaims(server.url, {
      project_path: 'someone/api',
      job_project_path: 'someone/api',
      namespace_path: 'someone',
      job_namespace_path: 'someone',
    });
    const selection = await prepare(await envWithToken(claims), config, {
      jobId: '456',
      projectPath: 'someone/api',
    });
    expect(selection.credentialClass).toBe('default');
  });

  it('no token: default, and the log says so', async () => {
    const selection = await prepare({});
    expect(selection.credentialClass).toBe('default');
    expect(selection.logLine).toBe('Credentials: no ID token; using the default profile (none)');
  });

  it.each([
    ['expired', { expOffset: -120, iatOffset: -600 }, 'expired'],
    ['future nbf', { nbfOffset: 300 }, 'not yet valid (nbf in the future)'],
  ])('%s token: default with the reason', async (_name, options, reason) => {
    const token = await signToken(key, gitlabClaims(server.url), options);
    const selection = await prepare({ CUSTOM_ENV_RUNNER_FLEET_ID_TOKEN: token });
    expect(selection.credentialClass).toBe('default');
    expect(selection.logLine).toBe(
      `Credentials: no verified ID token (${reason}); using the default profile (none)`,
    );
    expect(selection.logLine).not.toContain(token.split('.')[1]);
  });

  it('a token of another job gets the default, with a named default profile', async () => {
    const cfg = exampleConfig(server.url, { default_profile: 'runner-fleet-ci-default' });
    const selection = await prepare(await envWithToken(gitlabClaims(server.url, { job_id: '123' })), cfg);
    expect(selection).toMatchObject({
      credentialClass: 'default',
      instanceProfile: 'runner-fleet-ci-default',
    });
    expect(selection.logLine).toBe(
      'Credentials: no verified ID token (token belongs to job 123, not 456); using the default profile (runner-fleet-ci-default)',
    );
  });

  it('a forged token (alg none) with prod claims gets the default', async () => {
    const selection = await prepare({
      CUSTOM_ENV_RUNNER_FLEET_ID_TOKEN: unsignedToken(gitlabClaims(server.url)),
    });
    expect(selection.credentialClass).toBe('default');
    expect(selection.logLine).toContain('algorithm none not allowed');
  });

  it('JWKS hanging: cached keys keep working; a cold cache gives the default and a clear line', async () => {
    server.mode = 'hang';
    try {
      // The shared verifier fetched the keys in earlier tests: an outage does not hurt it.
      expect((await prepare(await envWithToken(gitlabClaims(server.url)))).credentialClass).toBe(
        'deploy-prod',
      );
      const cold = createIdTokenVerifier({
        gitlabUrl: server.url,
        audience: AUDIENCE,
        clockSkewSeconds: 30,
        jwksTimeoutMs: 300,
        cacheTtlMs: 60_000,
      });
      const verification = await cold.verify(await signToken(key, gitlabClaims(server.url)), JOB);
      const fallback = selectCredentials(config, verification);
      expect(fallback.credentialClass).toBe('default');
      expect(fallback.logLine).toBe(
        'Credentials: no verified ID token (JWKS unreachable: timeout after 300ms); using the default profile (none)',
      );
    } finally {
      server.mode = 'serve';
    }
  });
});

describe('claims faked through CUSTOM_ENV_* change nothing', () => {
  // Everything a job author can put into the environment of the hooks, named like the claims and
  // like GitLab's predefined variables for them.
  const fakes = {
    CUSTOM_ENV_CI_COMMIT_REF_PROTECTED: 'true',
    CUSTOM_ENV_CI_COMMIT_REF_NAME: 'main',
    CUSTOM_ENV_CI_COMMIT_BRANCH: 'main',
    CUSTOM_ENV_CI_ENVIRONMENT_NAME: 'production',
    CUSTOM_ENV_CI_PIPELINE_SOURCE: 'push',
    CUSTOM_ENV_CI_PROJECT_PATH: 'platform/api',
    CUSTOM_ENV_ref_protected: 'true',
    CUSTOM_ENV_ref: 'main',
    CUSTOM_ENV_environment: 'production',
    CUSTOM_ENV_environment_protected: 'true',
    CUSTOM_ENV_project_path: 'platform/api',
    CUSTOM_ENV_pipeline_source: 'push',
    CUSTOM_ENV_RUNNER_FLEET_CREDENTIAL_CLASS: 'deploy-prod',
  };

  it('a verified feature-branch token stays default', async () => {
    const withFakes = await prepare(await envWithToken(featureBranch(), fakes));
    const without = await prepare(await envWithToken(featureBranch()));
    expect(withFakes.credentialClass).toBe('default');
    expect(withFakes).toEqual(without);
  });

  it('no token stays default', async () => {
    expect((await prepare(fakes)).credentialClass).toBe('default');
  });

  it('a prod token cannot be downgraded or redirected either', async () => {
    const selection = await prepare(
      await envWithToken(gitlabClaims(server.url), { ...fakes, CUSTOM_ENV_CI_COMMIT_REF_PROTECTED: 'false' }),
    );
    expect(selection.credentialClass).toBe('deploy-prod');
  });
});

describe('fork merge request guard', () => {
  // A fork MR pipeline run in the parent: since GitLab 18.2.2 project_path names the fork,
  // job_project_path (18.4+) the parent; ref/ref_protected are the fork branch's name checked
  // against the parent's protections (the manipulation of GitLab issue 548165).
  const forkMr = () =>
    gitlabClaims(server.url, {
      pipeline_source: 'merge_request_event',
      project_path: 'contributor/api',
      namespace_path: 'contributor',
      source_project_path: 'contributor/api',
      environment: undefined,
      environment_protected: undefined,
    });

  const mrConfig = () =>
    credentialsSchema.parse({
      gitlab_url: server.url,
      rule: [
        {
          name: 'mr-privileged',
          project_path: 'platform/**',
          ref_protected: true,
          pipeline_source: 'merge_request_event',
          deny_fork_merge_requests: true,
          instance_profile: 'runner-fleet-mr-privileged',
        },
        {
          name: 'mr-readonly',
          project_path: 'platform/**',
          pipeline_source: 'merge_request_event',
          deny_fork_merge_requests: false,
          instance_profile: 'runner-fleet-mr-readonly',
        },
      ],
    });

  it('denies the privileged rule to a fork MR and falls through to one that allows forks', async () => {
    const selection = await prepare(await envWithToken(forkMr()), mrConfig());
    expect(selection.credentialClass).toBe('mr-readonly');
  });

  it('the log names the refused rule when nothing else matches', async () => {
    const cfg = { ...mrConfig(), rules: mrConfig().rules.slice(0, 1) };
    const selection = await prepare(await envWithToken(forkMr()), cfg);
    expect(selection.credentialClass).toBe('default');
    expect(selection.logLine).toContain(
      'rule "mr-privileged" refused for a merge request pipeline from a fork',
    );
  });

  it('the example rules never give a fork MR a deploy profile', async () => {
    const selection = await prepare(await envWithToken(forkMr()));
    expect(selection.credentialClass).toBe('default');
  });

  it('a same-project MR is not a fork', async () => {
    const claims = gitlabClaims(server.url, { pipeline_source: 'merge_request_event' });
    const selection = await prepare(await envWithToken(claims), mrConfig());
    expect(selection.credentialClass).toBe('mr-privileged');
  });

  it('without job_project_path (GitLab < 18.4) every MR pipeline is treated as a possible fork', async () => {
    const claims = gitlabClaims(server.url, {
      pipeline_source: 'merge_request_event',
      job_project_path: undefined,
      job_namespace_path: undefined,
    });
    const selection = await prepare(await envWithToken(claims), mrConfig());
    expect(selection.credentialClass).toBe('mr-readonly');
  });

  it('isForkMergeRequest on plain claims', () => {
    const base: VerifiedClaims = {
      jobId: '1',
      projectPath: 'p/a',
      jobProjectPath: 'p/a',
      pipelineSource: 'push',
    };
    expect(isForkMergeRequest(base)).toBe(false);
    expect(isForkMergeRequest({ ...base, pipelineSource: 'merge_request_event' })).toBe(false);
    expect(isForkMergeRequest({ ...base, pipelineSource: 'merge_request_event', projectPath: 'f/a' })).toBe(
      true,
    );
    expect(
      isForkMergeRequest({ ...base, pipelineSource: 'merge_request_event', sourceProjectPath: 'f/a' }),
    ).toBe(true);
    expect(
      isForkMergeRequest({ ...base, pipelineSource: 'merge_request_event', jobProjectPath: undefined }),
    ).toBe(true);
    expect(isForkMergeRequest({ ...base, pipelineSource: 'external_pull_request_event' })).toBe(true);
    // A fork's own pipeline (runs in the fork) is not "a fork MR in the parent": project rules exclude it.
    expect(isForkMergeRequest({ ...base, projectPath: 'f/a', jobProjectPath: 'f/a' })).toBe(false);
  });
});

describe('pure selection details', () => {
  const claims: VerifiedClaims = {
    jobId: '1',
    projectPath: 'platform/api',
    jobProjectPath: 'platform/api',
    namespacePath: 'platform',
    ref: 'v1.0.0',
    refType: 'tag',
    refProtected: 'true',
    pipelineSource: 'push',
    userLogin: 'bob',
  };
  const cfg = credentialsSchema.parse({
    gitlab_url: 'https://gitlab.example.com',
    default_hop_limit: 1,
    rule: [
      { name: 'alice-only', user_login: 'alice', namespace_path: 'platform', instance_profile: 'a' },
      {
        name: 'tags',
        namespace_path: 'platform',
        ref: 'v*',
        ref_type: 'tag',
        instance_profile: 'arn:aws:iam::123456789012:instance-profile/ci/release',
        hop_limit: 2,
        instance_type: 'm7i.large',
        subnets: ['subnet-0123456789abcdef0'],
      },
      { name: 'catch-all', project_path: '**', instance_profile: 'c' },
    ],
  });

  it('first matching rule wins and carries its overrides and hop limit', () => {
    expect(selectCredentials(cfg, { ok: true, claims })).toMatchObject({
      credentialClass: 'tags',
      instanceProfile: 'arn:aws:iam::123456789012:instance-profile/ci/release',
      hopLimit: 2,
      overrides: { instanceType: 'm7i.large', subnets: ['subnet-0123456789abcdef0'] },
      logLine: 'Credentials: rule "tags" matched (verified ID token); instance profile release',
    });
    expect(
      selectCredentials(cfg, { ok: true, claims: { ...claims, userLogin: 'alice' } }).credentialClass,
    ).toBe('alice-only');
    expect(
      selectCredentials(cfg, { ok: true, claims: { ...claims, refType: 'branch' } }).credentialClass,
    ).toBe('catch-all');
  });

  it('a failed verification never matches a rule, even a catch-all', () => {
    expect(selectCredentials(cfg, { ok: false, reason: 'expired' }).credentialClass).toBe('default');
  });

  it('keeps the log line on one line', () => {
    const line = selectCredentials(cfg, { ok: false, reason: 'bad\nCredentials: rule "x" matched' }).logLine;
    expect(line).not.toContain('\n');
  });
});

describe('canReuse', () => {
  it('only within the same class and project; fresh instances are free', () => {
    expect(canReuse(undefined, undefined, 'deploy-prod', 'platform/api')).toBe(true);
    expect(canReuse('deploy-prod', 'platform/api', 'deploy-prod', 'platform/api')).toBe(true);
    expect(canReuse('deploy-prod', 'platform/api', 'default', 'platform/api')).toBe(false);
    expect(canReuse('default', 'platform/api', 'deploy-prod', 'platform/api')).toBe(false);
    expect(canReuse('default', 'platform/api', 'default', 'platform/web')).toBe(false);
    expect(canReuse('default', undefined, 'default', 'platform/web')).toBe(false);
  });
});
