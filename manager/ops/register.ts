/**
 * `runner-fleet register`: creates the runner in GitLab (`POST /user/runners`) and stores its
 * `glrt-` token where the config says (SSM SecureString or a 0600 file). If storing fails the new
 * runner is deleted again, so a failed register leaves no runner nobody has the token of.
 */
import type { Config } from '../config/schema.js';
import type { AwsClientOverrides } from './aws.js';
import { type CreateRunnerInput, createRunner, deleteRunner, GitlabError } from './gitlab-api.js';
import { describeSource, storeRunnerToken, TokenError, tokenSource } from './runner-token.js';

export interface RegisterInput extends CreateRunnerInput {
  gitlabUrl: string;
  /** Personal, group or project access token with the create_runner scope. Never logged. */
  accessToken: string;
}

export async function register(
  config: Config,
  input: RegisterInput,
  say: (line: string) => void,
  aws: AwsClientOverrides = {},
): Promise<{ ok: boolean; runnerId?: number; message: string }> {
  const source = tokenSource(config);
  if (!source)
    return {
      ok: false,
      message:
        'set [gitlab] runner_token_parameter (SSM SecureString) or runner_token_file in the config first: register stores the new token there',
    };
  say(`creating a ${input.runnerType.replace('_type', '')} runner at ${input.gitlabUrl}`);
  let created: Awaited<ReturnType<typeof createRunner>>;
  try {
    const { gitlabUrl, accessToken, ...rest } = input;
    created = await createRunner(gitlabUrl, accessToken, rest);
  } catch (error) {
    if (error instanceof GitlabError) return { ok: false, message: error.message };
    throw error;
  }
  say(`created runner ${created.id}; storing its token in the ${describeSource(source)}`);
  try {
    await storeRunnerToken(config, created.token, aws);
  } catch (error) {
    if (!(error instanceof TokenError)) throw error;
    let rollback: string;
    try {
      await deleteRunner(input.gitlabUrl, input.accessToken, created.id);
      rollback = `runner ${created.id} was deleted again`;
    } catch (e) {
      rollback = `runner ${created.id} could not be deleted (${(e as Error).message}): delete it in GitLab (Admin > Runners)`;
    }
    return { ok: false, message: `${error.message}; ${rollback}` };
  }
  return {
    ok: true,
    runnerId: created.id,
    message: `runner ${created.id} registered, token stored in the ${describeSource(source)}${
      created.tokenExpiresAt ? ` (expires ${created.tokenExpiresAt})` : ''
    }; next: runner-fleet runner-config --write`,
  };
}
