// EC2 over the `ec2` query protocol: form-encoded requests with flattened lists
// (`InstanceId.1`, `Filter.1.Value.1`, `TagSpecification.1.Tag.1.Key`) and XML answers whose lists
// are `<xxxSet><item>`. Element names follow the SDK's own schema (xmlName traits) for API 2016-11-15.

import { createHash, randomUUID } from 'node:crypto';
import { AwsError } from './errors.js';
import { bool, list, num, obj, type QNode, type QObject, str, strList } from './query.js';
import {
  type BlockDeviceMapping,
  DEFAULT_VPC,
  dedupeTags,
  type FakeInstance,
  type IamAssociation,
  type LaunchSpec,
  type LaunchTemplate,
  type LaunchTemplateData,
  type Market,
  type MetadataOptions,
  STATE_CODES,
  type Tag,
  type World,
} from './world.js';
import { ec2List, el, esc, wrap, XML_DECL } from './xml.js';

export const EC2_XMLNS = 'http://ec2.amazonaws.com/doc/2016-11-15/';

export function ec2Response(action: string, requestId: string, inner: string): string {
  return `${XML_DECL}<${action}Response xmlns="${EC2_XMLNS}"><requestId>${requestId}</requestId>${inner}</${action}Response>`;
}

export function ec2ErrorBody(err: AwsError, requestId: string): string {
  // EC2 spells it RequestID here, unlike every other service.
  return `${XML_DECL}<Response><Errors><Error><Code>${esc(err.code)}</Code><Message>${esc(err.message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`;
}

type Handler = (world: World, p: QObject, flat: Record<string, string>) => string;

export const ec2Actions: Record<string, Handler> = {
  RunInstances: runInstances,
  CreateFleet: createFleet,
  DescribeInstances: describeInstances,
  TerminateInstances: terminateInstances,
  CreateTags: createTags,
  DeleteTags: deleteTags,
  DescribeInstanceStatus: describeInstanceStatus,
  AssociateIamInstanceProfile: associateIamInstanceProfile,
  ReplaceIamInstanceProfileAssociation: replaceIamInstanceProfileAssociation,
  DescribeIamInstanceProfileAssociations: describeIamInstanceProfileAssociations,
  DescribeLaunchTemplateVersions: describeLaunchTemplateVersions,
  CreateLaunchTemplateVersion: createLaunchTemplateVersion,
  DeleteLaunchTemplateVersions: deleteLaunchTemplateVersions,
  ModifyInstanceMetadataOptions: modifyInstanceMetadataOptions,
};

// ------------------------------------------------------------------ request parsing

function tagsOf(node: QNode | undefined, key: string): Tag[] {
  return list(node, key).map((t) => ({ Key: str(t, 'Key') ?? '', Value: str(t, 'Value') ?? '' }));
}

function instanceTagsFromSpecs(specs: QNode[]): Tag[] {
  const out: Tag[] = [];
  for (const spec of specs) {
    const type = str(spec, 'ResourceType');
    if (!type)
      throw new AwsError(
        'MissingParameter',
        'The request must contain the parameter tagSpecification.resourceType',
      );
    if (type === 'instance') out.push(...tagsOf(spec, 'Tag'));
  }
  return out;
}

function checkUserTags(tags: Tag[]): void {
  for (const t of tags) {
    if (t.Key.toLowerCase().startsWith('aws:')) {
      throw new AwsError(
        'InvalidParameterValue',
        "Tag keys starting with 'aws:' are reserved for internal use",
      );
    }
    if (t.Key.length === 0 || t.Key.length > 128) {
      throw new AwsError('InvalidParameterValue', `Tag key must be between 1 and 128 characters: '${t.Key}'`);
    }
    if (t.Value.length > 256) throw new AwsError('InvalidParameterValue', 'Tag value exceeds 256 characters');
  }
}

function metadataOptionsOf(node: QObject | undefined): MetadataOptions | undefined {
  if (!node) return undefined;
  return {
    HttpTokens: str(node, 'HttpTokens'),
    HttpPutResponseHopLimit: num(node, 'HttpPutResponseHopLimit'),
    HttpEndpoint: str(node, 'HttpEndpoint'),
    InstanceMetadataTags: str(node, 'InstanceMetadataTags'),
  };
}

function blockDeviceMappingsOf(items: QNode[]): BlockDeviceMapping[] {
  return items.map((b) => {
    const ebs = obj(b, 'Ebs');
    return {
      DeviceName: str(b, 'DeviceName'),
      Ebs: ebs
        ? {
            VolumeSize: num(ebs, 'VolumeSize'),
            VolumeType: str(ebs, 'VolumeType'),
            Encrypted: bool(ebs, 'Encrypted'),
            DeleteOnTermination: bool(ebs, 'DeleteOnTermination'),
            KmsKeyId: str(ebs, 'KmsKeyId'),
            Iops: num(ebs, 'Iops'),
            Throughput: num(ebs, 'Throughput'),
            SnapshotId: str(ebs, 'SnapshotId'),
          }
        : undefined,
    };
  });
}

function merged<T extends object>(base: T | undefined, over: T | undefined): T | undefined {
  if (!base) return over;
  if (!over) return base;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) if (v !== undefined) out[k] = v;
  return out as T;
}

/** A stable fingerprint of a launch request, so a reused ClientToken with other parameters is caught. */
function fingerprint(flat: Record<string, string>): string {
  const keys = Object.keys(flat)
    .filter((k) => k !== 'ClientToken' && k !== 'DryRun')
    .sort();
  return createHash('sha256')
    .update(JSON.stringify(keys.map((k) => [k, flat[k]])))
    .digest('hex');
}

function idempotent(
  world: World,
  action: string,
  token: string | undefined,
  flat: Record<string, string>,
): { replay: unknown } | { record: (result: unknown) => void } {
  if (!token) return { record: () => undefined };
  if (token.length > 64)
    throw new AwsError('InvalidParameterValue', 'ClientToken must be at most 64 characters');
  const fp = fingerprint(flat);
  const seen = world.idempotency.get(token);
  if (seen) {
    if (seen.action !== action || seen.fingerprint !== fp) {
      throw new AwsError(
        'IdempotentParameterMismatch',
        `The client token you have provided is associated with a resource that is already deleted or with different parameters: ${token}`,
      );
    }
    return { replay: seen.result };
  }
  return { record: (result) => world.idempotency.set(token, { action, fingerprint: fp, result }) };
}

