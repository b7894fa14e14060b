/**
 * One rule decides the instance profile a job runs under, applied by the daemon's own config
 * loader: the matching rule's instance_profile, else [credentials] default_profile, else [aws]
 * instance_profile, else none. The job log line must name the profile actually used.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../../manager/config/load.js';
import { selectCredentials } from '../../manager/credentials/select.js';

const env = { HOME: '/tmp' };
const AWS = `[aws]
region = "eu-west-1"
mode = "fleet"
launch_template = "lt-0123456789abcdef0"
subnets = ["subnet-0123456789abcdef0"]
`;

function jobWithoutRule(toml: string) {
  const config = parseConfigText(toml, '/etc/runner-fleet/config.toml', env);
  return selectCredentials(config.credentials, undefined);
}

describe('instance profile precedence', () => {
  it('[aws] instance_profile alone: jobs run under it and the log says so (not "none")', () => {
    const selection = jobWithoutRule(`provider = "aws"\n${AWS}instance_profile = "runner-fleet-ci"\n`);
    expect(selection.instanceProfile).toBe('runner-fleet-ci');
    expect(selection.logLine).toBe(
      'Credentials: no ID token; using the default profile (runner-fleet-ci, from [aws] instance_profile)',
    );
  });

  it('[credentials] default_profile wins over [aws] instance_profile', () => {
    const selection = jobWithoutRule(
      `provider = "aws"\n[credentials]\ndefault_profile = "ci-least"\n${AWS}instance_profile = "runner-fleet-ci"\n`,
    );
    expect(selection.instanceProfile).toBe('ci-least');
    expect(selection.logLine).toBe('Credentials: no ID token; using the default profile (ci-least)');
  });

  it('neither set: none', () => {
    const selection = jobWithoutRule(`provider = "aws"\n${AWS}`);
    expect(selection.instanceProfile).toBeUndefined();
    expect(selection.logLine).toBe('Credentials: no ID token; using the default profile (none)');
  });

  it('the local provider ignores an [aws] instance_profile it never launches with', () => {
    const selection = jobWithoutRule(`provider = "local"\n${AWS}instance_profile = "runner-fleet-ci"\n`);
    expect(selection.instanceProfile).toBeUndefined();
  });
});
