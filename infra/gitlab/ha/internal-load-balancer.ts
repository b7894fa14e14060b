/**
 * The internal load balancer of the 3k layout: Praefect (TCP 2305) for Rails, Sidekiq and Gitaly,
 * and the Rails internal API (TCP 80) for Gitaly and Praefect. Internal only, in the private
 * subnets, with its own security group; targets see the load balancer, not the client (client IP
 * preservation off), so their groups admit only this group and no node reaches itself through it.
 */
import { Duration } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { PORTS } from './role-gitlab-rb.js';

export const INTERNAL_API_PORT = 80;

export interface InternalLoadBalancerProps {
  vpc: ec2.IVpc;
  accessLogs: s3.IBucket;
}

export class InternalLoadBalancer extends Construct {
  readonly nlb: elbv2.NetworkLoadBalancer;
  readonly securityGroup: ec2.SecurityGroup;
  readonly praefect: elbv2.NetworkTargetGroup;
  readonly internalApi: elbv2.NetworkTargetGroup;

  constructor(scope: Construct, id: string, props: InternalLoadBalancerProps) {
    super(scope, id);
    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'GitLab internal load balancer: Praefect and the Rails internal API, from the nodes only',
      allowAllOutbound: false,
    });
    this.nlb = new elbv2.NetworkLoadBalancer(this, 'Nlb', {
      vpc: props.vpc,
      internetFacing: false,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      crossZoneEnabled: true,
    });
    this.nlb.logAccessLogs(props.accessLogs, 'internal-nlb');

    this.praefect = new elbv2.NetworkTargetGroup(this, 'Praefect', {
      vpc: props.vpc,
      port: PORTS.praefect,
      protocol: elbv2.Protocol.TCP,
      targetType: elbv2.TargetType.INSTANCE,
      preserveClientIp: false,
      healthCheck: { protocol: elbv2.Protocol.TCP, interval: Duration.seconds(10) },
      // Praefect connections are long-lived gRPC streams: give them time to finish on a rolling update.
      deregistrationDelay: Duration.seconds(60),
    });
    this.internalApi = new elbv2.NetworkTargetGroup(this, 'InternalApi', {
      vpc: props.vpc,
      port: INTERNAL_API_PORT,
      protocol: elbv2.Protocol.TCP,
      targetType: elbv2.TargetType.INSTANCE,
      preserveClientIp: false,
      healthCheck: {
        protocol: elbv2.Protocol.HTTP,
        path: '/-/readiness',
        port: String(INTERNAL_API_PORT),
        healthyHttpCodes: '200',
      },
    });
    this.nlb.addListener('PraefectListener', {
      port: PORTS.praefect,
      protocol: elbv2.Protocol.TCP,
      defaultTargetGroups: [this.praefect],
    });
    this.nlb.addListener('InternalApiListener', {
      port: INTERNAL_API_PORT,
      protocol: elbv2.Protocol.TCP,
      defaultTargetGroups: [this.internalApi],
    });
  }

  get praefectAddress(): string {
    return `tcp://${this.nlb.loadBalancerDnsName}:${PORTS.praefect}`;
  }

  get internalApiUrl(): string {
    return `http://${this.nlb.loadBalancerDnsName}`;
  }
}
