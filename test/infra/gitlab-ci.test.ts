/**
 * The repository's .gitlab-ci.yml against GitLab's own CI schema, plus the properties the schema
 * cannot express (stage order, manual protected production gate, fork guard, no stored keys).
 *
 * Needs the `ajv` and `yaml` dev dependencies. They are imported by name at run time so that a
 * missing package fails this file with a clear message instead of breaking `tsc` for everyone.
 */
import { existsSync, readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Json } from './synth.js';

const repoFile = (path: string) => new URL(`../../${path}`, import.meta.url);
/** Vendored copy (see fixtures/README.md); the project's shared/ copy, when beside the checkout. */
const SCHEMA = new URL('./fixtures/gitlab-ci.schema.json', import.meta.url);
const SHARED_SCHEMA = new URL('../../../shared/schemas/gitlab-ci.schema.json', import.meta.url);

async function requireDevDependency<T>(name: string): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (error) {
    throw new Error(
      `test/infra/gitlab-ci.test.ts needs the dev dependency "${name}" (npm i -D ${name}): ${error}`,
    );
  }
}

type Job = Record<string, Json>;
let ci: Record<string, Json>;
let validate: ((data: unknown) => boolean) & { errors?: unknown };

beforeAll(async () => {
  const yaml = await requireDevDependency<{ parse(text: string): unknown }>('yaml');
  const ajvModule = await requireDevDependency<{ default: Json }>('ajv');
  const Ajv = ajvModule.default?.default ?? ajvModule.default;
  ci = yaml.parse(readFileSync(repoFile('.gitlab-ci.yml'), 'utf8')) as Record<string, Json>;
  // GitLab's schema uses draft-07 plus a few non-standard keywords (markdownDescription): not strict.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  validate = ajv.compile(JSON.parse(readFileSync(SCHEMA, 'utf8')));
});

const jobs = () =>
  Object.entries(ci).filter(([name, v]) => !name.startsWith('.') && typeof v === 'object' && v?.stage);
const job = (name: string): Job => ci[name];

/** A job with its `extends` chain applied as GitLab does: hashes merged deeply, the rest replaced. */
function resolved(name: string): Job {
  const own = ci[name] as Job;
  if (!own) throw new Error(`no job ${name}`);
  const parents = ([] as string[]).concat(own.extends ?? []);
  const merge = (base: Job, over: Job): Job => {
    const out: Job = { ...base };
    for (const [k, v] of Object.entries(over)) {
      const b = out[k];
      out[k] =
        v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b)
          ? merge(b, v)
          : v;
    }
    return out;
  };
  const { extends: _ignored, ...rest } = own;
  const inherited = parents.reduce<Job>((acc, parent) => merge(acc, resolved(parent)), {});
  return merge(inherited, rest);
}

