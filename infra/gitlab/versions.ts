/**
 * GitLab versions: the pinned Linux package, the required upgrade stops it may not jump over, and
 * the PostgreSQL majors each GitLab major runs on. All checked at synth, so a bad bump fails in the
 * build job, not halfway through a deploy.
 *
 * Sources (GitLab 18.x documentation):
 * - Upgrade paths, "Required upgrade stops": https://docs.gitlab.com/update/upgrade_paths/ —
 *   from 17.5 on, stops fall on x.2, x.5, x.8 and x.11.
 * - PostgreSQL requirements: https://docs.gitlab.com/install/requirements/#postgresql — GitLab 17
 *   needs PostgreSQL 14 or later, GitLab 18 needs 16 or later, GitLab 19 needs 17.
 */

export const UPGRADE_PATH_DOC = 'https://docs.gitlab.com/update/upgrade_paths/ (GitLab 18.x documentation)';
export const POSTGRES_REQUIREMENTS_DOC =
  'https://docs.gitlab.com/install/requirements/#postgresql (GitLab 18.x documentation)';

/** Stops listed before the x.2/x.5/x.8/x.11 schedule began (15.x, 16.x and 17.x up to 17.3). */
const LISTED_STOPS = [
  '15.0',
  '15.1',
  '15.4',
  '15.11',
  '16.0',
  '16.1',
  '16.2',
  '16.3',
  '16.7',
  '16.11',
  '17.1',
  '17.3',
] as const;
/** From 17.5: every major stops at these minors. */
const SCHEDULED_MINORS = [2, 5, 8, 11] as const;

/** PostgreSQL majors each GitLab major supports (RDS engine versions this app can create). */
const POSTGRES_BY_GITLAB_MAJOR: Record<number, { min: number; max: number }> = {
  16: { min: 13, max: 15 },
  17: { min: 14, max: 16 },
  18: { min: 16, max: 17 },
  19: { min: 17, max: 17 },
};

export interface GitlabVersion {
  major: number;
  minor: number;
  patch: number;
  text: string;
}

export function parseGitlabVersion(text: string, key = 'gitlabVersion'): GitlabVersion {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (!m)
    throw new Error(
      `context ${key} must be an exact GitLab version like 18.2.1 (major.minor.patch), got "${text}"`,
    );
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text };
}

const order = (v: { major: number; minor: number }) => v.major * 1000 + v.minor;

/** Required stops as `major.minor`, in order, up to and including `through`'s major. */
export function upgradeStops(throughMajor: number): string[] {
  const stops: string[] = [...LISTED_STOPS];
  for (let major = 17; major <= throughMajor; major++) {
    for (const minor of SCHEDULED_MINORS) {
      if (major === 17 && minor < 5) continue;
      stops.push(`${major}.${minor}`);
    }
  }
  return stops;
}

/**
 * Throws unless `to` is reachable from `from` in one step: not a downgrade, and no required stop
 * strictly between the two minor releases.
 */
export function checkUpgrade(fromText: string, toText: string): void {
  const from = parseGitlabVersion(fromText, 'gitlabDeployedVersion');
  const to = parseGitlabVersion(toText);
  if (order(to) < order(from) || (order(to) === order(from) && to.patch < from.patch))
    throw new Error(`GitLab ${from.text} → ${to.text} is a downgrade; GitLab does not support downgrades`);
  for (const stop of upgradeStops(to.major)) {
    const [major, minor] = stop.split('.').map(Number) as [number, number];
    const o = order({ major, minor });
    if (o > order(from) && o < order(to))
      throw new Error(
        `GitLab ${from.text} → ${to.text} skips the required upgrade stop ${stop}: set gitlabVersion to the latest ${stop}.z patch first, deploy, let the background migrations finish, then continue (${UPGRADE_PATH_DOC})`,
      );
  }
}

/** Throws unless PostgreSQL `postgresMajor` is supported by GitLab `gitlabVersion`. */
export function checkPostgres(gitlabVersionText: string, postgresMajor: number): void {
  const v = parseGitlabVersion(gitlabVersionText);
  const range = POSTGRES_BY_GITLAB_MAJOR[v.major];
  if (!range)
    throw new Error(
      `GitLab ${v.text}: no PostgreSQL requirement recorded for GitLab ${v.major} in infra/gitlab/versions.ts; add it from ${POSTGRES_REQUIREMENTS_DOC}`,
    );
  if (postgresMajor < range.min || postgresMajor > range.max)
    throw new Error(
      `GitLab ${v.text} runs on PostgreSQL ${range.min}${range.max > range.min ? `–${range.max}` : ''}, but postgresMajor is ${postgresMajor}: upgrade the RDS major version first (${POSTGRES_REQUIREMENTS_DOC})`,
    );
}

/** The Linux package's full version for dnf: `gitlab-ee-18.2.1-ee.0`. */
export function packageName(edition: 'gitlab-ee' | 'gitlab-ce', version: string): string {
  return `${edition}-${version}-${edition === 'gitlab-ee' ? 'ee' : 'ce'}.0`;
}
