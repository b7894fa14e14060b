/**
 * The two GitLab REST calls the operator commands make: create a runner (`POST /user/runners`,
 * with a personal/group/project access token) and verify a runner token (`POST /runners/verify`).
 * Tokens travel only in headers/bodies; error messages explain the status, never echo a token.
 */

export class GitlabError extends Error {
  override name = 'GitlabError';
  constructor(
    message: string,
    readonly status: number | undefined,
  ) {
    super(message);
  }
}

const TIMEOUT_MS = 15_000;

export type RunnerType = 'instance_type' | 'group_type' | 'project_type';

export interface CreateRunnerInput {
  runnerType: RunnerType;
  groupId?: number;
  projectId?: number;
  description?: string;
  tagList?: string[];
  runUntagged?: boolean;
}

export interface CreatedRunner {
  id: number;
  token: string;
  tokenExpiresAt: string | null;
}

function apiUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}/api/v4${path}`;
}

async function call(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: Record<string, unknown> },
): Promise<{ status: number; body: unknown }> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: init.method ?? 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json', ...init.headers },
      ...(init.body ? { body: JSON.stringify(init.body) } : {}),
      signal: AbortSignal.timeout(TIMEOUT_MS),
      redirect: 'error', // A redirect would resend the token somewhere else; a wrong URL should fail.
    });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const reason =
      (error as Error).name === 'TimeoutError'
        ? `no answer within ${TIMEOUT_MS / 1000}s`
        : (cause?.code ?? cause?.message ?? (error as Error).message);
    throw new GitlabError(`cannot reach GitLab at ${new URL(url).origin}: ${reason}`, undefined);
  }
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON (a proxy's HTML page): keep the text for the message below.
  }
  return { status: response.status, body };
}

/** GitLab's own error text from a JSON body (`message` or `error`), shortened, without tokens. */
function gitlabMessage(body: unknown): string {
  let text = '';
  if (body && typeof body === 'object') {
    const b = body as { message?: unknown; error?: unknown; error_description?: unknown };
    const m = b.message ?? b.error_description ?? b.error;
    text = typeof m === 'string' ? m : m ? JSON.stringify(m) : '';
  } else if (typeof body === 'string' && !body.trimStart().startsWith('<')) {
    text = body;
  }
  text = text.replace(/gl[a-z]{2,4}-[A-Za-z0-9_-]{8,}/g, '[redacted]').trim();
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

function explainCreate(status: number, body: unknown, input: CreateRunnerInput): string {
  const said = gitlabMessage(body);
  const suffix = said ? ` (GitLab said: ${said})` : '';
  switch (status) {
    case 401:
      return `GitLab rejected the access token (401 Unauthorized): it is wrong, expired or revoked${suffix}`;
    case 403:
      return `GitLab refused to create the runner (403 Forbidden): the access token needs the "create_runner" scope, and its user must be ${
        input.runnerType === 'instance_type'
          ? 'an administrator (instance runners)'
          : input.runnerType === 'group_type'
            ? 'an Owner of the group'
            : 'a Maintainer of the project'
      }${suffix}`;
    case 404:
      return `GitLab answered 404 Not Found: the ${
        input.runnerType === 'group_type'
          ? 'group'
          : input.runnerType === 'project_type'
            ? 'project'
            : 'API path'
      } does not exist or the token cannot see it; check --gitlab-url${
        input.runnerType === 'instance_type' ? '' : ' and the id'
      }${suffix}`;
    case 400:
      return `GitLab rejected the request (400 Bad Request)${said ? `: ${said}` : ''}`;
    case 422:
      return `GitLab could not create the runner (422)${said ? `: ${said}` : ''}`;
    default:
      return `GitLab answered HTTP ${status}${suffix}`;
  }
}

export async function createRunner(
  gitlabUrl: string,
  accessToken: string,
  input: CreateRunnerInput,
): Promise<CreatedRunner> {
  const body: Record<string, unknown> = { runner_type: input.runnerType };
  if (input.groupId !== undefined) body.group_id = input.groupId;
  if (input.projectId !== undefined) body.project_id = input.projectId;
  if (input.description !== undefined) body.description = input.description;
  if (input.tagList !== undefined) body.tag_list = input.tagList.join(',');
  if (input.runUntagged !== undefined) body.run_untagged = input.runUntagged;
  const res = await call(apiUrl(gitlabUrl, '/user/runners'), {
    headers: { 'PRIVATE-TOKEN': accessToken },
    body,
  });
  if (res.status !== 201 && res.status !== 200)
    throw new GitlabError(explainCreate(res.status, res.body, input), res.status);
  const out = res.body as { id?: unknown; token?: unknown; token_expires_at?: unknown };
  if (typeof out?.token !== 'string' || !out.token.startsWith('glrt-') || typeof out.id !== 'number') {
    throw new GitlabError(
      'GitLab answered without a runner id and glrt- token: is this GitLab 16.0 or newer?',
      res.status,
    );
  }
  return {
    id: out.id,
    token: out.token,
    tokenExpiresAt: typeof out.token_expires_at === 'string' ? out.token_expires_at : null,
  };
}

export interface VerifyResult {
  ok: boolean;
  /** Why not, in the operator's words. */
  reason?: string;
  /** Runner id when GitLab tells it (GitLab 15.x+ answers with id and token_expires_at). */
  id?: number;
  tokenExpiresAt?: string | null;
}

/** POST /runners/verify: 200 when GitLab accepts the runner token, 403 when it does not. */
export async function verifyRunnerToken(gitlabUrl: string, token: string): Promise<VerifyResult> {
  const res = await call(apiUrl(gitlabUrl, '/runners/verify'), { body: { token } });
  if (res.status === 200) {
    const b = (res.body ?? {}) as { id?: unknown; token_expires_at?: unknown };
    return {
      ok: true,
      ...(typeof b.id === 'number' ? { id: b.id } : {}),
      tokenExpiresAt: typeof b.token_expires_at === 'string' ? b.token_expires_at : null,
    };
  }
  if (res.status === 403 || res.status === 401)
    return {
      ok: false,
      reason: `GitLab does not accept the runner token (${res.status}): the runner was deleted, the token was reset or it belongs to another GitLab`,
    };
  if (res.status === 422)
    return { ok: false, reason: `GitLab rejected the request (422): ${gitlabMessage(res.body)}` };
  if (res.status === 404)
    return { ok: false, reason: 'GitLab answered 404: check [gitlab] url (it must be the GitLab root URL)' };
  return {
    ok: false,
    reason: `GitLab answered HTTP ${res.status}${gitlabMessage(res.body) ? `: ${gitlabMessage(res.body)}` : ''}`,
  };
}

/** DELETE /runners/:id: undoes a create whose token could not be stored. */
export async function deleteRunner(gitlabUrl: string, accessToken: string, id: number): Promise<void> {
  const res = await call(apiUrl(gitlabUrl, `/runners/${id}`), {
    method: 'DELETE',
    headers: { 'PRIVATE-TOKEN': accessToken },
  });
  if (res.status !== 204 && res.status !== 200)
    throw new GitlabError(`GitLab answered HTTP ${res.status}`, res.status);
}
