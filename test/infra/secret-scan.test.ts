/**
 * The template secret scan (secret-scan.ts) finds each kind of secret planted in a template and
 * stays quiet on what the app's templates legitimately hold: secret names, dynamic references,
 * files gitlab.rb reads, logical ids, hex digests. The scans of the synthesized apps are in
 * app.test.ts (POC) and ha-stack.test.ts (3k).
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { renderHaBootScript } from '../../infra/gitlab/ha/boot-scripts.js';
import { looksRandom, scanTemplate } from './secret-scan.js';

/** A token shaped like Secrets Manager's (64 letters and digits), fixed so the test is repeatable. */
const TOKEN = createHash('sha512')
  .update('runner-fleet secret scan')
  .digest('base64')
  .replace(/[^A-Za-z0-9]/g, '')
  .slice(0, 64);

const launchTemplate = (userData: string) => ({
  Resources: {
    RailsGroupASG56C98E22: { Type: 'AWS::AutoScaling::AutoScalingGroup', Properties: {} },
    Lt: {
      Type: 'AWS::EC2::LaunchTemplate',
      Properties: { LaunchTemplateData: { UserData: { 'Fn::Base64': { 'Fn::Join': ['', [userData]] } } } },
    },
  },
});
const rules = (template: object) => scanTemplate('T', template).map((f) => f.rule);

describe('template secret scan', () => {
  it('finds a generated token, a literal password, keys and GitLab tokens in user data', () => {
    expect(rules(launchTemplate(`echo ${TOKEN} > /etc/gitlab/secrets/x\n`))).toEqual(['random-token']);
    expect(rules(launchTemplate("gitlab_rails['db_password'] = 'hunter2hunter2'\n"))).toContain(
      'literal-assignment',
    );
    expect(rules(launchTemplate('export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n'))).toContain(
      'aws-access-key',
    );
    expect(rules(launchTemplate('-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n'))).toContain('private-key');
    expect(rules(launchTemplate('gitlab-runner register --token glrt-t1_AbCdEfGhIjKlMnOpQrSt\n'))).toContain(
      'gitlab-token',
    );
  });

  it('finds a literal secret value and a credential property without a dynamic reference', () => {
    const secret = {
      Resources: { S: { Type: 'AWS::SecretsManager::Secret', Properties: { SecretString: 'x' } } },
    };
    expect(rules(secret)).toEqual(['secret-value']);
    const db = {
      Resources: {
        Db: { Type: 'AWS::RDS::DBInstance', Properties: { MasterUserPassword: 'correct-horse-battery' } },
      },
    };
    expect(rules(db)).toContain('credential-property');
    db.Resources.Db.Properties.MasterUserPassword = '{{resolve:secretsmanager:arn:SecretString:password::}}';
    expect(rules(db)).toEqual([]);
  });

  it("is quiet on a real node's boot script: secret ARNs, files, the signal's logical id", () => {
    const script = renderHaBootScript({
      role: 'praefect',
      region: 'eu-west-1',
      gitlabRb:
        "praefect['configuration'] = { auth: { token: File.read('/etc/gitlab/secrets/praefect-external-token').strip } }\n",
      edition: 'gitlab-ee',
      version: '18.2.1-ee.0',
      secrets: Object.fromEntries(
        ['praefectExternalToken', 'praefectInternalToken', 'praefectDbPassword'].map((k) => [
          k,
          { arn: `arn:aws:secretsmanager:eu-west-1:222222222222:secret:${k}-AbC123`, jsonKey: 'password' },
        ]),
      ),
      signal: { stackName: 'Dev-GitLab', logicalId: 'RailsGroupASG56C98E22' },
    });
    expect(scanTemplate('T', launchTemplate(script))).toEqual([]);
    // The same script with the token written into it instead of read from a file.
    expect(
      rules(
        launchTemplate(
          script.replace("File.read('/etc/gitlab/secrets/praefect-external-token').strip", `'${TOKEN}'`),
        ),
      ),
    ).toContain('random-token');
  });

  it('tells random text from identifiers and digests', () => {
    expect(looksRandom(TOKEN)).toBe(true);
    for (const name of [
      'EC2InstanceProfileForImageBuilder',
      createHash('sha256').update('asset').digest('hex'),
      'ELBSecurityPolicyTLS13122021',
    ])
      expect(looksRandom(name), name).toBe(false);
  });
});
