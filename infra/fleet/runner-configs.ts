/**
 * The two config files of the manager instance: gitlab-runner's config.toml (the custom executor
 * entry, whose token is filled in at boot from SSM) and runner-fleet's own config.toml.
 * Neither rendered text contains a secret.
 */

/** Stands in for the runner token in the rendered text; the boot script substitutes it. */
export const RUNNER_TOKEN_PLACEHOLDER = '__RUNNER_TOKEN__';

export interface GitlabRunnerConfigOptions {
  gitlabUrl: string;
  runnerName: string;
  concurrent: number;
  binPath: string;
  cacheBucket: string;
  region: string;
}

/** TOML basic string. */
export function tomlString(value: string | number): string {
  return JSON.stringify(String(value));
}

/** gitlab-runner's config.toml, with a placeholder where the boot script puts the token. */
export function renderGitlabRunnerConfig(o: GitlabRunnerConfigOptions): string {
  const hook = (stage: string) =>
    `    ${stage}_exec = ${tomlString(o.binPath)}\n    ${stage}_args = [${tomlString(stage)}]`;
  return `concurrent = ${o.concurrent}
check_interval = 3
shutdown_timeout = 0

[[runners]]
  name = ${tomlString(o.runnerName)}
  url = ${tomlString(o.gitlabUrl)}
  token = "${RUNNER_TOKEN_PLACEHOLDER}"
  executor = "custom"
  builds_dir = "/builds"
  cache_dir = "/cache"
  [runners.custom]
${['config', 'prepare', 'run', 'cleanup'].map(hook).join('\n')}
  [runners.cache]
    Type = "s3"
    Shared = true
    [runners.cache.s3]
      AuthenticationType = "iam"
      BucketName = ${tomlString(o.cacheBucket)}
      BucketLocation = ${tomlString(o.region)}
`;
}

export interface CredentialClassProfile {
  name: string;
  instanceProfileArn: string;
}

export interface FleetConfigOptions {
  fleetName: string;
  region: string;
  mode: 'asg' | 'fleet';
  maxInstances: number;
  maxInstanceLifetimeMinutes: number;
  launchTemplateId: string;
  autoScalingGroupName?: string;
  subnetIds: string[];
  gitlabUrl: string;
  defaultProfile: CredentialClassProfile;
  profiles: CredentialClassProfile[];
}

/**
 * runner-fleet's config.toml. The `[aws]` table mirrors what the stack created; credential rules
 * that pick a non-default profile are site policy and are added by ops (docs/credentials.example.toml).
 */
export function renderFleetConfig(o: FleetConfigOptions): string {
  const lines = [
    '# Rendered by infra/fleet/runner-configs.ts from the runner fleet stack.',
    `fleet_name = ${tomlString(o.fleetName)}`,
    'provider = "aws"',
    '',
    '[pool]',
    `max_instances = ${o.maxInstances}`,
    `max_instance_lifetime = ${tomlString(`${o.maxInstanceLifetimeMinutes}m`)}`,
    '',
    '[aws]',
    `region = ${tomlString(o.region)}`,
    `mode = ${tomlString(o.mode)}`,
    `launch_template_id = ${tomlString(o.launchTemplateId)}`,
    ...(o.autoScalingGroupName ? [`auto_scaling_group_name = ${tomlString(o.autoScalingGroupName)}`] : []),
    `subnets = [${o.subnetIds.map(tomlString).join(', ')}]`,
    '',
    '# Instance profiles the stack created, one per credential class.',
    ...o.profiles.map((p) => `# ${p.name}: ${p.instanceProfileArn}`),
    '[credentials]',
    `gitlab_url = ${tomlString(o.gitlabUrl)}`,
    'audience = "runner-fleet"',
    `default_profile = ${tomlString(o.defaultProfile.instanceProfileArn)}`,
    '',
  ];
  return lines.join('\n');
}
