/**
 * What a container job asks for, read from gitlab-runner's job response (image, services,
 * credentials, variables) and checked against the [container] settings the daemon handed the
 * hooks through job_env. Pure: no process, no Docker.
 */
import { compileGlob } from '../../manager/credentials/glob.js';
import { JOB_ENV } from '../job-env.js';

export type PullPolicy = 'always' | 'if-not-present' | 'never';
export const PULL_POLICIES: readonly PullPolicy[] = ['always', 'if-not-present', 'never'];

/** [container] as the hooks see it (job_env RUNNER_FLEET_CONTAINER, JSON). Nothing secret. */
export interface ContainerSettings {
  readonly defaultImage?: string;
  readonly allowedImages: readonly string[];
  readonly allowedServices: readonly string[];
  readonly allowedPullPolicies: readonly PullPolicy[];
  readonly pullPolicy: readonly PullPolicy[];
  /** DOCKER_HOST for the docker CLI on the instance; unset: the CLI's own default there. */
  readonly dockerHost?: string;
  readonly serviceWaitMs: number;
  /** A docker config.json (DOCKER_AUTH_CONFIG) on the manager, read by prepare; never copied elsewhere. */
  readonly dockerAuthConfigFile?: string;
  /** builds_dir of the job (from config_exec): bind-mounted into the job container. */
  readonly buildsDir: string;
}

export interface ImageSpec {
  readonly name: string;
  /** undefined: the image's own; [] or [""]: none. */
  readonly entrypoint?: readonly string[];
  readonly command?: readonly string[];
  readonly user?: string;
  readonly platform?: string;
  readonly pullPolicy?: readonly PullPolicy[];
}

export interface ServiceSpec extends ImageSpec {
  readonly aliases: readonly string[];
  /** Service variables (GitLab passes the job's variables too, with these on top). */
  readonly variables: Readonly<Record<string, string>>;
}

export interface RegistryCredential {
  readonly registry: string;
  readonly username: string;
  readonly password: string;
}

export interface ContainerJob {
  readonly image: ImageSpec;
  readonly services: readonly ServiceSpec[];
  readonly credentials: readonly RegistryCredential[];
  /** The job's variables (may be secrets): for services and DOCKER_AUTH_CONFIG only. */
  readonly variables: Readonly<Record<string, string>>;
}

export class ContainerSpecError extends Error {
  override name = 'ContainerSpecError';
}

