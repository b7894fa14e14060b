#!/usr/bin/env node
/**
 * `runner-fleet`: one CLI for the daemon, the four custom-executor hooks and the operator
 * commands. This file only parses argv and loads the one module the command needs: the hooks
 * start for every stage of every job, so nothing heavy may be imported at the top.
 */

interface ParsedArgs {
  command: string | undefined;
  flags: Map<string, string | true>;
  positionals: string[];
}

interface Command {
  summary: string;
  usage: string;
  details: string;
  /** Flags that take a value; others are booleans. */
  valueFlags: readonly string[];
  booleanFlags: readonly string[];
  run(args: ParsedArgs): Promise<number>;
}

const SOCKET_HELP =
  '  --socket PATH   control socket of the daemon (default: $RUNNER_FLEET_SOCKET, then the per-user default)';
const CONFIG_HELP =
  '  --config FILE   config file (default: $RUNNER_FLEET_CONFIG, then /etc/runner-fleet/config.toml, then the embedded local default)';

const str = (args: ParsedArgs, name: string): string | undefined => {
  const value = args.flags.get(name);
  return typeof value === 'string' ? value : undefined;
};

const COMMANDS: Record<string, Command> = {
  daemon: {
    summary: 'run the fleet manager daemon (the systemd service)',
    usage: 'runner-fleet daemon [--config FILE]',
    details: `Starts the fleet manager: the control socket the hooks talk to, the pool and the reconcile loop.
Stops cleanly on SIGTERM/SIGINT; instances and leases survive a restart.

${CONFIG_HELP}`,
    valueFlags: ['config'],
    booleanFlags: [],
    run: async (args) =>
      (await import('./manager/commands/daemon.js')).daemonCommand({ config: str(args, 'config') }),
  },
  config: {
    summary: 'custom executor config_exec hook: print the executor JSON',
    usage: 'runner-fleet config [--socket PATH]',
    details: `Started by gitlab-runner (config_exec). Prints builds_dir, cache_dir, driver and shell as JSON.\n\n${SOCKET_HELP}`,
    valueFlags: ['socket'],
    booleanFlags: [],
    run: async (args) =>
      (await import('./executor/hooks/config.js')).configHook({ socket: str(args, 'socket') }),
  },
  prepare: {
    summary: 'custom executor prepare_exec hook: acquire an instance for the job',
    usage: 'runner-fleet prepare [--socket PATH]',
    details: `Started by gitlab-runner (prepare_exec). Waits for an instance, prints progress into the job log,
and stores the lease in the job's TMPDIR.\n\n${SOCKET_HELP}`,
    valueFlags: ['socket'],
    booleanFlags: [],
    run: async (args) =>
      (await import('./executor/hooks/prepare.js')).prepareHook({ socket: str(args, 'socket') }),
  },
  run: {
    summary: 'custom executor run_exec hook: run one stage script on the instance',
    usage: 'runner-fleet run [--socket PATH] <script-path> <stage>',
    details: `Started by gitlab-runner (run_exec) once per stage, with the script path and stage name appended.
Exit 0 on success; 1 (BUILD_FAILURE_EXIT_CODE) with the script's code in BUILD_EXIT_CODE_FILE on a
build failure; 2 (SYSTEM_FAILURE_EXIT_CODE) when the infrastructure failed. SIGTERM ends the stage's
process tree on the instance.\n\n${SOCKET_HELP}`,
    valueFlags: ['socket'],
    booleanFlags: [],
    run: async (args) =>
      (await import('./executor/hooks/run.js')).runStageHook({
        socket: str(args, 'socket'),
        positionals: args.positionals,
      }),
  },
  cleanup: {
    summary: "custom executor cleanup_exec hook: release the job's instance",
    usage: 'runner-fleet cleanup [--socket PATH]',
    details: `Started by gitlab-runner (cleanup_exec) after every job, even a failed or canceled one.
Idempotent; works even if prepare died halfway or the daemon restarted.\n\n${SOCKET_HELP}`,
    valueFlags: ['socket'],
    booleanFlags: [],
    run: async (args) =>
      (await import('./executor/hooks/cleanup.js')).cleanupHook({ socket: str(args, 'socket') }),
  },
  status: {
    summary: 'show the fleet: instances, states, jobs and ages',
    usage: 'runner-fleet status [--json] [--config FILE] [--socket PATH]',
    details: `Asks the running daemon for its view of the fleet.

  --json          machine-readable output: {"manager", "instances": [...], "leases": [...], "waiting"}
${CONFIG_HELP}
${SOCKET_HELP}`,
    valueFlags: ['config', 'socket'],
    booleanFlags: ['json'],
    run: async (args) =>
      (await import('./manager/commands/status.js')).statusCommand({
        json: args.flags.has('json'),
        config: str(args, 'config'),
        socket: str(args, 'socket'),
      }),
  },
  'iam-policy': {
    summary: "print the manager's minimal IAM policy (JSON) for the [aws] config",
    usage:
      'runner-fleet iam-policy [--config FILE] [--account ID] [--partition P] [--instance-profiles ARN,…] [--job-roles ARN,…] [--launch-template-id lt-…]',
    details: `Prints the IAM policy document the manager needs, scoped to this fleet's tag, the Auto Scaling
group (asg mode) and the launch template: the same document the CDK stack attaches.

  --account ID             12-digit account id (default: asked from STS GetCallerIdentity)
  --partition P            aws (default), aws-cn or aws-us-gov
  --instance-profiles ARNs job instance profiles the manager may attach (comma-separated)
  --job-roles ARNs         the roles inside them, for iam:PassRole (comma-separated)
  --launch-template-id ID  scope launch calls to this template (default: [aws] launch_template if an id)
${CONFIG_HELP}`,
    valueFlags: ['config', 'account', 'partition', 'instance-profiles', 'job-roles', 'launch-template-id'],
    booleanFlags: [],
    run: async (args) =>
      (await import('./manager/commands/iam-policy.js')).iamPolicyCommand({
        config: str(args, 'config'),
        account: str(args, 'account'),
        partition: str(args, 'partition'),
        instanceProfiles: str(args, 'instance-profiles'),
        jobRoles: str(args, 'job-roles'),
        launchTemplateId: str(args, 'launch-template-id'),
      }),
  },
  'runner-config': {
    summary: "print the [[runners]] entry for gitlab-runner's config.toml, or merge it in (--write)",
    usage: 'runner-fleet runner-config [--write [PATH]] [--config FILE]',
    details: `Renders the [[runners]] entry: executor = "custom", url from [gitlab] url, builds_dir, cache_dir,
[runners.custom] with absolute hook paths and timeouts, and [runners.cache] (S3, IAM) when [cache]
bucket is set. Printing shows a token placeholder; --write reads the runner token from the SSM
parameter or file in [gitlab] and merges the entry into gitlab-runner's config.toml (default
/etc/gitlab-runner/config.toml): atomically, only our entry (found by its name) is replaced,
other runners and the global section stay byte for byte; a second run changes nothing.

  --write [PATH]  merge into PATH (default /etc/gitlab-runner/config.toml) instead of printing
${CONFIG_HELP}`,
    valueFlags: ['config'],
    booleanFlags: ['write'],
    run: async (args) =>
      (await import('./manager/commands/runner-config.js')).runnerConfigCommand({
        config: str(args, 'config'),
        write: args.flags.has('write'),
        path: args.positionals[0],
      }),
  },
  install: {
    summary: 'install the systemd service, state directory and config on this host',
    usage: 'runner-fleet install [--user USER] [--prefix DIR] [--root DIR] [--dry-run]',
    details: `Writes /etc/systemd/system/runner-fleet.service, creates /var/lib/runner-fleet (0700, owned by the
service user) and copies config.example.toml to /etc/runner-fleet/config.toml if there is none (an
existing config is never overwritten). Idempotent: run it again after every upgrade.

  --user USER     the user the daemon runs as (default: [service] user, else gitlab-runner)
  --prefix DIR    npm prefix the package is installed under (default: where this cli.js is)
  --root DIR      install into DIR instead of / (images, tests)
  --dry-run       print what would change, change nothing`,
    valueFlags: ['user', 'prefix', 'root'],
    booleanFlags: ['dry-run'],
    run: async (args) =>
      (await import('./manager/commands/install.js')).installCommand({
        user: str(args, 'user'),
        prefix: str(args, 'prefix'),
        root: str(args, 'root'),
        dryRun: args.flags.has('dry-run'),
      }),
  },
  register: {
    summary: 'create the runner in GitLab and store its token (SSM or file)',
    usage:
      'runner-fleet register --gitlab-url URL --runner-type TYPE [--group-id N | --project-id N] [--token-file F] [--description D] [--tag-list a,b] [--run-untagged] < token',
    details: `Creates a runner with POST /api/v4/user/runners and stores the returned glrt- token in the SSM
parameter ([gitlab] runner_token_parameter, SecureString) or file ([gitlab] runner_token_file, 0600).
The access token (personal, group or project, scope create_runner) is read from --token-file or
stdin, never from the command line.

  --gitlab-url URL     GitLab root URL (default: [gitlab] url)
  --runner-type TYPE   instance_type (admin), group_type (needs --group-id) or project_type (needs --project-id)
  --token-file F       read the access token from F instead of stdin
  --description D      runner description (default: runner-fleet <fleet> (<manager id>))
  --tag-list a,b       job tags the runner takes
  --run-untagged       also take jobs without tags
${CONFIG_HELP}`,
    valueFlags: [
      'config',
      'gitlab-url',
      'token-file',
      'runner-type',
      'group-id',
      'project-id',
      'description',
      'tag-list',
    ],
    booleanFlags: ['run-untagged'],
    run: async (args) =>
      (await import('./manager/commands/register.js')).registerCommand({
        config: str(args, 'config'),
        gitlabUrl: str(args, 'gitlab-url'),
        tokenFile: str(args, 'token-file'),
        runnerType: str(args, 'runner-type'),
        groupId: str(args, 'group-id'),
        projectId: str(args, 'project-id'),
        description: str(args, 'description'),
        tagList: str(args, 'tag-list'),
        runUntagged: args.flags.has('run-untagged'),
      }),
  },
  doctor: {
    summary: 'check everything the manager needs and say how to fix what is missing',
    usage: 'runner-fleet doctor [--json] [--config FILE] [--runner-config PATH]',
    details: `Checks, each with pass/fail/skip and a one-line fix: config, state directory, daemon socket,
the [[runners]] entry in gitlab-runner's config.toml, AWS identity, launch template / group (IMDSv2,
terminate on shutdown, AZRebalance suspended), each EC2 permission of the manager policy (DryRun),
the AMI's package manifest (git, git-lfs, gitlab-runner), the cache bucket and whether GitLab
accepts the runner token. Launches and changes nothing. Exit 1 if any check fails.

  --json                 {"ok": bool, "checks": [{"id", "status", "detail", "fix"}]}
  --runner-config PATH   gitlab-runner's config.toml (default /etc/gitlab-runner/config.toml)
${CONFIG_HELP}`,
    valueFlags: ['config', 'runner-config'],
    booleanFlags: ['json'],
    run: async (args) =>
      (await import('./manager/commands/doctor.js')).doctorCommand({
        config: str(args, 'config'),
        json: args.flags.has('json'),
        runnerConfig: str(args, 'runner-config'),
      }),
  },
  drain: {
    summary: 'stop taking new jobs; with --wait, wait for running jobs (rolling upgrades)',
    usage: 'runner-fleet drain [--wait] [--config FILE] [--socket PATH]',
    details: `Tells the daemon to lease no more instances. Idle instances are terminated; leased ones finish
their job first. Restart the daemon to take jobs again.

  --wait          return only when no job is running any more
${CONFIG_HELP}
${SOCKET_HELP}`,
    valueFlags: ['config', 'socket'],
    booleanFlags: ['wait'],
    run: async (args) =>
      (await import('./manager/commands/drain.js')).drainCommand({
        wait: args.flags.has('wait'),
        config: str(args, 'config'),
        socket: str(args, 'socket'),
      }),
  },
};

