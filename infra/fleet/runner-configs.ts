/**
 * runner-fleet's own config.toml for the manager instance, rendered from what the fleet stack
 * created. gitlab-runner's config.toml is not rendered here: the boot script runs
 * `runner-fleet runner-config --write`, so the [[runners]] entry (hook paths, `--socket`,
 * timeouts, S3 cache, the token read from SSM) comes from the same code an operator runs by hand.
 * The rendered text holds no secret.
 */

/** Where the daemon serves /metrics and /healthz on the manager (loopback only). */
export const MANAGER_METRICS_LISTEN = '127.0.0.1:9402';

/** TOML basic string. */
export function tomlString(value: string | number): string {
  return JSON.stringify(String(value));
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
  /** `fleet` mode launches from this template; in `asg` mode the group's own template is used. */
  launchTemplateId: string;
  /** Required in `asg` mode. */
  autoScalingGroupName?: string;
  subnetIds: string[];
  gitlabUrl: string;
  /** SSM SecureString with the runner authentication token (read by `runner-config --write`). */
  runnerTokenParameter: string;
  cacheBucket: string;
  defaultProfile: CredentialClassProfile;
  profiles: CredentialClassProfile[];
}

/**
 * runner-fleet's config.toml, in the daemon's own keys (manager/config/schema.ts). Credential rules
 * that pick a non-default profile are site policy and are added by ops (docs/security.md).
 */
export function renderFleetConfig(o: FleetConfigOptions): string {
  if (o.mode === 'asg' && !o.autoScalingGroupName) throw new Error('asg mode needs the job group name');
  const aws =
    o.mode === 'asg'
      ? [`asg_name = ${tomlString(o.autoScalingGroupName!)}`]
      : [
          `launch_template = ${tomlString(o.launchTemplateId)}`,
          `subnets = [${o.subnetIds.map(tomlString).join(', ')}]`,
        ];
  const lines = [
    '# Rendered by infra/fleet/runner-configs.ts from the runner fleet stack.',
    `fleet_name = ${tomlString(o.fleetName)}`,
    'provider = "aws"',
    '',
    '[pool]',
    `max_instances = ${o.maxInstances}`,
    `max_instance_lifetime = ${tomlString(`${o.maxInstanceLifetimeMinutes}m`)}`,
    // No lease outlives the instance's dead-man switch.
    `max_job_lifetime = ${tomlString(`${o.maxInstanceLifetimeMinutes}m`)}`,
    '',
    '[aws]',
    `region = ${tomlString(o.region)}`,
    `mode = ${tomlString(o.mode)}`,
    ...aws,
    `instance_profile = ${tomlString(o.defaultProfile.instanceProfileArn)}`,
    '',
    '[gitlab]',
    `url = ${tomlString(o.gitlabUrl)}`,
    `runner_token_parameter = ${tomlString(o.runnerTokenParameter)}`,
    '',
    '[cache]',
    `bucket = ${tomlString(o.cacheBucket)}`,
    `region = ${tomlString(o.region)}`,
    '',
    '# /healthz and /metrics for the health check timer and a Prometheus scraper on this host.',
    '[metrics]',
    `listen = ${tomlString(MANAGER_METRICS_LISTEN)}`,
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
