/**
 * What a first deploy meets before anything runs: a certificate without a hosted zone (synth
 * prints the exact steps to fetch and create the validation record) and an unpinned gitlab-runner
 * download (synth refuses it unless the operator opts out by name).
 */
import { Stack } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/app.js';
import { readInfraConfig, requireRunnerChecksum } from '../../infra/config.js';
import { dnsValidationSteps, GitlabLoadBalancer } from '../../infra/gitlab/load-balancer.js';
import { appWithContext, cdkJson } from './cdk-context.js';

function loadBalancer(extra: { hostedZone?: { id: string; name: string }; certificateArn?: string }) {
  const app = appWithContext();
  const stack = new Stack(app, 'Lb', { env: { account: '222222222222', region: 'eu-west-1' } });
  new GitlabLoadBalancer(stack, 'LoadBalancer', {
    vpc: new ec2.Vpc(stack, 'Vpc', { maxAzs: 2, natGateways: 0 }),
    domainName: 'gitlab.dev.example.com',
    stageName: 'dev',
    allowedCidr: '0.0.0.0/0',
    accessLogs: new s3.Bucket(stack, 'Logs'),
    ...extra,
  });
  return stack;
}

const STEP = Match.stringLikeRegexp('aws acm describe-certificate');

describe('certificate without a hosted zone', () => {
  it('prints at synth the exact commands that fetch the validation CNAME, for this host and region', () => {
    const stack = loadBalancer({});
    const warnings = Annotations.fromStack(stack).findWarning('*', STEP);
    expect(warnings).toHaveLength(1);
    const text = String(warnings[0]!.entry.data);
    expect(warnings[0]!.id).toBe('/Lb/LoadBalancer/Certificate');
    // CDK appends the warning's acknowledgement id after the text.
    expect(text.startsWith(dnsValidationSteps('gitlab.dev.example.com', 'eu-west-1', 'dev'))).toBe(true);
    expect(text).toContain(
      `aws acm list-certificates --region eu-west-1 --certificate-statuses PENDING_VALIDATION --query "CertificateSummaryList[?DomainName=='gitlab.dev.example.com'].CertificateArn" --output text`,
    );
    expect(text).toContain(
      'aws acm describe-certificate --region eu-west-1 --certificate-arn <ARN from step 1> --query "Certificate.DomainValidationOptions[0].ResourceRecord"',
    );
    expect(text).toMatch(/stages\.dev\.hostedZoneId .*stages\.dev\.certificateArn/s);
    Template.fromStack(stack).hasResourceProperties('AWS::CertificateManager::Certificate', {
      DomainName: 'gitlab.dev.example.com',
      ValidationMethod: 'DNS',
    });
  });

  it('says nothing with a hosted zone: CloudFormation creates the record and the alias', () => {
    const stack = loadBalancer({ hostedZone: { id: 'Z0123456789ABCDEFGHIJ', name: 'example.com' } });
    expect(Annotations.fromStack(stack).findWarning('*', STEP)).toEqual([]);
    const template = Template.fromStack(stack);
    template.hasResourceProperties('AWS::CertificateManager::Certificate', {
      DomainValidationOptions: [
        { DomainName: 'gitlab.dev.example.com', HostedZoneId: 'Z0123456789ABCDEFGHIJ' },
      ],
    });
    template.resourceCountIs('AWS::Route53::RecordSet', 1);
  });

  it('with certificateArn imports the certificate: nothing to validate, nothing printed', () => {
    const arn = 'arn:aws:acm:eu-west-1:222222222222:certificate/0f0e0d0c-0b0a-0908-0706-050403020100';
    const stack = loadBalancer({ certificateArn: arn });
    expect(Annotations.fromStack(stack).findWarning('*', STEP)).toEqual([]);
    const template = Template.fromStack(stack);
    template.resourceCountIs('AWS::CertificateManager::Certificate', 0);
    template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 443,
      Certificates: [{ CertificateArn: arn }],
    });
  });
});

describe('certificate steps in the plain `cdk synth` output', () => {
  it('are on the top-level stack of each stage without a zone or certificate, and only there', () => {
    const arn = 'arn:aws:acm:eu-west-1:333333333333:certificate/0f0e0d0c-0b0a-0908-0706-050403020100';
    const app = buildApp(
      appWithContext({
        stages: {
          dev: { domainName: 'gitlab.dev.example.com', fleetName: 'ci-dev' },
          prod: { domainName: 'gitlab.example.com', fleetName: 'ci', certificateArn: arn },
        },
      }),
    );
    const warningsOf = (id: string) =>
      Annotations.fromStack(app.node.findChild(id) as Stack).findWarning('*', STEP);
    const dev = warningsOf('RunnerFleet-Dev-DeployTarget');
    expect(dev).toHaveLength(1);
    expect(String(dev[0]!.entry.data)).toContain(
      dnsValidationSteps('gitlab.dev.example.com', 'eu-west-1', 'dev'),
    );
    expect(warningsOf('RunnerFleet-Prod-DeployTarget')).toEqual([]);
  });
});

describe('gitlab-runner download verification', () => {
  const base = (extra: Record<string, unknown>) =>
    readInfraConfig((key) => ({ gitlabRunnerVersion: '18.2.0', ...extra })[key]).fleet;

  it('refuses neither a pinned checksum nor the explicit opt-out, saying how to get the checksum', () => {
    expect(() => requireRunnerChecksum(base({}))).toThrow(
      /gitlabRunnerSha256 is unset: the gitlab-runner 18\.2\.0 download .*curl -fsSL https:\/\/gitlab-runner-downloads\.s3\.amazonaws\.com\/v18\.2\.0\/release\.sha256 .* gitlabRunnerTrustReleaseChecksum=true/,
    );
    expect(() => requireRunnerChecksum(base({ gitlabRunnerTrustReleaseChecksum: false }))).toThrow(/unset/);
  });

  it('accepts a pinned checksum, or the opt-out by name', () => {
    expect(() => requireRunnerChecksum(base({ gitlabRunnerSha256: 'ab'.repeat(32) }))).not.toThrow();
    expect(() => requireRunnerChecksum(base({ gitlabRunnerTrustReleaseChecksum: true }))).not.toThrow();
    expect(() => requireRunnerChecksum(base({ gitlabRunnerTrustReleaseChecksum: 'true' }))).not.toThrow();
  });

  it('is enforced by the app itself (cdk synth), and cdk.json makes the choice visibly', () => {
    expect(cdkJson.context.gitlabRunnerTrustReleaseChecksum).toBe(true);
    expect(() => buildApp(appWithContext({ gitlabRunnerTrustReleaseChecksum: false }))).toThrow(
      /gitlabRunnerSha256 is unset/,
    );
  });
});