function parseArgs(argv: string[], command: Command | undefined): ParsedArgs | string {
  const flags = new Map<string, string | true>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    if (name === 'help' || name === 'version') {
      flags.set(name, true);
      continue;
    }
    if (command?.valueFlags.includes(name)) {
      const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined || value === '') return `--${name} needs a value`;
      flags.set(name, value);
    } else if (command?.booleanFlags.includes(name) && eq < 0) {
      flags.set(name, true);
    } else {
      return `unknown option --${name}`;
    }
  }
  return { command: undefined, flags, positionals };
}

function globalHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `runner-fleet: a GitLab Runner custom executor and fleet manager (one short-lived instance per job)

Usage: runner-fleet <command> [options]

Commands:
${lines.join('\n')}

Options:
  --help          show help (also: runner-fleet <command> --help)
  --version       print the version

Get started: runner-fleet daemon  (then)  runner-fleet runner-config
`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(globalHelp());
    return name === undefined ? 64 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${(await import('./manager/version.js')).version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`runner-fleet: unknown command "${name}"\n\n${globalHelp()}`);
    return 64;
  }
  const parsed = parseArgs(rest, command);
  if (typeof parsed === 'string') {
    process.stderr.write(`runner-fleet ${name}: ${parsed}\nUsage: ${command.usage}\n`);
    return 64;
  }
  if (parsed.flags.has('help')) {
    process.stdout.write(`${command.summary}\n\nUsage: ${command.usage}\n\n${command.details}\n`);
    return 0;
  }
  if (parsed.flags.has('version')) {
    process.stdout.write(`${(await import('./manager/version.js')).version()}\n`);
    return 0;
  }
  parsed.command = name;
  return command.run(parsed);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`runner-fleet: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 70;
  },
);
