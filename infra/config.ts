/**
 * Everything the app needs to know about the target environment, read once from CDK context
 * (`cdk.json` or `-c key=value`) and validated here. Defaults let `cdk synth` run offline with no
 * credentials; real deployments override them in cdk.json or on the command line.
 */

import { defaultTarballPath } from './fleet/package-asset.js';
import type { PostgresMajor } from './gitlab/data-stores.js';
import { type HaSize, haSize, SIZE_NAMES, type SizeName } from './gitlab/ha/sizes.js';
import { checkPostgres, checkUpgrade, parseGitlabVersion } from './gitlab/versions.js';
import { type SizingName, sizing } from './sizing.js';

export interface AccountIds {
  /** Hosts the GitLab OIDC provider and the pipeline roles. */
  devops: string;
  dev: string;
  prod: string;
}

export const STAGE_NAMES = ['dev', 'prod'] as const;
export type StageName = (typeof STAGE_NAMES)[number];

/** What differs between Dev and Prod: names that must never collide (checked in readInfraConfig). */
export interface StageConfig {
  name: StageName;
  /** Host name of this stage's GitLab, e.g. gitlab.dev.example.com. */
  domainName: string;
  /** Import an existing ACM certificate instead of requesting one. */
  certificateArn?: string;
  /** Public hosted zone for DNS validation and the alias record (no lookup: id and name given). */
  hostedZone?: { id: string; name: string };
  /** Value of the fleet tag, log group and default token parameter of this stage's runner fleet. */
  fleetName: string;
  /** SSM SecureString holding the runner authentication token, created outside CloudFormation. */
  runnerTokenParameter: string;
  /** Exact GitLab version this stage runs (its own, so Dev can go first). */
  gitlabVersion: string;
  /** The version the stage runs now: synth refuses a jump over a required upgrade stop from it. */
  gitlabDeployedVersion?: string;
}

/** Context keys that are per stage (`stages.<stage>.<key>`), never top-level. */
const STAGE_KEYS = [
  'domainName',
  'certificateArn',
  'hostedZoneId',
  'hostedZoneName',
  'fleetName',
  'runnerTokenParameter',
  'gitlabVersion',
  'gitlabDeployedVersion',
] as const;
/** Per-stage keys that may also be given once at the top level, as the default of both stages. */
const SHARED_STAGE_KEYS: readonly string[] = ['gitlabVersion'];
/** The GitLab version when cdk.json names none. */
export const DEFAULT_GITLAB_VERSION = '18.2.1';

/** Used when cdk.json has no `stages` (e.g. a bare `cdk synth` in a fresh checkout). */
const DEFAULT_STAGES: Record<StageName, Record<string, string>> = {
  dev: { domainName: 'gitlab.dev.example.com', fleetName: 'ci-dev' },
  prod: { domainName: 'gitlab.example.com', fleetName: 'ci' },
};

export interface InfraConfig {
  region: string;
  accounts: AccountIds;
  stages: Record<StageName, StageConfig>;
  natGateways: 1 | 2;
  /** `poc`: one GitLab node (preset `sizing`); `3k`: the HA reference architecture (`ha`). */
  size: SizeName;
  /** The 3k layout with `sizeOverrides` applied (used when size is `3k`). */
  ha: HaSize;
  sizing: SizingName;
  multiAz: boolean;
  /** Who may reach the load balancer (HTTPS, HTTP redirect, git over SSH). */
  allowedCidr: string;
  gitlabEdition: 'gitlab-ee' | 'gitlab-ce';
  /** RDS PostgreSQL major; must suit every stage's GitLab version (infra/gitlab/versions.ts). */
  postgresMajor: PostgresMajor;
  /** Subscribed by email to every stack's alarm topic (infra/shared/alarms.ts); unset: no subscription. */
  alarmEmail?: string;
  /** Outgoing email through SES SMTP; unset: GitLab sends none (infra/gitlab/smtp.ts). */
  smtp?: {
    /** Secrets Manager secret (in each stage's account) with the SES SMTP `username` and `password`. */
    secretName: string;
    /** From: address; unset: gitlab@<the stage's domainName>. */
    fromAddress?: string;
    /** Region of the SES identity and SMTP endpoint. */
    region: string;
  };
  pipeline: {
    /** Issuer of the ID tokens: the GitLab that runs this repository's pipelines. */
    gitlabUrl: string;
    audience: string;
    /** `aud` of the diff jobs' ID tokens (read-only roles only); must differ from `audience`. */
    diffAudience: string;
    /** `group/project` of this repository. */
    projectPath: string;
    /** The one protected branch allowed to deploy to production. */
    productionBranch: string;
    /** CDK bootstrap qualifier of the Dev and Prod accounts. */
    cdkQualifier: string;
  };
  fleet: {
    mode: 'asg' | 'fleet';
    cacheExpiryDays: number;
    maxJobInstances: number;
    jobInstanceType: string;
    managerInstanceType: string;
    /** Dead-man switch: a job instance powers off (and so terminates) after this long. */
    jobMaxLifetimeMinutes: number;
    /** `npm pack` tarball of runner-fleet, shipped to the manager as a CDK asset. */
    packageTarball: string;
    /** gitlab-runner release on the manager and the job instances, e.g. 18.2.0. */
    gitlabRunnerVersion: string;
    /** SHA-256 of that release's linux-amd64 binary; unset: checked against the release's own list. */
    gitlabRunnerSha256?: string;
    /**
     * The explicit opt-out: without gitlabRunnerSha256, accept the checksum list the release
     * publishes beside the binary (same bucket). The app refuses neither-nor (requireRunnerChecksum).
     */
    gitlabRunnerTrustReleaseChecksum?: boolean;
  };
}

