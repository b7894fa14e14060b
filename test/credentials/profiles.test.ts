/** iam-policy covers every profile the credential rules name, through the command and the config loader. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';
import { iamPolicyCommand } from '../../manager/commands/iam-policy.js';

const dirs: string[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** `runner-fleet iam-policy` for `config` in account 111111111111: exit code, stdout, stderr. */
async function iamPolicy(config: string): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    out += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    err += String(chunk);
    return true;
  });
  try {
    const code = await iamPolicyCommand({ config, account: '111111111111' } as Parameters<
      typeof iamPolicyCommand
    >[0]);
    return { code, out, err };
  } finally {
    vi.restoreAllMocks();
  }
}

it('derives PassRole and the profile switch from every rule, and warns about another account', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-iam-'));
  dirs.push(dir);
  const config = join(dir, 'config.toml');
  writeFileSync(
    config,
    `provider = "aws"
state_dir = "${dir}/state"
[aws]
region = "eu-central-1"
mode = "fleet"
launch_template = "lt-0123456789abcdef0"
subnets = ["subnet-0aaa1111"]
[credentials]
gitlab_url = "https://gitlab.example.com"
default_profile = "runner-fleet-default"
[[credentials.rule]]
name = "prod"
project_path = "platform/**"
instance_profile = "arn:aws:iam::111111111111:instance-profile/runner-fleet-prod-deploy"
[[credentials.rule]]
name = "other-account"
project_path = "other/**"
instance_profile = "arn:aws:iam::222222222222:instance-profile/elsewhere"
`,
  );
  const { code, out, err } = await iamPolicy(config);
  expect(code, err).toBe(0);
  const doc = JSON.parse(out) as {
    Statement: Array<{ Sid: string; Resource: unknown; Condition?: unknown }>;
  };
  const sid = (id: string) => doc.Statement.find((s) => s.Sid === id);
  expect(sid('PassJobRolesToEc2')?.Resource).toEqual([
    'arn:aws:iam::111111111111:role/runner-fleet-default',
    'arn:aws:iam::111111111111:role/runner-fleet-prod-deploy',
  ]);
  expect(JSON.stringify(sid('SwitchJobInstanceProfile')?.Condition)).toContain(
    'arn:aws:iam::111111111111:instance-profile/runner-fleet-default',
  );
  expect(JSON.stringify(sid('SwitchJobInstanceProfile')?.Condition)).toContain(
    'arn:aws:iam::111111111111:instance-profile/runner-fleet-prod-deploy',
  );
  // The foreign profile is named on stderr and granted nowhere.
  expect(err).toContain('arn:aws:iam::222222222222:instance-profile/elsewhere is in another account');
  expect(out).not.toContain('222222222222');
});

it('grants every profile of the shipped example rules, all of the manager account', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rf-iam-example-'));
  dirs.push(dir);
  const config = join(dir, 'config.toml');
  const example = readFileSync(new URL('../../docs/credentials.example.toml', import.meta.url), 'utf8');
  // The example's [credentials] section as an operator pastes it below an [aws] section.
  writeFileSync(
    config,
    `provider = "aws"
state_dir = "${dir}/state"
[aws]
region = "eu-central-1"
mode = "fleet"
launch_template = "lt-0123456789abcdef0"
subnets = ["subnet-0aaa1111"]
${example}`,
  );
  const profiles = [...example.matchAll(/^instance_profile = "([^"]+)"/gm)].map((m) => m[1] as string);
  expect(profiles.length).toBeGreaterThan(1);
  const { code, out, err } = await iamPolicy(config);
  expect(code, err).toBe(0);
  expect(err).not.toContain('another account');
  const doc = JSON.parse(out) as {
    Statement: Array<{ Sid: string; Resource: unknown; Condition?: unknown }>;
  };
  const sid = (id: string) => doc.Statement.find((s) => s.Sid === id);
  for (const profile of profiles) {
    const name = profile.split('/').pop() as string;
    expect(sid('PassJobRolesToEc2')?.Resource).toContain(`arn:aws:iam::111111111111:role/${name}`);
    expect(JSON.stringify(sid('SwitchJobInstanceProfile')?.Condition)).toContain(
      `arn:aws:iam::111111111111:instance-profile/${name}`,
    );
  }
});