function templateRef(
  node: QObject | undefined,
): { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string } | undefined {
  if (!node) return undefined;
  return {
    LaunchTemplateId: str(node, 'LaunchTemplateId'),
    LaunchTemplateName: str(node, 'LaunchTemplateName'),
    Version: str(node, 'Version'),
  };
}

function fromTemplate(
  world: World,
  ref: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string } | undefined,
): { template?: LaunchTemplate; version?: number; data: LaunchTemplateData } {
  if (!ref) return { data: {} };
  const template = world.launchTemplate(ref);
  const v = world.templateVersion(template, ref.Version);
  return { template, version: v.VersionNumber, data: v.data };
}

function templateTags(
  template: LaunchTemplate | undefined,
  version: number | undefined,
  data: LaunchTemplateData,
): Tag[] {
  const tags = (data.TagSpecifications ?? [])
    .filter((t) => t.ResourceType === 'instance')
    .flatMap((t) => t.Tags ?? []);
  // EC2 itself tags instances launched from a template with the template id and version.
  if (template) {
    tags.push(
      { Key: 'aws:ec2launchtemplate:id', Value: template.LaunchTemplateId },
      { Key: 'aws:ec2launchtemplate:version', Value: String(version) },
    );
  }
  return tags;
}

// ------------------------------------------------------------------ rendering

function privateDnsName(world: World, ip: string): string {
  return `ip-${ip.replace(/\./g, '-')}.${world.region}.compute.internal`;
}

function renderState(name: FakeInstance['State']): string {
  return `<code>${STATE_CODES[name]}</code><name>${name}</name>`;
}

function renderTags(tags: Tag[]): string {
  return ec2List('tagSet', tags, (t) => el('key', t.Key) + el('value', t.Value));
}

export function renderInstance(world: World, i: FakeInstance): string {
  const volumeId = (n: number) =>
    `vol-${createHash('sha256').update(`${i.InstanceId}:${n}`).digest('hex').slice(0, 17)}`;
  const devices =
    i.BlockDeviceMappings.length > 0 ? i.BlockDeviceMappings : [{ DeviceName: '/dev/xvda', Ebs: {} }];
  return [
    el('instanceId', i.InstanceId),
    el('imageId', i.ImageId),
    wrap('instanceState', renderState(i.State)),
    el('privateDnsName', i.State === 'terminated' ? '' : privateDnsName(world, i.PrivateIpAddress)),
    el('dnsName', ''),
    el('reason', i.StateTransitionReason),
    el('keyName', i.KeyName),
    el('amiLaunchIndex', i.AmiLaunchIndex),
    '<productCodes/>',
    el('instanceType', i.InstanceType),
    el('launchTime', i.LaunchTime),
    wrap(
      'placement',
      el('availabilityZoneId', `euw1-az${i.AvailabilityZone.slice(-1).charCodeAt(0) - 96}`) +
        el('groupName', '') +
        el('tenancy', 'default') +
        el('availabilityZone', i.AvailabilityZone),
    ),
    wrap('monitoring', el('state', 'disabled')),
    el('subnetId', i.SubnetId),
    el('vpcId', i.VpcId || DEFAULT_VPC),
    i.State === 'terminated' ? '' : el('privateIpAddress', i.PrivateIpAddress),
    el('sourceDestCheck', true),
    ec2List('groupSet', i.SecurityGroupIds, (g) => el('groupId', g) + el('groupName', g)),
    i.StateReason
      ? wrap('stateReason', el('code', i.StateReason.Code) + el('message', i.StateReason.Message))
      : '',
    el('architecture', 'x86_64'),
    el('rootDeviceType', 'ebs'),
    el('rootDeviceName', devices[0]?.DeviceName ?? '/dev/xvda'),
    i.State === 'terminated'
      ? '<blockDeviceMapping/>'
      : ec2List('blockDeviceMapping', devices, (d) => {
          const n = devices.indexOf(d);
          return (
            el('deviceName', d.DeviceName ?? '/dev/xvda') +
            wrap(
              'ebs',
              el('volumeId', volumeId(n)) +
                el('status', 'attached') +
                el('attachTime', i.LaunchTime) +
                el('deleteOnTermination', d.Ebs?.DeleteOnTermination ?? true),
            )
          );
        }),
    el('instanceLifecycle', i.InstanceLifecycle),
    el('spotInstanceRequestId', i.SpotInstanceRequestId),
    el('virtualizationType', 'hvm'),
    el('clientToken', i.ClientToken ?? ''),
    i.Tags.length > 0 ? renderTags(i.Tags) : '',
    el('hypervisor', 'xen'),
    i.IamInstanceProfile
      ? wrap('iamInstanceProfile', el('arn', i.IamInstanceProfile.Arn) + el('id', i.IamInstanceProfile.Id))
      : '',
    el('ebsOptimized', false),
    el('enaSupport', true),
    wrap(
      'metadataOptions',
      el('state', i.State === 'pending' ? 'pending' : 'applied') +
        el('httpTokens', i.MetadataOptions.HttpTokens) +
        el('httpPutResponseHopLimit', i.MetadataOptions.HttpPutResponseHopLimit) +
        el('httpEndpoint', i.MetadataOptions.HttpEndpoint) +
        el('httpProtocolIpv6', 'disabled') +
        el('instanceMetadataTags', i.MetadataOptions.InstanceMetadataTags),
    ),
    el('bootMode', 'uefi-preferred'),
    el('platformDetails', 'Linux/UNIX'),
  ].join('');
}

function renderReservation(world: World, reservationId: string, instances: FakeInstance[]): string {
  return (
    el('reservationId', reservationId) +
    el('ownerId', world.accountId) +
    '<groupSet/>' +
    ec2List('instancesSet', instances, (i) => renderInstance(world, i))
  );
}

