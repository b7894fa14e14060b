/**
 * Job credentials end to end: the hooks as gitlab-runner drives them, a real daemon, and a JWKS
 * server on 127.0.0.1. Only a verified ID token selects a privileged profile.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  gitlabClaims,
  type JwksServer,
  makeKey,
  type SigningKey,
  signToken,
  startJwksServer,
  unsignedToken,
} from '../credentials/harness.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { type RunnerEntry, runJob } from '../support/gitlab-runner.js';

let jwks: JwksServer;
let key: SigningKey;
let daemon: TestDaemon;
let entry: RunnerEntry;

const PROD = 'arn:aws:iam::111111111111:instance-profile/prod-deploy';

beforeAll(async () => {
  key = await makeKey('k1');
  jwks = await startJwksServer([key]);
  daemon = await startTestDaemon(`
[credentials]
gitlab_url = "${jwks.url}"
audience = "runner-fleet"
default_profile = "runner-fleet-default"

[[credentials.rule]]
name = "deploy-prod"
project_path = "platform/**"
ref_protected = true
environment = "production"
instance_profile = "${PROD}"
`);
  entry = daemon.entry();
});
afterAll(async () => {
  await daemon?.cleanup();
  await jwks?.close();
});

/** Job 456 of project 20 (platform/api), as in gitlabClaims. */
const job = (idToken: string | undefined, extra: Record<string, string> = {}) =>
  runJob(entry, {
    id: '456',
    projectId: 20,
    projectPath: 'platform/api',
    variables: { ...(idToken ? { RUNNER_FLEET_ID_TOKEN: idToken } : {}), ...extra },
    script: 'true',
    // Only the profile matters here: a job without cache or artifacts has fewer stages.
    cache: false,
    artifacts: false,
  });

describe('instance profile chosen by verified ID-token claims', () => {
  it('gives a protected-branch job with a valid token the privileged profile', async () => {
    const result = await job(await signToken(key, gitlabClaims(jwks.url)));
    expect(result.outcome).toBe('success');
    expect(result.log).toMatch(/Credentials: rule "deploy-prod" matched/);
    expect(result.log).toContain('prod-deploy');
  });

  const forged = async (): Promise<Array<[string, string | undefined]>> => {
    const other = await makeKey('k1'); // same kid, different key: a forged signature
    return [
      ['missing', undefined],
      ['forged signature', await signToken(other, gitlabClaims(jwks.url))],
      [
        'expired',
        await signToken(key, gitlabClaims(jwks.url), {
          expOffset: -3600,
          iatOffset: -7200,
          nbfOffset: -7200,
        }),
      ],
      ['another job', await signToken(key, gitlabClaims(jwks.url, { job_id: '999' }))],
      ['alg none', unsignedToken(gitlabClaims(jwks.url))],
      ['wrong audience', await signToken(key, gitlabClaims(jwks.url, { aud: 'vault' }))],
    ];
  };

  it('gives the same job only the default profile with any forged, expired, foreign or missing token', async () => {
    for (const [label, token] of await forged()) {
      const result = await job(token);
      expect(result.outcome, label).toBe('success');
      expect(result.log, label).not.toContain('prod-deploy');
      expect(result.log, label).toMatch(/Credentials: .*default/);
      if (token) expect(daemon.output(), label).not.toContain(token.split('.')[2] || token);
    }
  });

  it('ignores job variables named like claims', async () => {
    const result = await job(undefined, {
      CI_COMMIT_REF_PROTECTED: 'true',
      CI_ENVIRONMENT_NAME: 'production',
      project_path: 'platform/api',
      ref_protected: 'true',
      environment: 'production',
    });
    // The job runs, on the default profile: claims come only from a verified token.
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toMatch(/Credentials: .*default/);
    expect(result.log).not.toContain('prod-deploy');
  });

  it('refuses a token when the job claims another job id through CI_JOB_ID', async () => {
    // The token is genuinely job 456's; the job response says this job is 457.
    const token = await signToken(key, gitlabClaims(jwks.url));
    const result = await runJob(entry, {
      id: '457',
      projectId: 20,
      variables: { RUNNER_FLEET_ID_TOKEN: token, CI_JOB_ID: '456' },
      script: 'true',
    });
    // The job still runs, as job 457, on the default profile (the token names another job).
    expect(result.outcome, result.log).toBe('success');
    expect(result.log).toMatch(/Credentials: .*default/);
    expect(result.log).not.toContain('prod-deploy');
  });
});

describe('when GitLab cannot be asked for its keys', () => {
  it('runs with the default profile by default, and fails prepare as a system failure with when_jwks_unavailable = "fail"', async () => {
    const downKey = await makeKey('down-1');
    const down = await startJwksServer([downKey]);
    down.mode = 'down';
    const strict = await startTestDaemon(`
[credentials]
gitlab_url = "${down.url}"
jwks_timeout = "1s"
when_jwks_unavailable = "fail"
[[credentials.rule]]
name = "deploy-prod"
project_path = "platform/**"
instance_profile = "${PROD}"
`);
    try {
      const token = await signToken(downKey, gitlabClaims(down.url));
      const failed = await runJob(strict.entry(), {
        id: '456',
        projectId: 20,
        projectPath: 'platform/api',
        variables: { RUNNER_FLEET_ID_TOKEN: token },
        script: 'true',
      });
      expect(failed.outcome).toBe('system-failure');
      expect(failed.log).toMatch(/ID token could not be checked .*when_jwks_unavailable = "fail"/);
      expect(failed.log).not.toContain(token);

      // The lenient default: the job runs, with the default profile and a line that says why.
      const lenient = await job(await signToken(key, gitlabClaims(jwks.url)));
      expect(lenient.outcome).toBe('success');
      jwks.mode = 'down';
      const outage = await runJob(entry, {
        id: '458',
        projectId: 20,
        projectPath: 'platform/api',
        variables: {
          RUNNER_FLEET_ID_TOKEN: await signToken(
            await makeKey('k9'),
            gitlabClaims(jwks.url, { job_id: '458' }),
            { kid: 'k9' },
          ),
        },
        script: 'true',
      });
      expect(outage.outcome).toBe('success');
      expect(outage.log).not.toContain('prod-deploy');
      expect(outage.log).toMatch(/Credentials: .*default/);
    } finally {
      jwks.mode = 'serve';
      await strict.cleanup();
      await down.close();
    }
  });
});
