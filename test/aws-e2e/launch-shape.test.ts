/**
 * Per-rule launch settings end to end: the real daemon on the AWS wire fake, jobs driven through
 * the hooks, an ID token verified against a JWKS server. A rule's launch template and subnets
 * decide where its jobs' instances run, and idle instances never cross between shapes.
 */
import { describe, expect, it } from 'vitest';
import { TAG } from '../../manager/providers/tags.js';
import { gitlabClaims, makeKey, signToken, startJwksServer } from '../credentials/harness.js';
import { awsDaemonConfig, awsToml, SUBNETS } from '../providers/aws-harness.js';
import { runJob } from '../support/gitlab-runner.js';
import { awsE2eLifecycle } from './aws-e2e-harness.js';

const PROD_TEMPLATE = 'runner-fleet-prod';
const PROD_SUBNET = SUBNETS[2] as string;
// Neither the template's type nor one of [aws] instance_types.
const PROD_TYPE = 'm5.large';

const e2e = awsE2eLifecycle();

describe('per-rule launch settings (fleet mode)', () => {
  it("launches a prod job's instance from the prod template in the prod subnet; idle instances never cross shapes", async () => {
    const { w, scratch } = await e2e.start('rf-aws-shape-');
    const prodTemplate = w.fake.addLaunchTemplate(PROD_TEMPLATE, {
      ImageId: 'ami-0fedcba9876543210',
      InstanceType: 't3.small',
    });
    const key = await makeKey('k1');
    const jwks = await startJwksServer([key]);
    e2e.onStop(() => jwks.close());
    const issuer = jwks.url;
    const d = await e2e.daemon(
      awsDaemonConfig({
        scratch,
        pool: 'idle_count = 1\nidle_time = "10m"\nmax_use_count = 3',
        sections: `[credentials]
gitlab_url = "${issuer}"
audience = "runner-fleet"
[[credentials.rule]]
name = "deploy-prod"
project_path = "platform/**"
ref_protected = true
environment = "production"
instance_profile = "prod-deploy"
launch_template = "${PROD_TEMPLATE}"
subnets = ["${PROD_SUBNET}"]
instance_type = "${PROD_TYPE}"`,
        aws: awsToml(w, 'fleet').replace(JSON.stringify(SUBNETS), JSON.stringify(SUBNETS.slice(0, 2))),
      }),
    );
    const entry = d.entry();
    const instanceOf = (log: string) => /on (i-[0-9a-f]{17})/.exec(log)?.[1] ?? '';
    const templateOf = (id: string) =>
      w.fake.instance(id)?.Tags.find((t) => t.Key === 'aws:ec2launchtemplate:id')?.Value;
    const prodJob = async (id: string) =>
      runJob(entry, {
        id,
        projectId: 20,
        projectPath: 'platform/api',
        variables: { RUNNER_FLEET_ID_TOKEN: await signToken(key, gitlabClaims(issuer, { job_id: id })) },
        script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"',
      });
    const defaultJob = (id: string) =>
      runJob(entry, {
        id,
        projectId: 20,
        projectPath: 'platform/api',
        script: 'echo "on $RUNNER_FLEET_INSTANCE_ID"',
      });

    const a = await prodJob('501');
    expect(a.outcome, a.log).toBe('success');
    const prodInstance = instanceOf(a.log);
    expect(templateOf(prodInstance)).toBe(prodTemplate.LaunchTemplateId);
    expect(w.fake.instance(prodInstance)?.SubnetId).toBe(PROD_SUBNET);
    expect(w.fake.instance(prodInstance)?.InstanceType).toBe(PROD_TYPE);
    expect(w.fake.instance(prodInstance)?.IamInstanceProfile?.Arn).toMatch(/instance-profile\/prod-deploy$/);
    const shape = w.fake.instance(prodInstance)?.Tags.find((t) => t.Key === TAG.launchShape)?.Value;
    expect(shape).toMatch(/^s-[0-9a-f]{12}$/);
    // status shows the shape of each instance; the prod one now idles for reuse (max_use_count 3).
    const status = await d.status();
    expect(status.instances.find((i) => i.id === prodInstance)?.shape).toBe(shape);
    expect(status.instances.find((i) => i.id === prodInstance)?.state).toBe('idle');
    expect(status.shapes).toEqual([
      {
        key: shape,
        rules: ['deploy-prod'],
        launchTemplate: PROD_TEMPLATE,
        subnets: [PROD_SUBNET],
        instanceTypes: [PROD_TYPE],
      },
    ]);

    // A default job of the same project: never the prod-shaped idle instance.
    const b = await defaultJob('502');
    expect(b.outcome, b.log).toBe('success');
    const defaultInstance = instanceOf(b.log);
    expect(defaultInstance).not.toBe(prodInstance);
    expect(templateOf(defaultInstance)).toBe(w.templateId);
    expect(w.fake.instance(defaultInstance)?.SubnetId).not.toBe(PROD_SUBNET);
    expect(w.fake.instance(defaultInstance)?.InstanceType).not.toBe(PROD_TYPE);
    expect((await d.status()).instances.find((i) => i.id === defaultInstance)?.shape).toBe('default');

    // And the reverse: the next prod job reuses the prod instance, not a default-shaped one.
    const c = await prodJob('503');
    expect(c.outcome, c.log).toBe('success');
    expect(instanceOf(c.log)).toBe(prodInstance);
    const launchedFromProd = w.fake
      .instances()
      .filter((i) =>
        i.Tags.some((t) => t.Key === 'aws:ec2launchtemplate:id' && t.Value === prodTemplate.LaunchTemplateId),
      );
    expect(launchedFromProd.map((i) => i.InstanceId)).toEqual([prodInstance]);
  }, 240_000);
});
