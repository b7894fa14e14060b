/** The [aws] config section: the example documents every key, and mistakes name the key. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../manager/config/load.js';
import { awsConfigSchema } from '../../manager/providers/aws/config.js';
import { REPO_ROOT } from '../support/daemon.js';

const env = { HOME: '/tmp' };

describe('[aws] config', () => {
  it("config.example.toml's commented [aws] block is valid once uncommented and names every key", () => {
    const lines = readFileSync(join(REPO_ROOT, 'config.example.toml'), 'utf8').split('\n');
    const start = lines.indexOf('# [aws]');
    expect(start).toBeGreaterThan(0);
    const block = lines.slice(start);
    const body = block
      .filter((l) => l.startsWith('# ') && !l.startsWith('# #'))
      .map((l) => l.slice(2))
      .join('\n');
    const raw = (parse(body) as { aws: Record<string, unknown> }).aws;
    expect(() => awsConfigSchema.parse(raw)).not.toThrow();
    for (const key of Object.keys(awsConfigSchema.in.shape)) {
      expect(
        block.some((l) => new RegExp(`^# (# )?${key} = `).test(l)),
        key,
      ).toBe(true);
    }
  });

  it('provider = "aws" without [aws] is an error that names the section', () => {
    expect(() => parseConfigText('provider = "aws"\n', '/etc/rf.toml', env)).toThrow(/\[aws\] section/);
  });

  it('asg mode needs asg_name, fleet mode needs launch_template and subnets; unknown keys are refused', () => {
    expect(() =>
      parseConfigText('provider = "aws"\n[aws]\nregion = "eu-west-1"\nmode = "asg"\n', '/etc/rf.toml', env),
    ).toThrow(/asg_name/);
    expect(() =>
      parseConfigText('provider = "aws"\n[aws]\nregion = "eu-west-1"\nmode = "fleet"\n', '/etc/rf.toml', env),
    ).toThrow(/launch_template/);
    expect(() =>
      parseConfigText(
        'provider = "aws"\n[aws]\nregion = "eu-west-1"\nmode = "asg"\nasg_name = "g"\nsubnet = "x"\n',
        '/etc/rf.toml',
        env,
      ),
    ).toThrow(/unknown key "subnet"/);
  });

  it('fills the defaults ops expect', () => {
    const config = parseConfigText(
      'provider = "aws"\n[aws]\nregion = "eu-west-1"\nmode = "asg"\nasg_name = "jobs"\n',
      '/etc/rf.toml',
      env,
    );
    expect(config.aws).toMatchObject({
      ssh_user: 'ec2-user',
      ssh_port: 22,
      private_address: true,
      metadata_hop_limit: 1,
      market: 'on-demand',
      instance_profile: '',
      install_tools: false,
    });
    expect(config.aws?.on_demand_failover_codes).toContain('InsufficientInstanceCapacity');
    expect(config.aws?.max_instance_lifetime).toBeUndefined();
  });
});