function renderTemplateData(d: LaunchTemplateData): string {
  const ebs = (e: NonNullable<BlockDeviceMapping['Ebs']>) =>
    el('encrypted', e.Encrypted) +
    el('deleteOnTermination', e.DeleteOnTermination) +
    el('iops', e.Iops) +
    el('kmsKeyId', e.KmsKeyId) +
    el('snapshotId', e.SnapshotId) +
    el('volumeSize', e.VolumeSize) +
    el('volumeType', e.VolumeType) +
    el('throughput', e.Throughput);
  return [
    d.IamInstanceProfile
      ? wrap(
          'iamInstanceProfile',
          el('arn', d.IamInstanceProfile.Arn) + el('name', d.IamInstanceProfile.Name),
        )
      : '',
    d.BlockDeviceMappings
      ? ec2List(
          'blockDeviceMappingSet',
          d.BlockDeviceMappings,
          (b) => el('deviceName', b.DeviceName) + wrap('ebs', b.Ebs ? ebs(b.Ebs) : undefined),
        )
      : '',
    el('imageId', d.ImageId),
    el('instanceType', d.InstanceType),
    el('keyName', d.KeyName),
    el('instanceInitiatedShutdownBehavior', d.InstanceInitiatedShutdownBehavior),
    el('userData', d.UserData),
    d.TagSpecifications
      ? ec2List(
          'tagSpecificationSet',
          d.TagSpecifications,
          (t) => el('resourceType', t.ResourceType) + renderTags(t.Tags ?? []),
        )
      : '',
    d.SecurityGroupIds ? ec2List('securityGroupIdSet', d.SecurityGroupIds, (g) => esc(g)) : '',
    d.InstanceMarketOptions
      ? wrap(
          'instanceMarketOptions',
          el('marketType', d.InstanceMarketOptions.MarketType) +
            wrap(
              'spotOptions',
              d.InstanceMarketOptions.SpotOptions
                ? el('maxPrice', d.InstanceMarketOptions.SpotOptions.MaxPrice) +
                    el('spotInstanceType', d.InstanceMarketOptions.SpotOptions.SpotInstanceType) +
                    el(
                      'instanceInterruptionBehavior',
                      d.InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior,
                    )
                : undefined,
            ),
        )
      : '',
    d.MetadataOptions
      ? wrap(
          'metadataOptions',
          el('state', 'applied') +
            el('httpTokens', d.MetadataOptions.HttpTokens) +
            el('httpPutResponseHopLimit', d.MetadataOptions.HttpPutResponseHopLimit) +
            el('httpEndpoint', d.MetadataOptions.HttpEndpoint) +
            el('instanceMetadataTags', d.MetadataOptions.InstanceMetadataTags),
        )
      : '',
  ].join('');
}

function renderAssociation(a: IamAssociation, state = a.State): string {
  return (
    el('associationId', a.AssociationId) +
    el('instanceId', a.InstanceId) +
    wrap('iamInstanceProfile', el('arn', a.IamInstanceProfile.Arn) + el('id', a.IamInstanceProfile.Id)) +
    el('state', state) +
    el('timestamp', a.Timestamp)
  );
}

// ------------------------------------------------------------------ filters and pagination

function glob(pattern: string): RegExp {
  // EC2 filter values accept `*` and `?` wildcards; everything else is literal.
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 's');
}

/** DescribeInstances filters the fake understands (besides `tag:KEY`); others are rejected as EC2 rejects typos. */
const INSTANCE_FILTERS = new Set([
  'instance-id',
  'instance-state-name',
  'instance-state-code',
  'instance-type',
  'subnet-id',
  'vpc-id',
  'availability-zone',
  'private-ip-address',
  'private-dns-name',
  'image-id',
  'instance-lifecycle',
  'client-token',
  'iam-instance-profile.arn',
  'reservation-id',
  'key-name',
  'tag-key',
  'tag-value',
  'metadata-options.http-tokens',
]);

function instanceFilterValues(world: World, i: FakeInstance, name: string): string[] | undefined {
  if (name.startsWith('tag:')) {
    const key = name.slice(4);
    return i.Tags.filter((t) => t.Key === key).map((t) => t.Value);
  }
  switch (name) {
    case 'instance-id':
      return [i.InstanceId];
    case 'instance-state-name':
      return [i.State];
    case 'instance-state-code':
      return [String(STATE_CODES[i.State])];
    case 'instance-type':
      return [i.InstanceType];
    case 'subnet-id':
      return [i.SubnetId];
    case 'vpc-id':
      return [i.VpcId];
    case 'availability-zone':
      return [i.AvailabilityZone];
    case 'private-ip-address':
      return i.State === 'terminated' ? [] : [i.PrivateIpAddress];
    case 'private-dns-name':
      return [privateDnsName(world, i.PrivateIpAddress)];
    case 'image-id':
      return [i.ImageId];
    case 'instance-lifecycle':
      return i.InstanceLifecycle ? [i.InstanceLifecycle] : [];
    case 'client-token':
      return i.ClientToken ? [i.ClientToken] : [];
    case 'iam-instance-profile.arn':
      return i.IamInstanceProfile ? [i.IamInstanceProfile.Arn] : [];
    case 'reservation-id':
      return [i.ReservationId];
    case 'key-name':
      return i.KeyName ? [i.KeyName] : [];
    case 'tag-key':
      return i.Tags.map((t) => t.Key);
    case 'tag-value':
      return i.Tags.map((t) => t.Value);
    case 'metadata-options.http-tokens':
      return [i.MetadataOptions.HttpTokens];
    default:
      return undefined;
  }
}

interface Filter {
  name: string;
  values: RegExp[];
}

function filtersOf(p: QObject): Filter[] {
  return list(p, 'Filter').map((f) => {
    const name = str(f, 'Name');
    if (!name) throw new AwsError('InvalidParameterValue', 'The filter name must be specified');
    return { name, values: strList(f, 'Value').map(glob) };
  });
}

function matches(values: string[], f: Filter): boolean {
  return values.some((v) => f.values.some((re) => re.test(v)));
}

