import { readFileSync } from 'node:fs';
import type { RunnerType } from '../ops/gitlab-api.js';
import { register } from '../ops/register.js';
import { loadConfigOrReport } from './load-config.js';

const TYPES: readonly RunnerType[] = ['instance_type', 'group_type', 'project_type'];

export async function registerCommand(o: {
  config: string | undefined;
  gitlabUrl: string | undefined;
  tokenFile: string | undefined;
  runnerType: string | undefined;
  groupId: string | undefined;
  projectId: string | undefined;
  description: string | undefined;
  tagList: string | undefined;
  runUntagged: boolean;
}): Promise<number> {
  const fail = (message: string, code = 64) => {
    process.stderr.write(`runner-fleet register: ${message}\n`);
    return code;
  };
  const config = loadConfigOrReport(o.config);
  if (typeof config === 'number') return config;
  const gitlabUrl = o.gitlabUrl ?? config.gitlab.url;
  if (!gitlabUrl) return fail('--gitlab-url is required (or set [gitlab] url)');
  const runnerType = (o.runnerType ?? 'instance_type') as RunnerType;
  if (!TYPES.includes(runnerType)) return fail(`--runner-type must be one of ${TYPES.join(', ')}`);
  const id = (v: string | undefined) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    return Number.isInteger(n) && n > 0 ? n : Number.NaN;
  };
  const groupId = id(o.groupId);
  const projectId = id(o.projectId);
  if (Number.isNaN(groupId) || Number.isNaN(projectId))
    return fail('--group-id/--project-id take a numeric id');
  if (runnerType === 'group_type' && groupId === undefined)
    return fail('--runner-type group_type needs --group-id');
  if (runnerType === 'project_type' && projectId === undefined)
    return fail('--runner-type project_type needs --project-id');

  // The access token: from a file or stdin, never from argv (visible in ps and shell history).
  let accessToken: string;
  try {
    accessToken = (o.tokenFile ? readFileSync(o.tokenFile, 'utf8') : await readStdin()).trim();
  } catch (error) {
    return fail(`cannot read the access token: ${(error as Error).message}`, 66);
  }
  if (!accessToken || /\s/.test(accessToken))
    return fail('expected one access token (with the create_runner scope) on stdin or in --token-file', 66);

  const result = await register(
    config,
    {
      gitlabUrl,
      accessToken,
      runnerType,
      ...(groupId !== undefined ? { groupId } : {}),
      ...(projectId !== undefined ? { projectId } : {}),
      description: o.description ?? `runner-fleet ${config.fleet_name} (${config.manager_id})`,
      ...(o.tagList !== undefined
        ? {
            tagList: o.tagList
              .split(',')
              .map((t) => t.trim())
              .filter(Boolean),
          }
        : {}),
      ...(o.runUntagged ? { runUntagged: true } : {}),
    },
    (line) => process.stderr.write(`runner-fleet register: ${line}\n`),
  );
  if (!result.ok) return fail(result.message, 1);
  process.stdout.write(`${result.message}\n`);
  return 0;
}

/** Reads the token from stdin; on a terminal, without echoing it. Bounded to 64 KiB and 5 minutes. */
async function readStdin(): Promise<string> {
  const stdin = process.stdin;
  if (stdin.isTTY) process.stderr.write('access token (create_runner scope), then Enter: ');
  return new Promise<string>((resolve, reject) => {
    let data = '';
    const timer = setTimeout(() => done(new Error('no token on stdin within 5 minutes')), 300_000);
    const done = (error?: Error) => {
      clearTimeout(timer);
      stdin.removeAllListeners('data');
      stdin.removeAllListeners('end');
      if (stdin.isTTY) {
        stdin.setRawMode(false);
        process.stderr.write('\n');
      }
      stdin.pause();
      if (error) reject(error);
      else resolve(data);
    };
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.setEncoding('utf8');
    stdin.on('data', (chunk: string) => {
      if (stdin.isTTY) {
        if (chunk.includes('\u0003')) return done(new Error('interrupted'));
        const newline = chunk.search(/[\r\n]/);
        if (newline >= 0) {
          data += chunk.slice(0, newline);
          return done();
        }
      }
      data += chunk;
      if (data.length > 65_536) done(new Error('more than 64 KiB on stdin: not a token'));
    });
    stdin.on('end', () => done());
  });
}
