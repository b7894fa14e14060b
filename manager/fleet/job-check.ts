/**
 * Asks GitLab whether a job still runs, with the job's own CI_JOB_TOKEN: `GET /api/v4/job` answers
 * 200 while the job runs and 401/403 once it has ended (GitLab revokes the token). Everything else
 * (5xx, timeouts, a proxy's 404, no network) proves nothing, and the reaper treats it as "maybe
 * running": an unknown answer must never kill a job.
 *
 * The GitLab asked is the one in our config, bound here once. Never CI_SERVER_URL: the job author
 * can set that variable, and the manager would then send a job token to any host it can reach.
 */
import type { JobVerdict } from './policy.js';

export type JobChecker = (jobToken: string, signal?: AbortSignal) => Promise<JobVerdict>;

/** The GitLab the job checks go to: [gitlab] url, else [credentials] gitlab_url; undefined: checks off. */
export function jobCheckUrl(config: {
  gitlab: { url?: string | undefined };
  credentials: { gitlabUrl?: string | undefined };
}): string | undefined {
  return config.gitlab.url ?? config.credentials.gitlabUrl;
}

export function gitlabJobChecker(options: { gitlabUrl: string; timeoutMs: number }): JobChecker {
  const base = options.gitlabUrl.endsWith('/') ? options.gitlabUrl : `${options.gitlabUrl}/`;
  // Checked when the config loads; a bad URL here is a bug, not a job's doing.
  const url = new URL('api/v4/job', base);
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new Error(`job checks need an http(s) GitLab URL, not ${url.protocol}`);
  return async (jobToken, signal) => {
    const timeout = AbortSignal.timeout(options.timeoutMs);
    try {
      const response = await fetch(url, {
        headers: { 'JOB-TOKEN': jobToken, accept: 'application/json' },
        redirect: 'manual',
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      // The body is not needed; release the connection.
      await response.body?.cancel().catch(() => undefined);
      if (response.status === 401 || response.status === 403) return 'over';
      if (response.status === 200) return 'running';
      return 'unknown';
    } catch {
      return 'unknown';
    }
  };
}
