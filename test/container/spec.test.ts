/** What a job response asks for, and what [container] allows: pure functions, plain values. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dockerClientConfig } from '../../executor/container/hooks.js';
import {
  type ContainerSettings,
  checkAllowed,
  containerJob,
  derivedHostnames,
  registryOf,
} from '../../executor/container/spec.js';
import { parseConfigText } from '../../manager/config/load.js';

const settings = (over: Partial<ContainerSettings> = {}): ContainerSettings => ({
  allowedImages: [],
  allowedServices: [],
  allowedPullPolicies: [],
  pullPolicy: ['always'],
  serviceWaitMs: 30_000,
  buildsDir: '/builds',
  ...over,
});

describe('service hostnames', () => {
  it('derives the two names GitLab documents, tag, digest and registry port stripped', () => {
    expect(derivedHostnames('tutum/wordpress:latest')).toEqual(['tutum__wordpress', 'tutum-wordpress']);
    expect(derivedHostnames('postgres:16')).toEqual(['postgres']);
    expect(derivedHostnames('registry.example.com:5000/group/db:1@sha256:abc')).toEqual([
      'registry.example.com__group__db',
      'registry.example.com-group-db',
    ]);
  });

  it('adds aliases (comma or space separated) before the derived names', () => {
    const job = containerJob(
      {
        image: { name: 'alpine' },
        services: [{ name: 'mysql:8', alias: 'db, db2 primary', variables: [{ key: 'A', value: '1' }] }],
      },
      settings(),
    );
    expect(job?.services[0]?.aliases).toEqual(['db', 'db2', 'primary', 'mysql']);
    expect(job?.services[0]?.variables).toEqual({ A: '1' });
  });
});

describe('the job response', () => {
  it('is a bare job without image and default image, a container job with either', () => {
    expect(containerJob({ image: { name: '' }, services: [] }, settings())).toBeUndefined();
    expect(containerJob({ image: { name: '' } }, settings({ defaultImage: 'debian' }))?.image.name).toBe(
      'debian',
    );
    const job = containerJob(
      {
        image: {
          name: 'node:20',
          entrypoint: [''],
          pull_policy: ['if-not-present', 'always'],
          executor_opts: { docker: { user: '1000', platform: 'linux/amd64' } },
        },
      },
      settings(),
    );
    expect(job?.image).toEqual({
      name: 'node:20',
      entrypoint: [''],
      user: '1000',
      platform: 'linux/amd64',
      pullPolicy: ['if-not-present', 'always'],
    });
  });

  it('refuses services without any image, and unknown pull policies, in one line', () => {
    expect(() => containerJob({ image: { name: '' }, services: [{ name: 'redis' }] }, settings())).toThrow(
      /services but no image/,
    );
    expect(() => containerJob({ image: { name: 'a', pull_policy: 'sometimes' } }, settings())).toThrow(
      'image: unknown pull_policy "sometimes" (always, if-not-present or never)',
    );
  });
});

describe('allowed_images, allowed_services, allowed_pull_policies', () => {
  const job = (image: string, pull?: string[]) =>
    containerJob(
      { image: { name: image, ...(pull ? { pull_policy: pull } : {}) }, services: [{ name: 'redis:7' }] },
      settings(),
    )!;

  it('matches globs over the whole name, * within a segment and ** across', () => {
    const s = settings({ allowedImages: ['registry.example.com/ci/*', 'docker.io/**'] });
    expect(() => checkAllowed(job('registry.example.com/ci/node:20'), s)).not.toThrow();
    expect(() => checkAllowed(job('registry.example.com/ci/sub/node:20'), s)).toThrow(
      'image registry.example.com/ci/sub/node:20 is not allowed by [container] allowed_images (registry.example.com/ci/*, docker.io/**)',
    );
    expect(() => checkAllowed(job('alpine'), settings({ allowedServices: ['postgres:*'] }))).toThrow(
      /service redis:7 is not allowed by \[container\] allowed_services/,
    );
  });

  it('refuses a pull policy outside allowed_pull_policies, the runner default included', () => {
    const s = settings({ allowedPullPolicies: ['if-not-present'] });
    expect(() => checkAllowed(job('alpine', ['always']), s)).toThrow(
      'pull_policy always of alpine is not allowed by [container] allowed_pull_policies (if-not-present)',
    );
    expect(() =>
      checkAllowed(job('alpine', ['if-not-present']), { ...s, pullPolicy: ['if-not-present'] }),
    ).not.toThrow();
  });

  it('are validated when the config is loaded', () => {
    expect(() => parseConfigText('[container]\nallowed_images = ["a/[b]"]\n', 'c.toml')).toThrow(
      /c.toml:2: container.allowed_images.0: invalid glob/,
    );
    expect(() => parseConfigText('[container]\npull_policy = ["sometimes"]\n', 'c.toml')).toThrow(
      /c.toml:2: container.pull_policy/,
    );
  });
});

describe('registry credentials for the per-job docker config', () => {
  const response = (variables: Record<string, string> = {}) => ({
    image: { name: 'registry.example.com/group/app:1' },
    services: [{ name: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/db:1' }],
    credentials: [
      {
        type: 'registry',
        url: 'https://registry.example.com',
        username: 'gitlab-ci-token',
        password: 'job-token',
      },
    ],
    variables: Object.entries(variables).map(([key, value]) => ({ key, value })),
  });

  it('uses the job credentials, then our file, then DOCKER_AUTH_CONFIG; ECR through the helper', () => {
    const dir = mkdtempSync(join(tmpdir(), 'rf-auth-'));
    const file = join(dir, 'auth.json');
    writeFileSync(file, JSON.stringify({ auths: { 'other.example.com': { auth: 'b3RoZXI6cHc=' } } }));
    const variable = JSON.stringify({
      auths: { 'https://registry.example.com/v2/': { username: 'u', password: 'p' } },
    });
    const config = JSON.parse(
      dockerClientConfig(
        containerJob(response({ DOCKER_AUTH_CONFIG: variable }), settings())!,
        settings({ dockerAuthConfigFile: file }),
      ),
    );
    expect(config).toEqual({
      auths: {
        'registry.example.com': { auth: Buffer.from('u:p').toString('base64') },
        'other.example.com': { auth: 'b3RoZXI6cHc=' },
      },
      credHelpers: { '123456789012.dkr.ecr.eu-west-1.amazonaws.com': 'ecr-login' },
    });
    const jobOnly = JSON.parse(dockerClientConfig(containerJob(response(), settings())!, settings()));
    expect(jobOnly.auths['registry.example.com'].auth).toBe(
      Buffer.from('gitlab-ci-token:job-token').toString('base64'),
    );
  });

  it('never echoes a DOCKER_AUTH_CONFIG that is not JSON', () => {
    const job = containerJob(response({ DOCKER_AUTH_CONFIG: 'secret-not-json' }), settings())!;
    expect(() => dockerClientConfig(job, settings())).toThrow(
      'the DOCKER_AUTH_CONFIG variable is not valid JSON',
    );
    try {
      dockerClientConfig(job, settings());
    } catch (error) {
      expect((error as Error).message).not.toContain('secret-not-json');
    }
  });

  it('knows which registry an image comes from', () => {
    expect(registryOf('node:20')).toBe('docker.io');
    expect(registryOf('library/node')).toBe('docker.io');
    expect(registryOf('127.0.0.1:5000/x/y:1')).toBe('127.0.0.1:5000');
    expect(registryOf('localhost/x')).toBe('localhost');
  });
});