describe('.gitlab-ci.yml', () => {
  it("uses GitLab's own schema (vendored): it tells a valid pipeline from broken ones", () => {
    const schema = JSON.parse(readFileSync(SCHEMA, 'utf8')) as Record<string, Json>;
    expect(schema.$id).toBe('https://gitlab.com/.gitlab-ci.yml');
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(validate({ stages: ['test'], unit: { stage: 'test', script: ['npm test'] } })).toBe(true);
    // A misspelt job keyword, a script of the wrong type, an unknown `when`: each one rejected.
    expect(validate({ unit: { script: ['npm test'], scirpt: ['x'] } })).toBe(false);
    expect(validate({ unit: { script: 42 } })).toBe(false);
    expect(validate({ unit: { script: ['x'], when: 'sometimes' } })).toBe(false);
    // shared/ sits beside the project's checkouts on the development machines, not in CI clones
    // (there the vendored copy, checked above, is all there is): where it exists, they agree.
    if (existsSync(SHARED_SCHEMA)) {
      expect(readFileSync(SCHEMA, 'utf8')).toBe(readFileSync(SHARED_SCHEMA, 'utf8'));
    }
  });

  it("passes GitLab's CI schema", () => {
    const ok = validate(ci);
    expect(validate.errors ?? [], JSON.stringify(validate.errors, null, 2)).toEqual([]);
    expect(ok).toBe(true);
  });

  it('runs build and test -> diff (dev, prod) -> deploy-dev -> deploy-prod', () => {
    expect(ci.stages).toEqual(['build', 'diff', 'deploy-dev', 'deploy-prod']);
    expect(Object.fromEntries(jobs().map(([name, j]) => [name, j.stage]))).toEqual({
      build: 'build',
      test: 'build',
      'deploy-dev': 'deploy-dev',
      'deploy-prod': 'deploy-prod',
    });
    expect(resolved('diff-dev').stage).toBe('diff');
    expect(resolved('diff-prod').stage).toBe('diff');
    // build needs only Node and the npm cache (test/container/build-job.test.ts runs it); the
    // suite, which needs sshd and dockerd, is the test job's.
    expect(job('build').script).toEqual(['npm run lint', 'npm run synth']);
    expect(job('test').script).toEqual(['npm test']);
  });

  it('deploys the one synthesized artifact in both stages', () => {
    expect(job('build').artifacts.paths).toEqual(['cdk.out/']);
    const deploy = ci['.deploy'] as Job;
    expect(deploy.script.join('\n')).toContain('cdk deploy --app cdk.out');
    expect(deploy.script.join('\n')).not.toMatch(/cdk synth|npm run synth/);
    for (const name of ['deploy-dev', 'deploy-prod']) {
      expect(job(name).extends).toBe('.deploy');
      expect(job(name).needs).toContainEqual({ job: 'build', artifacts: true });
      // Never deploy what the suite failed on.
      expect(job(name).needs).toContainEqual({ job: 'test', artifacts: false });
    }
  });

  it('gets AWS credentials from an ID token, never from stored keys', () => {
    const deploy = ci['.deploy'] as Job;
    expect(deploy.id_tokens.AWS_ID_TOKEN.aud).toBe('sts.amazonaws.com');
    expect(resolved('deploy-prod').before_script.join('\n')).toContain('web_identity_token_file');
    const text = readFileSync(repoFile('.gitlab-ci.yml'), 'utf8');
    expect(text).not.toMatch(/AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|aws_secret_access_key/);
  });

  it('gates production behind a manual, blocking job on a protected environment and branch', () => {
    const prod = job('deploy-prod');
    expect(prod.environment).toEqual({ name: 'production', deployment_tier: 'production' });
    expect(prod.rules).toEqual([
      {
        if: '$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $CI_COMMIT_REF_PROTECTED == "true"',
        when: 'manual',
      },
    ]);
    expect(prod.allow_failure).toBe(false);
    expect(prod.needs).toContainEqual({ job: 'deploy-dev', artifacts: false });
    expect(prod.resource_group).toBe('deploy-prod');
  });

  it('shows a cdk diff of each stage as an exposed artifact, read-only, before the deploys', () => {
    for (const stage of ['dev', 'prod']) {
      const diff = resolved(`diff-${stage}`);
      // The diff audience: only the read-only diff roles accept it (devops-pipeline-stack.ts).
      expect(diff.id_tokens.AWS_ID_TOKEN.aud).toBe('runner-fleet-diff');
      expect(diff.variables).toMatchObject({
        DEPLOY_STAGE: stage,
        PIPELINE_ROLE: 'runner-fleet-pipeline-diff',
        TARGET_ROLE: 'runner-fleet-diff',
      });
      const script = diff.script.join('\n');
      expect(script).toContain('cdk diff --app cdk.out --method template');
      expect(script).toContain('tee "diff-${DEPLOY_STAGE}.txt"');
      expect(diff.artifacts.paths).toEqual([`diff-${stage}.txt`]);
      expect(diff.artifacts.expose_as).toBe(`cdk diff ${stage}`);
      expect(diff.needs).toEqual([{ job: 'build', artifacts: true }]);
      expect(diff.image).toBe(job('build').image ?? (ci['.node'] as Job).image);
    }
    expect(job('deploy-dev').needs).toContainEqual({ job: 'diff-dev', artifacts: false });
    expect(job('deploy-prod').needs).toContainEqual({ job: 'diff-prod', artifacts: false });
    // The diff jobs run only where the roles trust the token: the protected default branch.
    expect(resolved('diff-prod').rules).toEqual(
      job('deploy-prod').rules.map(({ if: i }: Job) => ({ if: i })),
    );
  });

  it('ends each deploy with the smoke test, fed by the deploy outputs', () => {
    for (const name of ['deploy-dev', 'deploy-prod']) {
      const script: string[] = resolved(name).script;
      const deploy = script.findIndex((l) => l.includes('cdk deploy'));
      expect(script[deploy]).toContain('--outputs-file cdk-outputs.json');
      expect(script.at(-1)).toBe(
        'node dist/infra/pipeline/smoke-cli.js --stage "$DEPLOY_STAGE" --outputs cdk-outputs.json',
      );
      expect(script.indexOf('npm run build --silent')).toBeGreaterThan(deploy);
      expect(resolved(name).variables).toMatchObject({ TARGET_ROLE: 'runner-fleet-deploy' });
      expect(resolved(name).image).toBe((ci['.node'] as Job).image);
    }
  });

  it('never runs pipelines for merge requests from forks', () => {
    const [first] = ci.workflow.rules;
    expect(first.if).toContain('$CI_MERGE_REQUEST_SOURCE_PROJECT_ID != $CI_PROJECT_ID');
    expect(first.when).toBe('never');
  });
});
