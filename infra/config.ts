/**
 * Everything the app needs to know about the target environment, read once from CDK context
 * (`cdk.json` or `-c key=value`) and validated here. Defaults let `cdk synth` run offline with no
 * credentials; real deployments override them in cdk.json or on the command line.
 */
import { type HaSize, haSize, SIZE_NAMES, type SizeName } from './gitlab/ha/sizes.js';
import { type SizingName, sizing } from './sizing.js';

export interface AccountIds {
  /** Hosts the GitLab OIDC provider and the pipeline roles. */
  devops: string;
  dev: string;
  prod: string;
}

export interface InfraConfig {
  region: string;
  accounts: AccountIds;
  /** Host name of the POC GitLab, e.g. gitlab.example.com. */
  domainName: string;
  /** Import an existing ACM certificate instead of requesting one. */
  certificateArn?: string;
  /** Public hosted zone for DNS validation and the alias record (no lookup: id and name given). */
  hostedZone?: { id: string; name: string };
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
  gitlabVersion?: string;
  pipeline: {
    /** Issuer of the ID tokens: the GitLab that runs this repository's pipelines. */
    gitlabUrl: string;
    audience: string;
    /** `group/project` of this repository. */
    projectPath: string;
    /** The one protected branch allowed to deploy to production. */
    productionBranch: string;
    /** CDK bootstrap qualifier of the Dev and Prod accounts. */
    cdkQualifier: string;
  };
  fleet: {
    name: string;
    mode: 'asg' | 'fleet';
    /** SSM SecureString holding the runner authentication token, created outside CloudFormation. */
    runnerTokenParameter: string;
    cacheExpiryDays: number;
    maxJobInstances: number;
    jobInstanceType: string;
    managerInstanceType: string;
    /** Dead-man switch: a job instance powers off (and so terminates) after this long. */
    jobMaxLifetimeMinutes: number;
    /** npm package spec installed on the manager (a registry name, tarball URL or S3 presigned URL). */
    packageSpec: string;
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

  const domainName = str('domainName', 'gitlab.example.com');
  const zoneId = optional('hostedZoneId');
  const natGateways = int('natGateways', 1);
  if (natGateways !== 1 && natGateways !== 2) throw new Error('context natGateways must be 1 or 2');
  const sizingName = str('sizing', '1k');
  sizing(sizingName);
  const size = oneOf('size', SIZE_NAMES, 'poc');
  const overrides = context('sizeOverrides');
  const hasOverrides = overrides !== undefined && overrides !== null && overrides !== '';
  if (hasOverrides && size !== '3k') throw new Error('context sizeOverrides applies to size=3k only');
  const fleetName = str('fleetName', 'ci');
  if (!/^[a-z0-9-]{1,32}$/.test(fleetName)) throw new Error('context fleetName must match [a-z0-9-]{1,32}');

  const region = str('region', 'eu-west-1');

  return {
    region,
    accounts: {
      devops: account('devopsAccount', '111111111111'),
      dev: account('devAccount', '222222222222'),
      prod: account('prodAccount', '333333333333'),
    },
    domainName,
    certificateArn: optional('certificateArn'),
    hostedZone: zoneId ? { id: zoneId, name: str('hostedZoneName', domainName) } : undefined,
    natGateways,
    size,
    ha: haSize(hasOverrides ? overrides : {}),
    sizing: sizingName as SizingName,
    multiAz: bool('multiAz', false),
    allowedCidr: str('allowedCidr', '0.0.0.0/0'),
    gitlabEdition: oneOf('gitlabEdition', ['gitlab-ee', 'gitlab-ce'], 'gitlab-ee'),
    gitlabVersion: optional('gitlabVersion'),
    pipeline: {
      gitlabUrl: str('pipelineGitlabUrl', `https://${domainName}`).replace(/\/+$/, ''),
      audience: str('pipelineAudience', 'sts.amazonaws.com'),
      projectPath: str('pipelineProjectPath', 'ops/runner-fleet'),
      productionBranch: str('productionBranch', 'main'),
      cdkQualifier: str('cdkQualifier', 'hnb659fds'),
    },
    fleet: {
      name: fleetName,
      mode: oneOf('fleetMode', ['asg', 'fleet'], 'asg'),
      runnerTokenParameter: str('runnerTokenParameter', `/runner-fleet/${fleetName}/runner-token`),
      cacheExpiryDays: int('cacheExpiryDays', 14),
      maxJobInstances: int('maxJobInstances', 20),
      jobInstanceType: str('jobInstanceType', 'm7i.large'),
      managerInstanceType: str('managerInstanceType', 't3.small'),
      jobMaxLifetimeMinutes: int('jobMaxLifetimeMinutes', 240),
      packageSpec: str('runnerFleetPackage', 'runner-fleet'),
    },
  };
}