function encodeToken(position: number, query: string): string {
  return Buffer.from(JSON.stringify({ p: position, q: query })).toString('base64url');
}

function decodeToken(token: string | undefined, query: string): number {
  if (token === undefined) return -1;
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString()) as { p?: unknown; q?: unknown };
    if (typeof t.p === 'number' && t.q === query) return t.p;
  } catch {
    // fall through to the error EC2 gives for a token it did not issue
  }
  throw new AwsError('InvalidParameterValue', `Invalid value '${token}' for nextToken`);
}

function pageSize(p: QObject, defaultSize: number, min = 5, max = 1000): number {
  const mr = num(p, 'MaxResults');
  if (mr === undefined) return defaultSize;
  if (!Number.isInteger(mr) || mr < min || mr > max) {
    throw new AwsError(
      'InvalidParameterValue',
      `Value ( ${str(p, 'MaxResults')} ) for parameter maxResults is invalid. Expecting a value between ${min} and ${max}.`,
    );
  }
  return mr;
}

// ------------------------------------------------------------------ actions

function runInstances(world: World, p: QObject, flat: Record<string, string>): string {
  const minCount = num(p, 'MinCount');
  const maxCount = num(p, 'MaxCount');
  if (minCount === undefined)
    throw new AwsError('MissingParameter', 'The request must contain the parameter MinCount');
  if (maxCount === undefined)
    throw new AwsError('MissingParameter', 'The request must contain the parameter MaxCount');
  if (!Number.isInteger(minCount) || !Number.isInteger(maxCount) || minCount < 1 || maxCount < minCount) {
    throw new AwsError('InvalidParameterValue', `Invalid MinCount/MaxCount: ${minCount}/${maxCount}`);
  }
  const token = str(p, 'ClientToken');
  const idem = idempotent(world, 'RunInstances', token, flat);
  if ('replay' in idem) {
    // Same token, same parameters: EC2 answers with the original reservation and launches nothing.
    const r = idem.replay as { reservationId: string; ids: string[] };
    const insts = r.ids
      .map((id) => world.instances.get(id))
      .filter((x): x is FakeInstance => x !== undefined);
    return renderReservation(world, r.reservationId, insts);
  }

  const ltRef = templateRef(obj(p, 'LaunchTemplate'));
  const { template, version, data } = fromTemplate(world, ltRef);
  const requestTags = instanceTagsFromSpecs(list(p, 'TagSpecification'));
  checkUserTags(requestTags);
  const imageId = str(p, 'ImageId') ?? data.ImageId;
  if (!imageId) throw new AwsError('MissingParameter', 'The request must contain the parameter ImageId');
  const instanceType = str(p, 'InstanceType') ?? data.InstanceType ?? 'm1.small';
  const subnetId = str(p, 'SubnetId') ?? world.subnets[0]!.subnetId;
  world.subnet(subnetId);
  const marketType =
    str(obj(p, 'InstanceMarketOptions'), 'MarketType') ?? data.InstanceMarketOptions?.MarketType;
  const market: Market = marketType === 'spot' ? 'spot' : 'on-demand';
  const shutdown = str(p, 'InstanceInitiatedShutdownBehavior') ?? data.InstanceInitiatedShutdownBehavior;
  if (shutdown !== undefined && shutdown !== 'stop' && shutdown !== 'terminate') {
    throw new AwsError(
      'InvalidParameterValue',
      `Value (${shutdown}) for parameter instanceInitiatedShutdownBehavior is invalid.`,
    );
  }

  const capacity = world.capacityFor(instanceType, subnetId, market);
  const count = Math.min(maxCount, capacity.available);
  if (count < minCount && capacity.rule)
    throw world.capacityError(capacity.rule, instanceType, subnetId, market);

  const profileNode = obj(p, 'IamInstanceProfile');
  const profile = profileNode
    ? { Arn: str(profileNode, 'Arn'), Name: str(profileNode, 'Name') }
    : data.IamInstanceProfile;
  const bdm = list(p, 'BlockDeviceMapping');
  const sgs = strList(p, 'SecurityGroupId');
  const spec: LaunchSpec = {
    ImageId: imageId,
    InstanceType: instanceType,
    SubnetId: subnetId,
    market,
    Tags: dedupeTags([...templateTags(template, version, data), ...requestTags]),
    UserData: str(p, 'UserData') ?? data.UserData,
    IamInstanceProfile: profile,
    MetadataOptions: merged(data.MetadataOptions, metadataOptionsOf(obj(p, 'MetadataOptions'))),
    InstanceInitiatedShutdownBehavior: shutdown,
    BlockDeviceMappings: bdm.length > 0 ? blockDeviceMappingsOf(bdm) : data.BlockDeviceMappings,
    KeyName: str(p, 'KeyName') ?? data.KeyName,
    SecurityGroupIds: sgs.length > 0 ? sgs : data.SecurityGroupIds,
    LaunchTemplate: template
      ? {
          LaunchTemplateId: template.LaunchTemplateId,
          LaunchTemplateName: template.LaunchTemplateName,
          Version: String(version),
        }
      : undefined,
    ClientToken: token,
  };
  const launched = world.launch(spec, count);
  world.consumeCapacity(instanceType, subnetId, market, launched.length);
  const reservationId = launched[0]!.ReservationId;
  idem.record({ reservationId, ids: launched.map((i) => i.InstanceId) });
  return renderReservation(world, reservationId, launched);
}

interface FleetOverride {
  spec: { LaunchTemplateId?: string; LaunchTemplateName?: string; Version?: string };
  InstanceType: string;
  SubnetId: string;
  Priority?: number;
  WeightedCapacity: number;
  order: number;
}

function renderLtAndOverrides(o: FleetOverride): string {
  return wrap(
    'launchTemplateAndOverrides',
    wrap(
      'launchTemplateSpecification',
      el('launchTemplateId', o.spec.LaunchTemplateId) +
        el('launchTemplateName', o.spec.LaunchTemplateName) +
        el('version', o.spec.Version),
    ) +
      wrap(
        'overrides',
        el('instanceType', o.InstanceType) +
          el('subnetId', o.SubnetId) +
          el('weightedCapacity', o.WeightedCapacity) +
          el('priority', o.Priority),
      ),
  );
}

