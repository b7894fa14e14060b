/**
 * The GitLab sizes this app deploys, as data: `poc` (one GitLab node, infra/sizing.ts presets) and
 * `3k`, GitLab's smallest highly available reference architecture ("Reference architecture: up to
 * 60 RPS or 3,000 users", docs.gitlab.com/administration/reference_architectures/3k_users, the
 * GitLab 18.x page, read 2026-11-27). Node counts and instance types are the page's "AWS example"
 * column; the self-managed PostgreSQL/PgBouncer/Consul, Redis/Sentinel and load-balancer nodes are
 * replaced by RDS, ElastiCache and NLBs (docs/infrastructure.md says why), and the monitoring node
 * by CloudWatch.
 *
 * Every value can be overridden from the `sizeOverrides` context key, e.g.
 * `-c sizeOverrides='{"rails":{"instanceType":"c6i.2xlarge"},"gitaly":{"dataVolumeGiB":1000}}'`.
 */

export const SIZE_NAMES = ['poc', '3k'] as const;
export type SizeName = (typeof SIZE_NAMES)[number];

export interface NodeRole {
  count: number;
  instanceType: string;
  rootVolumeGiB: number;
}

export interface HaSize {
  /** Puma + Workhorse + nginx + gitlab-shell (sshd), behind the external NLB. */
  rails: NodeRole;
  sidekiq: NodeRole;
  /** One Auto Scaling group of one per node, each with its own data volume in its own AZ. */
  gitaly: NodeRole & { dataVolumeGiB: number; dataVolumeIops: number; dataVolumeThroughputMiBps: number };
  /** Behind the internal NLB. */
  praefect: NodeRole;
  /** GitLab's PostgreSQL: RDS Multi-AZ (`db.` is prefixed to the type). */
  database: { instanceType: string; storageGiB: number };
  /** Praefect's own PostgreSQL: a separate RDS Multi-AZ instance. */
  praefectDatabase: { instanceType: string; storageGiB: number };
  /** ElastiCache Redis, cluster mode disabled: a primary and replicas spread over the AZs. */
  redis: { nodeType: string; nodes: number };
  /** Availability zones (and NAT gateways, one per zone). */
  zones: number;
}

/**
 * The 3k reference architecture. Where AWS has no managed equivalent of the page's EC2 type, the
 * nearest managed class is used: PostgreSQL m5.large → db.m5.large, Redis m5.large →
 * cache.m5.large, Praefect PostgreSQL (2 vCPU, 1.8 GB, c5.large) → db.t4g.medium (RDS has no c5
 * class; its load at this size is a few queries per Git write).
 */
export const HA_3K: HaSize = {
  rails: { count: 3, instanceType: 'c5.2xlarge', rootVolumeGiB: 100 },
  sidekiq: { count: 2, instanceType: 'm5.xlarge', rootVolumeGiB: 50 },
  // GitLab asks Gitaly storage for at least 8,000 read / 2,000 write IOPS: gp3 provisioned to 8,000.
  gitaly: {
    count: 3,
    instanceType: 'm5.xlarge',
    rootVolumeGiB: 50,
    dataVolumeGiB: 500,
    dataVolumeIops: 8000,
    dataVolumeThroughputMiBps: 250,
  },
  praefect: { count: 3, instanceType: 'c5.large', rootVolumeGiB: 30 },
  database: { instanceType: 'm5.large', storageGiB: 200 },
  praefectDatabase: { instanceType: 't4g.medium', storageGiB: 20 },
  redis: { nodeType: 'cache.m5.large', nodes: 3 },
  zones: 3,
};

type Shape = Record<string, Record<string, number | string> | number>;

/**
 * HA_3K with overrides applied. Unknown roles or keys and values of the wrong type are errors that
 * name the key, so a typo never silently deploys the default.
 */
export function haSize(overrides: unknown = {}): HaSize {
  const parsed = typeof overrides === 'string' ? parseJson(overrides) : overrides;
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new Error('context sizeOverrides must be a JSON object like {"rails":{"count":4}}');
  }
  const base = HA_3K as unknown as Shape;
  const out = structuredClone(HA_3K) as unknown as Shape;
  for (const [role, value] of Object.entries(parsed)) {
    const where = `sizeOverrides.${role}`;
    if (!(role in base)) throw new Error(`${where}: unknown role (use ${Object.keys(base).join(', ')})`);
    const template = base[role]!;
    if (typeof template === 'number') {
      out[role] = positiveInt(where, value);
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error(`${where}: expected an object`);
    }
    const target = out[role] as Record<string, number | string>;
    for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
      const at = `${where}.${key}`;
      if (!(key in template)) throw new Error(`${at}: unknown key (use ${Object.keys(template).join(', ')})`);
      if (typeof template[key] === 'number') target[key] = positiveInt(at, v);
      else if (typeof v === 'string' && /^[a-z0-9]+(\.[a-z0-9]+)+$/.test(v)) target[key] = v;
      else
        throw new Error(`${at}: expected an instance type like "${template[key]}", got ${JSON.stringify(v)}`);
    }
  }
  const size = out as unknown as HaSize;
  // RDS classes are written without their `db.` prefix (CDK adds it); ElastiCache node types with `cache.`.
  for (const role of ['database', 'praefectDatabase'] as const) {
    if (size[role].instanceType.startsWith('db.'))
      throw new Error(
        `sizeOverrides.${role}.instanceType: write the class without "db." (e.g. "${size[role].instanceType.slice(3)}")`,
      );
  }
  if (!size.redis.nodeType.startsWith('cache.'))
    throw new Error(
      `sizeOverrides.redis.nodeType: an ElastiCache node type like "cache.m5.large", got "${size.redis.nodeType}"`,
    );
  if (size.zones < 2 || size.zones > 3) throw new Error('sizeOverrides.zones: must be 2 or 3');
  // Praefect's transactions need a tie-breaker: an even number of Gitaly nodes can deadlock a vote.
  if (size.gitaly.count % 2 === 0)
    throw new Error('sizeOverrides.gitaly.count: must be odd (GitLab: a tie-breaker for transactions)');
  return size;
}

/** Copies of every repository: all Gitaly nodes, at most three (the reference architecture's factor). */
export function replicationFactor(size: HaSize): number {
  return Math.min(3, size.gitaly.count);
}

function positiveInt(at: string, v: unknown): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
    throw new Error(`${at}: expected a positive integer, got ${JSON.stringify(v)}`);
  }
  return n;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`context sizeOverrides is not valid JSON: ${(e as Error).message}`);
  }
}
