/**
 * The public entry: a Network Load Balancer with TLS 443 (ACM certificate), TCP 80 (answered by
 * a redirect to HTTPS on the instance) and TCP 22 (git over SSH). It has its own security group;
 * the instance's group admits traffic only from it.
 */
import { Annotations, CfnOutput, Stack, Token } from 'aws-cdk-lib';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as route53 from 'aws-cdk-lib/aws-route53';
import * as targets from 'aws-cdk-lib/aws-route53-targets';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { acknowledge } from '../shared/nag.js';
import { REDIRECT_PORT } from './gitlab-rb.js';

/** Instance ports behind the listeners. 8080 only answers with a redirect to HTTPS. */
export const INSTANCE_PORTS = { http: 80, httpRedirect: REDIRECT_PORT, ssh: 22 } as const;

export interface LoadBalancerProps {
  vpc: ec2.IVpc;
  domainName: string;
  certificateArn?: string;
  hostedZone?: { id: string; name: string };
  /** Names the stage's config keys in the DNS validation steps printed at synth. */
  stageName?: string;
  allowedCidr: string;
  accessLogs: s3.IBucket;
}

export class GitlabLoadBalancer extends Construct {
  readonly nlb: elbv2.NetworkLoadBalancer;
  readonly securityGroup: ec2.SecurityGroup;
  readonly targetGroups: elbv2.NetworkTargetGroup[];
  readonly certificate: acm.ICertificate;

  constructor(scope: Construct, id: string, props: LoadBalancerProps) {
    super(scope, id);
    const zone = props.hostedZone
      ? route53.HostedZone.fromHostedZoneAttributes(this, 'Zone', {
          hostedZoneId: props.hostedZone.id,
          zoneName: props.hostedZone.name,
        })
      : undefined;
    this.certificate = props.certificateArn
      ? acm.Certificate.fromCertificateArn(this, 'Certificate', props.certificateArn)
      : new acm.Certificate(this, 'Certificate', {
          domainName: props.domainName,
          // With a zone CloudFormation creates the validation record; without one the deploy
          // waits for it: synth prints the steps (dnsValidationSteps).
          validation: acm.CertificateValidation.fromDns(zone),
        });
    if (!props.certificateArn && !zone) {
      const region = Stack.of(this).region;
      Annotations.of(this.certificate).addWarningV2(
        'runner-fleet:certificate-dns-validation',
        dnsValidationSteps(
          props.domainName,
          Token.isUnresolved(region) ? '<region>' : region,
          props.stageName,
        ),
      );
    }

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'GitLab load balancer: HTTPS, HTTP and git over SSH from the allowed range',
      allowAllOutbound: false,
    });
    const clients = ec2.Peer.ipv4(props.allowedCidr);
    this.securityGroup.addIngressRule(clients, ec2.Port.tcp(443), 'HTTPS');
    this.securityGroup.addIngressRule(clients, ec2.Port.tcp(80), 'HTTP, redirected to HTTPS');
    this.securityGroup.addIngressRule(clients, ec2.Port.tcp(22), 'git over SSH');
    const publicEntry =
      'The public entry of the GitLab POC: HTTPS, HTTP (redirect) and git over SSH, which reaches ' +
      'gitlab-shell, not a login shell. Narrow it with the allowedCidr context value.';
    acknowledge(this.securityGroup, [
      { id: 'AwsSolutions-EC23', reason: publicEntry },
      { id: 'CloudFormation-Validate::W2508', reason: publicEntry },
    ]);

    this.nlb = new elbv2.NetworkLoadBalancer(this, 'Nlb', {
      vpc: props.vpc,
      internetFacing: true,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      securityGroups: [this.securityGroup],
      crossZoneEnabled: true,
    });
    this.nlb.logAccessLogs(props.accessLogs, 'nlb');

    const web = new elbv2.NetworkTargetGroup(this, 'Web', {
      vpc: props.vpc,
      port: INSTANCE_PORTS.http,
      protocol: elbv2.Protocol.TCP,
      targetType: elbv2.TargetType.INSTANCE,
      healthCheck: {
        protocol: elbv2.Protocol.HTTP,
        path: '/-/readiness',
        port: String(INSTANCE_PORTS.http),
        healthyHttpCodes: '200',
      },
    });
    const redirect = new elbv2.NetworkTargetGroup(this, 'HttpRedirect', {
      vpc: props.vpc,
      port: INSTANCE_PORTS.httpRedirect,
      protocol: elbv2.Protocol.TCP,
      targetType: elbv2.TargetType.INSTANCE,
    });
    const ssh = new elbv2.NetworkTargetGroup(this, 'GitSsh', {
      vpc: props.vpc,
      port: INSTANCE_PORTS.ssh,
      protocol: elbv2.Protocol.TCP,
      targetType: elbv2.TargetType.INSTANCE,
    });
    this.targetGroups = [web, redirect, ssh];

    this.nlb.addListener('Https', {
      port: 443,
      protocol: elbv2.Protocol.TLS,
      certificates: [elbv2.ListenerCertificate.fromCertificateManager(this.certificate)],
      sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
      defaultTargetGroups: [web],
    });
    this.nlb.addListener('Http', { port: 80, protocol: elbv2.Protocol.TCP, defaultTargetGroups: [redirect] });
    this.nlb.addListener('Ssh', { port: 22, protocol: elbv2.Protocol.TCP, defaultTargetGroups: [ssh] });

    // Stack-level outputs with fixed names: the pipeline's smoke test reads them from
    // `cdk deploy --outputs-file` and reaches GitLab through this load balancer even before DNS.
    new CfnOutput(Stack.of(this), 'GitlabUrl', {
      value: `https://${props.domainName}`,
      description: 'External URL of this GitLab',
    });
    new CfnOutput(Stack.of(this), 'LoadBalancerDnsName', {
      value: this.nlb.loadBalancerDnsName,
      description: `Point ${props.domainName} here (CNAME or alias) unless hostedZoneId is set`,
    });

    if (zone) {
      new route53.ARecord(this, 'Alias', {
        zone,
        recordName: props.domainName,
        target: route53.RecordTarget.fromAlias(new targets.LoadBalancerTarget(this.nlb)),
      });
    }
  }
}

/**
 * What an operator does while `cdk deploy` waits on a certificate without a hosted zone. The
 * record's name and value exist only once ACM has created the certificate, so these are the
 * commands that fetch them, not the record itself.
 */
export function dnsValidationSteps(domainName: string, region: string, stageName = '<stage>'): string {
  return [
    `No hostedZoneId for ${domainName}: the deploy creates the ACM certificate and then WAITS until ACM sees its DNS validation record (CloudFormation gives up after about 72 hours). While it waits:`,
    `  1. aws acm list-certificates --region ${region} --certificate-statuses PENDING_VALIDATION --query "CertificateSummaryList[?DomainName=='${domainName}'].CertificateArn" --output text`,
    `  2. aws acm describe-certificate --region ${region} --certificate-arn <ARN from step 1> --query "Certificate.DomainValidationOptions[0].ResourceRecord" --output table`,
    `  3. At the DNS provider of ${domainName}, create the CNAME record Name -> Value from step 2 (ACM console: Certificates > ${domainName} > Domains shows the same). ACM validates within minutes and the deploy continues. Keep the record: ACM renews with it.`,
    `  4. After the deploy, point ${domainName} at the stack output LoadBalancerDnsName (CNAME).`,
    `To skip the wait: set stages.${stageName}.hostedZoneId and hostedZoneName (validation and the alias record are automatic), or stages.${stageName}.certificateArn (an issued ACM certificate in ${region}, imported as is).`,
  ].join('\n');
}