function createFleet(world: World, p: QObject, flat: Record<string, string>): string {
  const type = str(p, 'Type') ?? 'maintain';
  if (type !== 'instant') {
    throw new AwsError(
      'InvalidParameterValue',
      `The fake only supports CreateFleet Type=instant, not '${type}'`,
    );
  }
  const token = str(p, 'ClientToken');
  const idem = idempotent(world, 'CreateFleet', token, flat);
  if ('replay' in idem) return idem.replay as string;

  const configs = list(p, 'LaunchTemplateConfigs');
  if (configs.length === 0)
    throw new AwsError('MissingParameter', 'The request must contain the parameter LaunchTemplateConfigs');
  const overrides: FleetOverride[] = [];
  for (const c of configs) {
    const spec = templateRef(obj(c, 'LaunchTemplateSpecification'));
    if (!spec)
      throw new AwsError(
        'MissingParameter',
        'The request must contain the parameter LaunchTemplateSpecification',
      );
    const { data } = fromTemplate(world, spec);
    const items = list(c, 'Overrides');
    for (const o of items.length > 0 ? items : [{}]) {
      const subnetId = str(o, 'SubnetId') ?? world.subnets[0]!.subnetId;
      world.subnet(subnetId);
      overrides.push({
        spec,
        InstanceType: str(o, 'InstanceType') ?? data.InstanceType ?? 'm1.small',
        SubnetId: subnetId,
        Priority: num(o, 'Priority'),
        WeightedCapacity: num(o, 'WeightedCapacity') ?? 1,
        order: overrides.length,
      });
    }
  }
  const tcs = obj(p, 'TargetCapacitySpecification');
  const total = num(tcs, 'TotalTargetCapacity');
  if (total === undefined || !Number.isInteger(total) || total < 1) {
    throw new AwsError(
      'InvalidParameterValue',
      'TargetCapacitySpecification.TotalTargetCapacity must be a positive integer',
    );
  }
  const defaultType = str(tcs, 'DefaultTargetCapacityType') ?? 'on-demand';
  const spotTarget = num(tcs, 'SpotTargetCapacity');
  const onDemandTarget = num(tcs, 'OnDemandTargetCapacity');
  let spot = spotTarget ?? 0;
  let onDemand = onDemandTarget ?? 0;
  if (defaultType === 'spot') spot = total - onDemand;
  else onDemand = total - spot;
  const tags = instanceTagsFromSpecs(list(p, 'TagSpecification'));
  checkUserTags(tags);
  const fleetId = `fleet-${randomUUID()}`;
  // EC2 Fleet launches on the caller's behalf with tokens of its own: an instance's ClientToken
  // is `<fleet id>-<n>`, never the CreateFleet ClientToken (as CloudTrail shows for fleet launches).
  let launchIndex = 0;

  const launchedBy = new Map<FleetOverride, Record<Market, FakeInstance[]>>();
  const errors: { o: FleetOverride; market: Market; code: string; message: string }[] = [];
  for (const [market, target, strategy] of [
    ['on-demand', onDemand, str(obj(p, 'OnDemandOptions'), 'AllocationStrategy') ?? 'lowest-price'],
    ['spot', spot, str(obj(p, 'SpotOptions'), 'AllocationStrategy') ?? 'price-capacity-optimized'],
  ] as const) {
    if (target <= 0) continue;
    // The fake has no prices: `prioritized` strategies honour Priority (lower first), the others
    // take overrides in the order given. Deterministic, so tests can predict the pool used.
    const ordered = [...overrides].sort((a, b) =>
      strategy.includes('prioritized')
        ? (a.Priority ?? Number.MAX_SAFE_INTEGER) - (b.Priority ?? Number.MAX_SAFE_INTEGER) ||
          a.order - b.order
        : a.order - b.order,
    );
    let remaining = target;
    for (const o of ordered) {
      if (remaining <= 0) break;
      const want = Math.ceil(remaining / o.WeightedCapacity);
      const capacity = world.capacityFor(o.InstanceType, o.SubnetId, market);
      const n = Math.min(want, capacity.available);
      if (n < want && capacity.rule) {
        const e = world.capacityError(capacity.rule, o.InstanceType, o.SubnetId, market);
        errors.push({ o, market, code: e.code, message: e.message });
      }
      if (n <= 0) continue;
      const { template, version, data } = fromTemplate(world, o.spec);
      let insts: FakeInstance[];
      try {
        insts = world.launch(
          {
            ImageId: data.ImageId ?? 'ami-00000000000000000',
            InstanceType: o.InstanceType,
            SubnetId: o.SubnetId,
            market,
            Tags: dedupeTags([
              ...templateTags(template, version, data),
              ...tags,
              { Key: 'aws:ec2:fleet-id', Value: fleetId },
            ]),
            UserData: data.UserData,
            IamInstanceProfile: data.IamInstanceProfile,
            MetadataOptions: data.MetadataOptions,
            InstanceInitiatedShutdownBehavior: data.InstanceInitiatedShutdownBehavior,
            BlockDeviceMappings: data.BlockDeviceMappings,
            KeyName: data.KeyName,
            SecurityGroupIds: data.SecurityGroupIds,
            LaunchTemplate: template
              ? {
                  LaunchTemplateId: template.LaunchTemplateId,
                  LaunchTemplateName: template.LaunchTemplateName,
                  Version: String(version),
                }
              : undefined,
          },
          n,
        );
        for (const inst of insts) inst.ClientToken = `${fleetId}-${launchIndex++}`;
      } catch (err) {
        if (!(err instanceof AwsError)) throw err;
        errors.push({ o, market, code: err.code, message: err.message });
        continue;
      }
      world.consumeCapacity(o.InstanceType, o.SubnetId, market, insts.length);
      const entry = launchedBy.get(o) ?? { spot: [], 'on-demand': [] };
      entry[market].push(...insts);
      launchedBy.set(o, entry);
      remaining -= insts.length * o.WeightedCapacity;
    }
  }

  const instancesXml = ec2List(
    'fleetInstanceSet',
    [...launchedBy].flatMap(([o, byMarket]) =>
      (['on-demand', 'spot'] as const)
        .filter((m) => byMarket[m].length > 0)
        .map((m) => ({ o, m, insts: byMarket[m] })),
    ),
    ({ o, m, insts }) =>
      renderLtAndOverrides(o) +
      el('lifecycle', m) +
      ec2List('instanceIds', insts, (i) => esc(i.InstanceId)) +
      el('instanceType', o.InstanceType),
  );
  const errorsXml = ec2List(
    'errorSet',
    errors,
    (e) =>
      renderLtAndOverrides(e.o) +
      el('lifecycle', e.market) +
      el('errorCode', e.code) +
      el('errorMessage', e.message),
  );
  const body = el('fleetId', fleetId) + errorsXml + instancesXml;
  idem.record(body);
  return body;
}

