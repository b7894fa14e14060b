/**
 * Sizing presets for the POC: GitLab's 1k- and 2k-user reference architectures scaled down to one
 * GitLab node (Rails, Sidekiq and Gitaly together) plus managed PostgreSQL and Redis. Not HA, and
 * not the reference architecture itself: a starting point that the monthly estimate in
 * docs/infrastructure.md is computed from.
 */
export type SizingName = '1k' | '2k';

export interface Sizing {
  gitlabInstanceType: string;
  gitlabRootVolumeGiB: number;
  databaseInstanceType: string;
  databaseStorageGiB: number;
  redisNodeType: string;
}

export const SIZINGS: Record<SizingName, Sizing> = {
  // 1k users (20 RPS): the reference single node is 8 vCPU / 16 GiB.
  '1k': {
    gitlabInstanceType: 'c6i.2xlarge',
    gitlabRootVolumeGiB: 100,
    databaseInstanceType: 'm6i.large',
    databaseStorageGiB: 100,
    redisNodeType: 'cache.t4g.medium',
  },
  // 2k users (40 RPS): two 8 vCPU Rails nodes plus Gitaly folded into one 16 vCPU / 64 GiB node.
  '2k': {
    gitlabInstanceType: 'm6i.4xlarge',
    gitlabRootVolumeGiB: 200,
    databaseInstanceType: 'm6i.large',
    databaseStorageGiB: 200,
    redisNodeType: 'cache.m6g.large',
  },
};

export function sizing(name: string): Sizing {
  if (name !== '1k' && name !== '2k') throw new Error(`unknown sizing preset "${name}" (use 1k or 2k)`);
  return SIZINGS[name];
}