export type ContextReader = (key: string) => unknown;

export function readInfraConfig(context: ContextReader): InfraConfig {
  const str = (key: string, fallback: string) => {
    const v = context(key);
    return v === undefined || v === null || v === '' ? fallback : String(v);
  };
  const optional = (key: string) => {
    const v = context(key);
    return v === undefined || v === null || v === '' ? undefined : String(v);
  };
  const int = (key: string, fallback: number) => {
    const v = Number(str(key, String(fallback)));
    if (!Number.isInteger(v) || v < 0) throw new Error(`context ${key} must be a non-negative integer`);
    return v;
  };
  const bool = (key: string, fallback: boolean) => {
    const v = context(key);
    if (v === undefined || v === null || v === '') return fallback;
    return v === true || v === 'true';
  };
  const account = (key: string, fallback: string) => {
    const v = str(key, fallback);
    if (!/^\d{12}$/.test(v)) throw new Error(`context ${key} must be a 12-digit account id, got "${v}"`);
    return v;
  };
  const oneOf = <T extends string>(key: string, allowed: readonly T[], fallback: T): T => {
    const v = str(key, fallback);
    if (!(allowed as readonly string[]).includes(v))
      throw new Error(`context ${key} must be one of ${allowed}`);
    return v as T;
  };

  const stages = readStages(context('stages'), optional('gitlabVersion') ?? DEFAULT_GITLAB_VERSION);
  for (const key of STAGE_KEYS) {
    if (optional(key) !== undefined && !SHARED_STAGE_KEYS.includes(key))
      throw new Error(
        `context ${key} is set per stage: use stages.dev.${key} and stages.prod.${key} (cdk.json "stages") so Dev and Prod cannot collide`,
      );
  }
  const natGateways = int('natGateways', 1);
  if (natGateways !== 1 && natGateways !== 2) throw new Error('context natGateways must be 1 or 2');
  const sizingName = str('sizing', '1k');
  sizing(sizingName);
  const size = oneOf('size', SIZE_NAMES, 'poc');
  const overrides = context('sizeOverrides');
  const hasOverrides = overrides !== undefined && overrides !== null && overrides !== '';
  if (hasOverrides && size !== '3k') throw new Error('context sizeOverrides applies to size=3k only');

  const region = str('region', 'eu-west-1');
  if (optional('runnerFleetPackage') !== undefined)
    throw new Error(
      'context runnerFleetPackage is gone: the manager installs the npm pack tarball of this checkout (runnerFleetTarball)',
    );
  const gitlabRunnerVersion = str('gitlabRunnerVersion', '18.2.0');
  if (!/^\d+\.\d+\.\d+$/.test(gitlabRunnerVersion))
    throw new Error(
      `context gitlabRunnerVersion must be an exact release like 18.2.0, got "${gitlabRunnerVersion}"`,
    );
  const gitlabRunnerSha256 = optional('gitlabRunnerSha256')?.toLowerCase();
  if (gitlabRunnerSha256 !== undefined && !/^[0-9a-f]{64}$/.test(gitlabRunnerSha256))
    throw new Error('context gitlabRunnerSha256 must be the 64 hex digits of a SHA-256');
  const postgresMajor = int('postgresMajor', 16);
  if (postgresMajor !== 16 && postgresMajor !== 17) throw new Error('context postgresMajor must be 16 or 17');
  for (const stage of Object.values(stages)) {
    checkPostgres(stage.gitlabVersion, postgresMajor);
    if (stage.gitlabDeployedVersion) checkUpgrade(stage.gitlabDeployedVersion, stage.gitlabVersion);
  }

  const alarmEmail = optional('alarmEmail');
  if (alarmEmail !== undefined && !EMAIL.test(alarmEmail))
    throw new Error(`context alarmEmail must be an email address, got "${alarmEmail}"`);

  const smtpSecretName = optional('smtpSecretName');
  const smtpFromAddress = optional('smtpFromAddress');
  if (smtpFromAddress !== undefined && !EMAIL.test(smtpFromAddress))
    throw new Error(`context smtpFromAddress must be an email address, got "${smtpFromAddress}"`);
  if (smtpSecretName === undefined && (smtpFromAddress ?? optional('smtpRegion')) !== undefined)
    throw new Error('context smtpFromAddress and smtpRegion need smtpSecretName (the SES SMTP credentials)');
  if (smtpSecretName !== undefined && !/^[\w/+=.@-]{1,512}$/.test(smtpSecretName))
    throw new Error(`context smtpSecretName must be a Secrets Manager secret name, got "${smtpSecretName}"`);
  const smtp = smtpSecretName
    ? { secretName: smtpSecretName, fromAddress: smtpFromAddress, region: str('smtpRegion', region) }
    : undefined;

  return {
    region,
    alarmEmail,
    smtp,
    accounts: {
      devops: account('devopsAccount', '111111111111'),
      dev: account('devAccount', '222222222222'),
      prod: account('prodAccount', '333333333333'),
    },
    stages,
    natGateways,
    size,
    ha: haSize(hasOverrides ? overrides : {}),
    sizing: sizingName as SizingName,
    multiAz: bool('multiAz', false),
    allowedCidr: str('allowedCidr', '0.0.0.0/0'),
    gitlabEdition: oneOf('gitlabEdition', ['gitlab-ee', 'gitlab-ce'], 'gitlab-ee'),
    postgresMajor,
    pipeline: {
      gitlabUrl: str('pipelineGitlabUrl', `https://${stages.prod.domainName}`).replace(/\/+$/, ''),
      audience: str('pipelineAudience', 'sts.amazonaws.com'),
      diffAudience: str('pipelineDiffAudience', 'runner-fleet-diff'),
      projectPath: str('pipelineProjectPath', 'ops/runner-fleet'),
      productionBranch: str('productionBranch', 'main'),
      cdkQualifier: str('cdkQualifier', 'hnb659fds'),
    },
    fleet: {
      mode: oneOf('fleetMode', ['asg', 'fleet'], 'asg'),
      cacheExpiryDays: int('cacheExpiryDays', 14),
      maxJobInstances: int('maxJobInstances', 20),
      jobInstanceType: str('jobInstanceType', 'm7i.large'),
      managerInstanceType: str('managerInstanceType', 't3.small'),
      jobMaxLifetimeMinutes: int('jobMaxLifetimeMinutes', 240),
      packageTarball: str('runnerFleetTarball', defaultTarballPath()),
      gitlabRunnerVersion,
      gitlabRunnerSha256,
      gitlabRunnerTrustReleaseChecksum: bool('gitlabRunnerTrustReleaseChecksum', false),
    },
  };
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;
const FLEET_NAME = /^[a-z0-9-]{1,32}$/;

/**
 * `stages` from cdk.json (an object) or `-c stages='{…}'` (JSON text): one entry per stage with its
 * own host name, certificate, zone and fleet name. Two stages sharing a host name would fight over
 * one DNS record and certificate; sharing a fleet name would mix their instances' tags, logs and
 * token parameter. Both are refused here, before anything is synthesized.
 */
export function readStages(
  raw: unknown,
  defaultGitlabVersion = DEFAULT_GITLAB_VERSION,
): Record<StageName, StageConfig> {
  let value = raw ?? DEFAULT_STAGES;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch (error) {
      throw new Error(`context stages is not valid JSON: ${(error as Error).message}`);
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new Error('context stages must be an object: {"dev": {...}, "prod": {...}}');
  const entries = value as Record<string, unknown>;
  for (const key of Object.keys(entries)) {
    if (!(STAGE_NAMES as readonly string[]).includes(key))
      throw new Error(`context stages.${key}: unknown stage (the stages are ${STAGE_NAMES.join(', ')})`);
  }
  const out = {} as Record<StageName, StageConfig>;
  for (const name of STAGE_NAMES) {
    const entry = entries[name];
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
      throw new Error(`context stages.${name} is missing: give it at least domainName and fleetName`);
    const e = entry as Record<string, unknown>;
    for (const key of Object.keys(e)) {
      if (!(STAGE_KEYS as readonly string[]).includes(key))
        throw new Error(
          `context stages.${name}.${key}: unknown key (per-stage keys: ${STAGE_KEYS.join(', ')})`,
        );
    }
    const text = (key: (typeof STAGE_KEYS)[number]) => {
      const v = e[key];
      if (v === undefined || v === null || v === '') return undefined;
      if (typeof v !== 'string') throw new Error(`context stages.${name}.${key} must be a string`);
      return v;
    };
    const domainName = text('domainName')?.toLowerCase();
    if (!domainName || !HOSTNAME.test(domainName))
      throw new Error(
        `context stages.${name}.domainName must be a host name like gitlab.example.com, got "${domainName ?? ''}"`,
      );
    const fleetName = text('fleetName');
    if (!fleetName || !FLEET_NAME.test(fleetName))
      throw new Error(
        `context stages.${name}.fleetName must match [a-z0-9-]{1,32}, got "${fleetName ?? ''}"`,
      );
    const zoneId = text('hostedZoneId');
    const zoneName = (text('hostedZoneName') ?? domainName).toLowerCase().replace(/\.$/, '');
    if (zoneId && domainName !== zoneName && !domainName.endsWith(`.${zoneName}`))
      throw new Error(
        `context stages.${name}: domainName ${domainName} is not inside hostedZoneName ${zoneName}`,
      );
    const certificateArn = text('certificateArn');
    if (certificateArn && !/^arn:aws[\w-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[\w-]+$/.test(certificateArn))
      throw new Error(
        `context stages.${name}.certificateArn must be an ACM certificate ARN, got "${certificateArn}"`,
      );
    out[name] = {
      name,
      domainName,
      certificateArn,
      hostedZone: zoneId ? { id: zoneId, name: zoneName } : undefined,
      fleetName,
      runnerTokenParameter: text('runnerTokenParameter') ?? `/runner-fleet/${fleetName}/runner-token`,
      gitlabVersion: parseGitlabVersion(
        text('gitlabVersion') ?? defaultGitlabVersion,
        `stages.${name}.gitlabVersion`,
      ).text,
      gitlabDeployedVersion: text('gitlabDeployedVersion')
        ? parseGitlabVersion(text('gitlabDeployedVersion')!, `stages.${name}.gitlabDeployedVersion`).text
        : undefined,
    };
  }
  const [dev, prod] = [out.dev, out.prod];
  if (dev.domainName === prod.domainName)
    throw new Error(
      `context stages: dev and prod both use the host name ${dev.domainName}; give each stage its own (e.g. gitlab.dev.example.com)`,
    );
  if (dev.fleetName === prod.fleetName)
    throw new Error(
      `context stages: dev and prod both use the fleet name "${dev.fleetName}"; give each stage its own`,
    );
  if (dev.runnerTokenParameter === prod.runnerTokenParameter)
    throw new Error(
      `context stages: dev and prod both read the runner token from ${dev.runnerTokenParameter}; give each stage its own`,
    );
  return out;
}

/**
 * The gitlab-runner binary (manager, job AMI) is installed only when its SHA-256 matches. Pinned
 * (gitlabRunnerSha256), that proves it is the release the operator reviewed; the release's own
 * list, fetched from the same bucket as the binary, catches corruption but not a compromised
 * bucket. Synth refuses to fall back to the weaker check silently.
 */
export function requireRunnerChecksum(fleet: InfraConfig['fleet']): void {
  if (fleet.gitlabRunnerSha256 || fleet.gitlabRunnerTrustReleaseChecksum) return;
  const v = fleet.gitlabRunnerVersion;
  throw new Error(
    `context gitlabRunnerSha256 is unset: the gitlab-runner ${v} download could only be checked against the checksum list in its own bucket. ` +
      `Pin it: gitlabRunnerSha256 = the first field of \`curl -fsSL https://gitlab-runner-downloads.s3.amazonaws.com/v${v}/release.sha256 | grep 'binaries/gitlab-runner-linux-amd64$'\` ` +
      '(compare it with the release notes), or accept the weaker check explicitly with gitlabRunnerTrustReleaseChecksum=true.',
  );
}
