/**
 * Turns a launch template's UserData (Fn::Base64 of an Fn::Join of text and references) into the
 * text an instance would receive, with plausible values in place of what CloudFormation fills in
 * at deploy time: launch template ids, subnet ids, bucket names, instance profile ARNs. Any
 * reference it does not know fails the test, so a new kind of token cannot slip through unread.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Template } from 'aws-cdk-lib/assertions';
import type { Json } from './synth.js';

export interface DeployValues {
  region: string;
  account: string;
}

/** Stable fake ids derived from the logical id, so two resources of a type get two values. */
function hex(seed: string, length: number): string {
  let h = 2166136261;
  let out = '';
  while (out.length < length) {
    for (const ch of seed + out.length) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
    out += h.toString(16).padStart(8, '0');
  }
  return out.slice(0, length);
}

export function resolveIntrinsics(value: Json, template: Template, env: DeployValues): string {
  const resources = template.toJSON().Resources as Record<string, { Type: string; Properties?: Json }>;
  const ref = (id: string): string => {
    if (id === 'AWS::Region') return env.region;
    if (id === 'AWS::AccountId') return env.account;
    if (id === 'AWS::Partition') return 'aws';
    if (id === 'AWS::URLSuffix') return 'amazonaws.com';
    const resource = resources[id];
    if (!resource) throw new Error(`unknown reference ${id}`);
    switch (resource.Type) {
      case 'AWS::EC2::LaunchTemplate':
        return `lt-${hex(id, 17)}`;
      case 'AWS::EC2::Subnet':
        return `subnet-${hex(id, 17)}`;
      case 'AWS::EC2::Volume':
        return `vol-${hex(id, 17)}`;
      case 'AWS::S3::Bucket':
        return `stack-${id.toLowerCase().slice(0, 20)}-${hex(id, 12)}`;
      case 'AWS::Logs::LogGroup':
        return resource.Properties?.LogGroupName ?? `/aws/${id}`;
      case 'AWS::AutoScaling::AutoScalingGroup':
        return resource.Properties?.AutoScalingGroupName ?? `stack-${id}-${hex(id, 12)}`;
      case 'AWS::SecretsManager::Secret':
      case 'AWS::SecretsManager::SecretTargetAttachment':
        return `arn:aws:secretsmanager:${env.region}:${env.account}:secret:${id}-${hex(id, 6)}`;
      case 'AWS::SSM::Parameter':
        return resource.Properties?.Name ?? `/stack/${id}`;
      default:
        throw new Error(`no deploy-time value for Ref ${id} (${resource.Type})`);
    }
  };
  const getAtt = (id: string, attribute: string): string => {
    const resource = resources[id];
    if (!resource) throw new Error(`unknown reference ${id}.${attribute}`);
    if (resource.Type === 'AWS::IAM::InstanceProfile' && attribute === 'Arn')
      return `arn:aws:iam::${env.account}:instance-profile/${id}-${hex(id, 8)}`;
    if (resource.Type === 'AWS::IAM::Role' && attribute === 'Arn')
      return `arn:aws:iam::${env.account}:role/${id}-${hex(id, 8)}`;
    if (resource.Type === 'AWS::RDS::DBInstance' && attribute === 'Endpoint.Address')
      return `${id.toLowerCase()}.${hex(id, 12)}.${env.region}.rds.amazonaws.com`;
    if (resource.Type === 'AWS::RDS::DBInstance' && attribute === 'Endpoint.Port') return '5432';
    if (resource.Type === 'AWS::ElastiCache::ReplicationGroup' && attribute === 'PrimaryEndPoint.Address')
      return `master.${id.toLowerCase()}.${hex(id, 6)}.euw1.cache.amazonaws.com`;
    if (resource.Type === 'AWS::ElastiCache::ReplicationGroup' && attribute === 'PrimaryEndPoint.Port')
      return '6379';
    if (resource.Type === 'AWS::S3::Bucket' && attribute === 'Arn') return `arn:aws:s3:::${ref(id)}`;
    throw new Error(`no deploy-time value for ${id}.${attribute} (${resource.Type})`);
  };
  const walk = (v: Json): string => {
    if (typeof v === 'string') return v;
    if (typeof v === 'number') return String(v);
    if (v && typeof v === 'object') {
      if ('Ref' in v) return ref(v.Ref);
      if ('Fn::GetAtt' in v) return getAtt(v['Fn::GetAtt'][0], v['Fn::GetAtt'][1]);
      if ('Fn::Join' in v) return (v['Fn::Join'][1] as Json[]).map(walk).join(v['Fn::Join'][0]);
      if ('Fn::Base64' in v) return walk(v['Fn::Base64']);
      // Cross-stack references: an export, or (weak references) another stack's output.
      if ('Fn::ImportValue' in v || 'Fn::GetStackOutput' in v) {
        const name = JSON.stringify(v['Fn::ImportValue'] ?? v['Fn::GetStackOutput'].OutputName);
        if (/Subnet/.test(name)) return `subnet-${hex(name, 17)}`;
        if (/Vpc/.test(name)) return `vpc-${hex(name, 17)}`;
        throw new Error(`no deploy-time value for import ${name}`);
      }
    }
    throw new Error(`cannot resolve ${JSON.stringify(v)}`);
  };
  return walk(value);
}

/** The user data text of the launch template whose logical id starts with `prefix`. */
export function userDataOf(template: Template, prefix: string, env: DeployValues): string {
  const entries = Object.entries(template.findResources('AWS::EC2::LaunchTemplate'));
  const found = entries.find(([id]) => id.startsWith(prefix));
  if (!found) throw new Error(`no launch template ${prefix}* in the template`);
  return resolveIntrinsics((found[1] as Json).Properties.LaunchTemplateData.UserData, template, env);
}

/** The body of the quoted heredoc that writes `path` (`cat > path <<'EOF'`). */
export function heredoc(script: string, path: string): string {
  const m = new RegExp(`> ${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} <<'(\\w+)'\\n`).exec(script);
  if (!m) throw new Error(`the script writes no heredoc to ${path}`);
  const start = m.index + m[0].length;
  const end = script.indexOf(`\n${m[1]}\n`, start - 1);
  if (end < 0) throw new Error(`unterminated heredoc ${m[1]} for ${path}`);
  return script.slice(start, end + 1);
}

/** `bash -n`: the script parses. Throws with bash's own message otherwise. */
export function bashSyntaxCheck(script: string): void {
  const dir = mkdtempSync(join(tmpdir(), 'rf-userdata-'));
  try {
    const file = join(dir, 'user-data.sh');
    writeFileSync(file, script);
    execFileSync('bash', ['-n', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
