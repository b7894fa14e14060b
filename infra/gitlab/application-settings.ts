/**
 * The part of gitlab.rb that every node running GitLab's application (the POC instance, the 3k
 * Rails and Sidekiq nodes) takes from the stack: its URL, the VPC, the data stores and the buckets.
 * One place, so that both sizes point their nodes at their resources the same way.
 */
import { DATABASE_NAME, DATABASE_USER, type DataStores } from './data-stores.js';
import { type GitlabRbOptions, OBJECT_TYPES, type ObjectType } from './gitlab-rb.js';
import { VPC_CIDR } from './network.js';
import type { ObjectStorage } from './object-storage.js';

export interface ApplicationSettingsProps {
  domainName: string;
  region: string;
  data: DataStores;
  storage: ObjectStorage;
}

export function applicationSettings(p: ApplicationSettingsProps): Omit<GitlabRbOptions, 'secretFiles'> {
  const buckets = Object.fromEntries(
    OBJECT_TYPES.map((type) => [type, p.storage.buckets[type].bucketName]),
  ) as Record<ObjectType, string>;
  return {
    externalUrl: `https://${p.domainName}`,
    region: p.region,
    vpcCidr: VPC_CIDR,
    database: {
      host: p.data.database.dbInstanceEndpointAddress,
      port: p.data.database.dbInstanceEndpointPort,
      name: DATABASE_NAME,
      username: DATABASE_USER,
    },
    redis: { host: p.data.redis.attrPrimaryEndPointAddress, port: p.data.redis.attrPrimaryEndPointPort },
    buckets,
    backupBucket: p.storage.backups.bucketName,
  };
}
