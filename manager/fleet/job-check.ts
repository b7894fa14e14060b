/**
 * Asks GitLab whether a job still runs, with the job's own CI_JOB_TOKEN: `GET /api/v4/job` answers
 * 200 while the job runs and 401/403 once it has ended (GitLab revokes the token). Everything else
 * (5xx, timeouts, a proxy's 404, no network) proves nothing, and the reaper treats it as "maybe
 * running": an unknown answer must never kill a job.
 */
import type { JobVerdict } from './policy.js';

export type JobChecker = (serverUrl: string, jobToken: string, signal?: AbortSignal) => Promise<JobVerdict>;

export function gitlabJobChecker(options: { timeoutMs: number }): JobChecker {
  return async (serverUrl, jobToken, signal) => {
    let url: URL;
    try {
      url = new URL('api/v4/job', serverUrl.endsWith('/') ? serverUrl : `${serverUrl}/`);
    } catch {
      return 'unknown';
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'unknown';
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