function describeInstances(world: World, p: QObject): string {
  const ids = strList(p, 'InstanceId');
  if (ids.length > 0 && num(p, 'MaxResults') !== undefined) {
    throw new AwsError(
      'InvalidParameterCombination',
      'The parameter instancesSet cannot be used with the parameter maxResults',
    );
  }
  const filters = filtersOf(p);
  for (const f of filters) {
    if (!f.name.startsWith('tag:') && !INSTANCE_FILTERS.has(f.name)) {
      throw new AwsError('InvalidParameterValue', `The filter '${f.name}' is invalid`);
    }
  }
  let candidates = ids.length > 0 ? world.requireInstances(ids) : world.visibleInstances();
  candidates = candidates.filter((i) =>
    filters.every((f) => matches(instanceFilterValues(world, i, f.name) ?? [], f)),
  );
  candidates.sort((a, b) => a.seq - b.seq);
  const size = ids.length > 0 ? Number.MAX_SAFE_INTEGER : pageSize(p, world.describeDefaultPageSize);
  // The token remembers the position (launch order) and the query it belongs to.
  const query = createHash('sha256')
    .update(JSON.stringify(list(p, 'Filter')))
    .digest('hex')
    .slice(0, 16);
  const after = decodeToken(str(p, 'NextToken'), query);
  const rest = candidates.filter((i) => i.seq > after);
  const page = rest.slice(0, size);
  const more = rest.length > page.length;
  const reservations = new Map<string, FakeInstance[]>();
  for (const i of page) reservations.set(i.ReservationId, [...(reservations.get(i.ReservationId) ?? []), i]);
  return (
    ec2List('reservationSet', [...reservations], ([rid, insts]) => renderReservation(world, rid, insts)) +
    (more ? el('nextToken', encodeToken(page[page.length - 1]!.seq, query)) : '')
  );
}

function terminateInstances(world: World, p: QObject): string {
  const ids = strList(p, 'InstanceId');
  if (ids.length === 0)
    throw new AwsError('MissingParameter', 'The request must contain the parameter InstanceId');
  if (ids.length > 1000) throw new AwsError('InvalidParameterValue', 'At most 1000 instance ids per call');
  const insts = world.requireInstances(ids);
  const rows = insts.map((i) => {
    const previous = i.State;
    world.terminate(i);
    return { id: i.InstanceId, previous, current: i.State };
  });
  return ec2List(
    'instancesSet',
    rows,
    (r) =>
      el('instanceId', r.id) +
      wrap('currentState', renderState(r.current)) +
      wrap('previousState', renderState(r.previous)),
  );
}

function taggableInstances(world: World, ids: string[]): FakeInstance[] {
  if (ids.length === 0)
    throw new AwsError('MissingParameter', 'The request must contain the parameter resourceIdSet');
  for (const id of ids) {
    if (!id.startsWith('i-'))
      throw new AwsError('InvalidID', `The ID '${id}' is not valid (the fake only tags instances)`);
  }
  return world.requireInstances(ids);
}

function createTags(world: World, p: QObject): string {
  const insts = taggableInstances(world, strList(p, 'ResourceId'));
  const tags = tagsOf(p, 'Tag');
  if (tags.length === 0)
    throw new AwsError('MissingParameter', 'The request must contain the parameter tagSet');
  checkUserTags(tags);
  // Validate every resource first: EC2 does not apply half of a failed CreateTags.
  for (const i of insts) {
    const keys = new Set([...i.Tags.map((t) => t.Key), ...tags.map((t) => t.Key)]);
    if (keys.size > 50)
      throw new AwsError(
        'TagLimitExceeded',
        `The maximum number of tags (50) for resource ${i.InstanceId} was exceeded`,
      );
  }
  for (const i of insts) world.setTags(i, tags);
  return el('return', true);
}

function deleteTags(world: World, p: QObject): string {
  const insts = taggableInstances(world, strList(p, 'ResourceId'));
  const tags = list(p, 'Tag').map((t) => ({ Key: str(t, 'Key') ?? '', Value: str(t, 'Value') }));
  for (const i of insts) {
    i.Tags = i.Tags.filter((t) => {
      if (t.Key.startsWith('aws:')) return true;
      // No Tag parameter means "all user tags"; a given Value only deletes on an exact match.
      if (tags.length === 0) return false;
      return !tags.some((d) => d.Key === t.Key && (d.Value === undefined || d.Value === t.Value));
    });
  }
  return el('return', true);
}

function describeInstanceStatus(world: World, p: QObject): string {
  const ids = strList(p, 'InstanceId');
  const all = bool(p, 'IncludeAllInstances') ?? false;
  let insts = ids.length > 0 ? world.requireInstances(ids) : world.visibleInstances();
  if (!all) insts = insts.filter((i) => i.State === 'running');
  const now = world.clock.now();
  const status = (i: FakeInstance) => {
    if (i.State !== 'running') return 'not-applicable';
    return now - (i.runningSince ?? now) >= world.timing.statusInitMs ? 'ok' : 'initializing';
  };
  const check = (i: FakeInstance) => {
    const s = status(i);
    const detail = s === 'ok' ? 'passed' : s === 'initializing' ? 'initializing' : 'not-applicable';
    return (
      el('status', s) + ec2List('details', [detail], (d) => el('name', 'reachability') + el('status', d))
    );
  };
  return ec2List(
    'instanceStatusSet',
    insts,
    (i) =>
      el('instanceId', i.InstanceId) +
      el('availabilityZone', i.AvailabilityZone) +
      wrap('instanceState', renderState(i.State)) +
      wrap('systemStatus', check(i)) +
      wrap('instanceStatus', check(i)),
  );
}