export function readSettings(env: NodeJS.ProcessEnv = process.env): ContainerSettings | undefined {
  const text = env[JOB_ENV.container];
  if (!text) return undefined;
  try {
    return JSON.parse(text) as ContainerSettings;
  } catch {
    throw new ContainerSpecError(`${JOB_ENV.container} from config_exec is not JSON`);
  }
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const strings = (v: unknown): string[] | undefined =>
  Array.isArray(v) && v.every((s) => typeof s === 'string') ? (v as string[]) : undefined;

/**
 * The container part of a job response, or undefined for a job that runs on the instance itself
 * (no image and no default image). gitlab-runner fills `image` even without one, with an empty name.
 */
export function containerJob(response: unknown, settings: ContainerSettings): ContainerJob | undefined {
  if (!isObject(response)) return undefined;
  const variables: Record<string, string> = {};
  if (Array.isArray(response.variables)) {
    for (const v of response.variables) {
      if (isObject(v) && typeof v.key === 'string' && typeof v.value === 'string') variables[v.key] = v.value;
    }
  }
  const image = isObject(response.image) ? imageSpec(response.image, 'image') : undefined;
  const services = (Array.isArray(response.services) ? response.services : [])
    .filter(isObject)
    .filter((s) => typeof s.name === 'string' && s.name !== '')
    .map((s, i) => serviceSpec(s, i));
  const name = image?.name || settings.defaultImage;
  if (!name) {
    if (services.length > 0) {
      throw new ContainerSpecError(
        'the job names services but no image, and [container] default_image is not set: services need a job container',
      );
    }
    return undefined;
  }
  const credentials: RegistryCredential[] = [];
  if (Array.isArray(response.credentials)) {
    for (const c of response.credentials) {
      if (
        isObject(c) &&
        c.type === 'registry' &&
        typeof c.url === 'string' &&
        typeof c.username === 'string' &&
        typeof c.password === 'string'
      ) {
        credentials.push({ registry: registryKey(c.url), username: c.username, password: c.password });
      }
    }
  }
  return { image: { ...(image ?? {}), name }, services, credentials, variables };
}

function imageSpec(raw: Json, where: string): ImageSpec {
  const name = typeof raw.name === 'string' ? raw.name.trim() : '';
  if (/[\s'"`$\\]/.test(name))
    throw new ContainerSpecError(`${where}: invalid image name ${JSON.stringify(name)}`);
  const opts =
    isObject(raw.executor_opts) && isObject(raw.executor_opts.docker) ? raw.executor_opts.docker : {};
  const docker = isObject(raw.docker) ? raw.docker : opts;
  const entrypoint = strings(raw.entrypoint);
  const command = strings(raw.command);
  const pull = raw.pull_policy;
  const pullPolicy = typeof pull === 'string' ? [pull] : strings(pull);
  for (const p of pullPolicy ?? []) {
    if (!PULL_POLICIES.includes(p as PullPolicy)) {
      throw new ContainerSpecError(
        `${where}: unknown pull_policy ${JSON.stringify(p)} (always, if-not-present or never)`,
      );
    }
  }
  return {
    name,
    ...(entrypoint && raw.entrypoint !== null ? { entrypoint } : {}),
    ...(command && command.length > 0 ? { command } : {}),
    ...(typeof docker.user === 'string' && docker.user ? { user: docker.user } : {}),
    ...(typeof docker.platform === 'string' && docker.platform ? { platform: docker.platform } : {}),
    ...(pullPolicy && pullPolicy.length > 0 ? { pullPolicy: pullPolicy as PullPolicy[] } : {}),
  };
}

function serviceSpec(raw: Json, index: number): ServiceSpec {
  const base = imageSpec(raw, `services[${index}]`);
  const variables: Record<string, string> = {};
  if (Array.isArray(raw.variables)) {
    for (const v of raw.variables) {
      if (isObject(v) && typeof v.key === 'string' && typeof v.value === 'string') variables[v.key] = v.value;
    }
  }
  // gitlab-runner accepts several aliases in one string, separated by commas or spaces.
  const aliases = typeof raw.alias === 'string' ? raw.alias.split(/[\s,]+/).filter(Boolean) : [];
  return { ...base, aliases: [...aliases, ...derivedHostnames(base.name)], variables };
}

/**
 * The two hostnames GitLab derives from a service's image name: registry port, tag and digest
 * stripped, then `/` replaced by `__` and by `-` (`tutum/wordpress:latest` is reachable as
 * `tutum__wordpress` and `tutum-wordpress`).
 */
export function derivedHostnames(image: string): string[] {
  let name = image.replace(/@.*$/, '');
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  if (slash >= 0 && /[.:]|^localhost$/.test(first)) name = first.replace(/:\d+$/, '') + name.slice(slash);
  const lastSlash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon > lastSlash) name = name.slice(0, colon);
  const names = [name.replaceAll('/', '__'), name.replaceAll('/', '-')];
  return [...new Set(names)];
}

/** The registry an image comes from, as docker's config.json keys it. */
export function registryOf(image: string): string {
  const slash = image.indexOf('/');
  const first = slash < 0 ? '' : image.slice(0, slash);
  if (slash >= 0 && (/[.:]/.test(first) || first === 'localhost')) return first;
  return 'docker.io';
}

/** A registry URL from credentials or DOCKER_AUTH_CONFIG reduced to the host[:port] docker looks up. */
export function registryKey(url: string): string {
  const host = url.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
  return host === 'index.docker.io' || host === 'registry-1.docker.io' ? 'docker.io' : host;
}

const ECR = /^[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$/;
export function isEcrRegistry(registry: string): boolean {
  return ECR.test(registry);
}

/**
 * The allowed_images / allowed_services / allowed_pull_policies checks of gitlab-runner's docker
 * executor: globs over the full image name (`*` within a path segment, `**` across); an empty list
 * allows everything. Throws one line naming what was refused and what is allowed.
 */
export function checkAllowed(job: ContainerJob, settings: ContainerSettings): void {
  const check = (kind: string, name: string, patterns: readonly string[]) => {
    if (patterns.length === 0) return;
    if (patterns.some((p) => compileGlob(p).test(name))) return;
    throw new ContainerSpecError(
      `${kind} ${name} is not allowed by [container] ${kind === 'image' ? 'allowed_images' : 'allowed_services'} (${patterns.join(', ')})`,
    );
  };
  check('image', job.image.name, settings.allowedImages);
  for (const s of job.services) check('service', s.name, settings.allowedServices);
  for (const spec of [job.image, ...job.services]) {
    const policies = pullPolicies(spec, settings);
    const refused = policies.filter((p) => !settings.allowedPullPolicies.includes(p));
    if (settings.allowedPullPolicies.length > 0 && refused.length > 0) {
      throw new ContainerSpecError(
        `pull_policy ${refused.join(', ')} of ${spec.name} is not allowed by [container] allowed_pull_policies (${settings.allowedPullPolicies.join(', ')})`,
      );
    }
  }
}

/** The job's own policies, else the runner's [container] pull_policy. */
export function pullPolicies(spec: ImageSpec, settings: ContainerSettings): readonly PullPolicy[] {
  return spec.pullPolicy ?? settings.pullPolicy;
}

/** Docker object names and the label every one of them carries, from the job id. */
export function jobNames(jobId: string) {
  const base = `runner-fleet-job-${jobId}`;
  return {
    label: `runner-fleet.job=${jobId}`,
    network: base,
    container: `${base}-build`,
    service: (i: number) => `${base}-svc-${i}`,
    /** Per-job directory on the instance (0700) for the docker client config with credentials. */
    configDir: `$HOME/.runner-fleet/jobs/${jobId}`,
  };
}