function associateIamInstanceProfile(world: World, p: QObject): string {
  const id = str(p, 'InstanceId');
  if (!id) throw new AwsError('MissingParameter', 'The request must contain the parameter InstanceId');
  const [inst] = world.requireInstances([id]);
  if (!inst || inst.State === 'terminated' || inst.State === 'shutting-down') {
    throw new AwsError('IncorrectState', `The instance '${id}' is not in a valid state for this operation.`);
  }
  for (const a of world.associations.values()) {
    if (a.InstanceId === id)
      throw new AwsError('IncorrectState', `There is an existing association for instance ${id}`);
  }
  const node = obj(p, 'IamInstanceProfile');
  const profile = world.resolveProfile({ Arn: str(node, 'Arn'), Name: str(node, 'Name') });
  const assoc: IamAssociation = {
    AssociationId: `iip-assoc-${createHash('sha256').update(randomUUID()).digest('hex').slice(0, 17)}`,
    InstanceId: id,
    IamInstanceProfile: profile,
    State: 'associated',
    Timestamp: world.now(),
  };
  world.associations.set(assoc.AssociationId, assoc);
  inst.IamInstanceProfile = profile;
  // EC2 answers `associating`; the association is usable (and described as `associated`) right after.
  return wrap('iamInstanceProfileAssociation', renderAssociation(assoc, 'associating'));
}

function modifyInstanceMetadataOptions(world: World, p: QObject): string {
  const id = str(p, 'InstanceId');
  if (!id) throw new AwsError('MissingParameter', 'The request must contain the parameter InstanceId');
  const [inst] = world.requireInstances([id]);
  if (!inst || inst.State === 'terminated' || inst.State === 'shutting-down') {
    throw new AwsError(
      'IncorrectInstanceState',
      `The instance '${id}' is not in a valid state for this operation.`,
    );
  }
  const tokens = str(p, 'HttpTokens');
  const hop = num(p, 'HttpPutResponseHopLimit');
  if (tokens !== undefined && tokens !== 'required' && tokens !== 'optional')
    throw new AwsError('InvalidParameterValue', `Invalid value '${tokens}' for HttpTokens`);
  if (hop !== undefined && (hop < 1 || hop > 64))
    throw new AwsError('InvalidParameterValue', 'HttpPutResponseHopLimit must be between 1 and 64');
  if (tokens !== undefined) inst.MetadataOptions.HttpTokens = tokens;
  if (hop !== undefined) inst.MetadataOptions.HttpPutResponseHopLimit = hop;
  return (
    el('instanceId', id) +
    wrap(
      'instanceMetadataOptions',
      el('state', 'pending') +
        el('httpTokens', inst.MetadataOptions.HttpTokens) +
        el('httpPutResponseHopLimit', inst.MetadataOptions.HttpPutResponseHopLimit) +
        el('httpEndpoint', inst.MetadataOptions.HttpEndpoint),
    )
  );
}

function replaceIamInstanceProfileAssociation(world: World, p: QObject): string {
  const id = str(p, 'AssociationId');
  if (!id) throw new AwsError('MissingParameter', 'The request must contain the parameter AssociationId');
  const old = world.associations.get(id);
  if (!old) throw new AwsError('InvalidAssociationID.NotFound', `The association ID '${id}' does not exist`);
  const node = obj(p, 'IamInstanceProfile');
  const profile = world.resolveProfile({ Arn: str(node, 'Arn'), Name: str(node, 'Name') });
  world.associations.delete(id);
  const assoc: IamAssociation = {
    AssociationId: `iip-assoc-${createHash('sha256').update(randomUUID()).digest('hex').slice(0, 17)}`,
    InstanceId: old.InstanceId,
    IamInstanceProfile: profile,
    State: 'associated',
    Timestamp: world.now(),
  };
  world.associations.set(assoc.AssociationId, assoc);
  const inst = world.instances.get(old.InstanceId);
  if (inst) inst.IamInstanceProfile = profile;
  return wrap('iamInstanceProfileAssociation', renderAssociation(assoc, 'associating'));
}

function describeIamInstanceProfileAssociations(world: World, p: QObject): string {
  const ids = strList(p, 'AssociationId');
  const filters = filtersOf(p);
  for (const f of filters) {
    if (f.name !== 'instance-id' && f.name !== 'state')
      throw new AwsError('InvalidParameterValue', `The filter '${f.name}' is invalid`);
  }
  let rows = [...world.associations.values()];
  if (ids.length > 0) {
    for (const id of ids) {
      if (!world.associations.has(id))
        throw new AwsError('InvalidAssociationID.NotFound', `The association ID '${id}' does not exist`);
    }
    rows = rows.filter((a) => ids.includes(a.AssociationId));
  }
  rows = rows.filter((a) => filters.every((f) => matches([f.name === 'state' ? a.State : a.InstanceId], f)));
  const size = pageSize(p, 1000, 5, 1000);
  const start = decodeToken(str(p, 'NextToken'), 'iip') + 1;
  const page = rows.slice(start, start + size);
  const more = start + size < rows.length;
  return (
    ec2List('iamInstanceProfileAssociationSet', page, (a) => renderAssociation(a)) +
    (more ? el('nextToken', encodeToken(start + size - 1, 'iip')) : '')
  );
}

function describeLaunchTemplateVersions(world: World, p: QObject): string {
  const t = world.launchTemplate({
    LaunchTemplateId: str(p, 'LaunchTemplateId'),
    LaunchTemplateName: str(p, 'LaunchTemplateName'),
  });
  const wanted = strList(p, 'LaunchTemplateVersion');
  const versions =
    wanted.length > 0 ? wanted.map((v) => world.templateVersion(t, v)) : [...t.versions].reverse();
  return ec2List(
    'launchTemplateVersionSet',
    versions,
    (v) =>
      el('launchTemplateId', t.LaunchTemplateId) +
      el('launchTemplateName', t.LaunchTemplateName) +
      el('versionNumber', v.VersionNumber) +
      el('versionDescription', v.VersionDescription) +
      el('createTime', v.CreateTime) +
      el('createdBy', `arn:aws:iam::${world.accountId}:root`) +
      el('defaultVersion', v.VersionNumber === t.DefaultVersionNumber) +
      wrap('launchTemplateData', renderTemplateData(v.data)),
  );
}

// ------------------------------------------------------------------ launch template versions
// Added for the AWS provider, which makes one version per launch to carry that launch's user data
// (per-instance SSH keys) and tags: CreateFleet and Auto Scaling take user data only from a template.

/** Highest version number ever given per template: EC2 never reuses a deleted version's number. */
const highestVersion = new WeakMap<LaunchTemplate, number>();

function createLaunchTemplateVersion(world: World, p: QObject, flat: Record<string, string>): string {
  const t = world.launchTemplate({
    LaunchTemplateId: str(p, 'LaunchTemplateId'),
    LaunchTemplateName: str(p, 'LaunchTemplateName'),
  });
  const token = str(p, 'ClientToken');
  const idem = idempotent(world, 'CreateLaunchTemplateVersion', token, flat);
  if ('replay' in idem) return idem.replay as string;
  const d = obj(p, 'LaunchTemplateData');
  if (!d) throw new AwsError('MissingParameter', 'The request must contain the parameter LaunchTemplateData');
  const source = str(p, 'SourceVersion');
  // With SourceVersion the new version inherits everything it does not set itself (top level).
  const base: LaunchTemplateData = source ? structuredClone(world.templateVersion(t, source).data) : {};
  const profile = obj(d, 'IamInstanceProfile');
  const bdm = list(d, 'BlockDeviceMapping');
  const specs = list(d, 'TagSpecification');
  const sgs = strList(d, 'SecurityGroupId');
  const data: LaunchTemplateData = {
    ...base,
    ...(str(d, 'ImageId') !== undefined ? { ImageId: str(d, 'ImageId') } : {}),
    ...(str(d, 'InstanceType') !== undefined ? { InstanceType: str(d, 'InstanceType') } : {}),
    ...(str(d, 'KeyName') !== undefined ? { KeyName: str(d, 'KeyName') } : {}),
    ...(str(d, 'UserData') !== undefined ? { UserData: str(d, 'UserData') } : {}),
    ...(profile ? { IamInstanceProfile: { Arn: str(profile, 'Arn'), Name: str(profile, 'Name') } } : {}),
    ...(obj(d, 'MetadataOptions') ? { MetadataOptions: metadataOptionsOf(obj(d, 'MetadataOptions')) } : {}),
    ...(str(d, 'InstanceInitiatedShutdownBehavior') !== undefined
      ? { InstanceInitiatedShutdownBehavior: str(d, 'InstanceInitiatedShutdownBehavior') }
      : {}),
    ...(bdm.length > 0 ? { BlockDeviceMappings: blockDeviceMappingsOf(bdm) } : {}),
    ...(specs.length > 0
      ? {
          TagSpecifications: specs.map((s) => ({
            ResourceType: str(s, 'ResourceType'),
            Tags: tagsOf(s, 'Tag'),
          })),
        }
      : {}),
    ...(sgs.length > 0 ? { SecurityGroupIds: sgs } : {}),
  };
  for (const s of data.TagSpecifications ?? []) checkUserTags(s.Tags ?? []);
  const number = Math.max(highestVersion.get(t) ?? 0, ...t.versions.map((v) => v.VersionNumber)) + 1;
  highestVersion.set(t, number);
  const version = {
    VersionNumber: number,
    VersionDescription: str(p, 'VersionDescription'),
    CreateTime: world.now(),
    data,
  };
  t.versions.push(version);
  const body = wrap(
    'launchTemplateVersion',
    el('launchTemplateId', t.LaunchTemplateId) +
      el('launchTemplateName', t.LaunchTemplateName) +
      el('versionNumber', version.VersionNumber) +
      el('versionDescription', version.VersionDescription) +
      el('createTime', version.CreateTime) +
      el('defaultVersion', false) +
      wrap('launchTemplateData', renderTemplateData(data)),
  );
  idem.record(body);
  return body;
}

function deleteLaunchTemplateVersions(world: World, p: QObject): string {
  const t = world.launchTemplate({
    LaunchTemplateId: str(p, 'LaunchTemplateId'),
    LaunchTemplateName: str(p, 'LaunchTemplateName'),
  });
  const wanted = strList(p, 'LaunchTemplateVersion');
  const ok: number[] = [];
  const failed: { v: string; code: string; message: string }[] = [];
  for (const v of wanted) {
    const n = Number(v);
    const index = t.versions.findIndex((x) => x.VersionNumber === n);
    if (index < 0) {
      failed.push({ v, code: 'launchTemplateVersionDoesNotExist', message: 'The version does not exist' });
    } else if (n === t.DefaultVersionNumber) {
      failed.push({
        v,
        code: 'launchTemplateVersionIsDefault',
        message: 'Cannot delete the default version',
      });
    } else {
      highestVersion.set(t, Math.max(highestVersion.get(t) ?? 0, ...t.versions.map((x) => x.VersionNumber)));
      t.versions.splice(index, 1);
      ok.push(n);
    }
  }
  return (
    ec2List(
      'successfullyDeletedLaunchTemplateVersionSet',
      ok,
      (n) =>
        el('launchTemplateId', t.LaunchTemplateId) +
        el('launchTemplateName', t.LaunchTemplateName) +
        el('versionNumber', n),
    ) +
    ec2List(
      'unsuccessfullyDeletedLaunchTemplateVersionSet',
      failed,
      (f) =>
        el('launchTemplateId', t.LaunchTemplateId) +
        el('launchTemplateName', t.LaunchTemplateName) +
        el('versionNumber', f.v) +
        wrap('responseError', el('code', f.code) + el('message', f.message)),
    )
  );
}
