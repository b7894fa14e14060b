/**
 * `runner-fleet install`: puts the manager on a host in one idempotent step. Writes the systemd
 * unit, creates the state directory for the service user, and drops the example config where none
 * exists (an operator's config is never overwritten). Every path is under `root`, so tests install
 * into a temp tree; only with root "/" does it ask systemd to reload.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from './runner-toml.js';
import { renderUnit, UNIT_NAME } from './systemd.js';

export const CONFIG_PATH = '/etc/runner-fleet/config.toml';
export const UNIT_DIR = '/etc/systemd/system';

export interface InstallOptions {
  /** Filesystem root to install under ("/" for real). */
  root: string;
  user: string;
  node: string;
  cli: string;
  /** Absolute (on the target system) state directory. */
  stateDir: string;
  stopTimeoutMs: number;
  /** Text of config.example.toml. */
  exampleConfig: string;
  dryRun: boolean;
  /** uid/gid of a user, or undefined if it does not exist. Injected by tests. */
  lookupUser?: (user: string) => { uid: number; gid: number } | undefined;
  /** Runs `systemctl daemon-reload`; injected by tests. Only called when root is "/". */
  reloadSystemd?: () => string | undefined;
}

export type StepAction = 'create' | 'update' | 'unchanged' | 'fail';

export interface InstallStep {
  action: StepAction;
  path: string;
  detail: string;
}

export interface InstallResult {
  ok: boolean;
  steps: InstallStep[];
  next: string[];
}

/** `id -u`/`id -g`: resolves users from every NSS source (files, LDAP, sssd), not only /etc/passwd. */
export function lookupUserWithId(user: string): { uid: number; gid: number } | undefined {
  try {
    const id = (flag: string) =>
      Number(execFileSync('id', [flag, user], { encoding: 'utf8', timeout: 5000, stdio: 'pipe' }).trim());
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    return undefined;
  }
}

function systemctlDaemonReload(): string | undefined {
  try {
    execFileSync('systemctl', ['daemon-reload'], { timeout: 30_000, stdio: 'pipe' });
    return undefined;
  } catch (error) {
    return (error as Error).message.split('\n')[0];
  }
}

/** A file shipped in the package (config.example.toml): found from dist/ and from the sources. */
export function packageFile(name: string): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, name))) return join(dir, name);
    dir = dirname(dir);
  }
  return undefined;
}

export function install(o: InstallOptions, say: (line: string) => void = () => {}): InstallResult {
  const steps: InstallStep[] = [];
  const at = (path: string) => join(o.root, path);
  const isRoot = process.getuid?.() === 0;
  const step = (s: InstallStep) => {
    steps.push(s);
    say(
      `${o.dryRun && s.action !== 'unchanged' && s.action !== 'fail' ? `would ${s.action}` : s.action.padEnd(9)} ${s.path}: ${s.detail}`,
    );
  };

  const ids = (o.lookupUser ?? lookupUserWithId)(o.user);
  if (!ids) {
    step({
      action: 'fail',
      path: o.user,
      detail: `user "${o.user}" does not exist: install gitlab-runner first (its package creates the user), or pass --user with the user gitlab-runner runs as`,
    });
    return { ok: false, steps, next: [] };
  }

  // 1. State directory: 0700 and the service user's, because the control socket in it is the
  // only thing that separates hooks from anyone else on the host.
  const stateDir = at(o.stateDir);
  if (!existsSync(stateDir)) {
    if (!o.dryRun) {
      // Parents the usual way (0755): only the state directory itself is private. A recursive
      // mkdir with 0700 would also make a fresh root's /var and /var/lib 0700.
      mkdirSync(dirname(stateDir), { recursive: true, mode: 0o755 });
      mkdirSync(stateDir, { mode: 0o700 });
      chmodSync(stateDir, 0o700);
      if (isRoot) chownSync(stateDir, ids.uid, ids.gid);
    }
    step({ action: 'create', path: o.stateDir, detail: `directory, mode 0700, owner ${o.user}` });
  } else {
    const st = statSync(stateDir);
    // 0711 is what a root daemon of the local provider sets: search (not list) for its jobs' uids.
    const wrongMode = (st.mode & 0o777) !== 0o700 && (st.mode & 0o777) !== 0o711;
    const wrongOwner = isRoot && st.uid !== ids.uid;
    if (wrongMode || wrongOwner) {
      if (!o.dryRun) {
        chmodSync(stateDir, 0o700);
        if (isRoot) chownSync(stateDir, ids.uid, ids.gid);
      }
      step({
        action: 'update',
        path: o.stateDir,
        detail: `was mode ${(st.mode & 0o777).toString(8)} owner uid ${st.uid}; now 0700 ${o.user}`,
      });
    } else
      step({
        action: 'unchanged',
        path: o.stateDir,
        detail: `mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, owner ${o.user}`,
      });
  }

  // 2. Config: the example, only when there is none. Root-owned, readable by the service group:
  // the daemon must not be able to rewrite its own configuration.
  const configFile = at(CONFIG_PATH);
  if (existsSync(configFile)) {
    step({ action: 'unchanged', path: CONFIG_PATH, detail: 'exists, left as it is' });
  } else {
    if (!o.dryRun) {
      mkdirSync(dirname(configFile), { recursive: true, mode: 0o755 });
      writeFileSync(configFile, o.exampleConfig, { mode: 0o640, flag: 'wx' });
      chmodSync(configFile, 0o640);
      if (isRoot) chownSync(configFile, 0, ids.gid);
    }
    step({
      action: 'create',
      path: CONFIG_PATH,
      detail: `from config.example.toml, mode 0640, group of ${o.user}: edit it before starting`,
    });
  }

  // 3. The unit: rewritten when it differs (an upgrade may move cli.js or change hardening).
  const unitPath = join(UNIT_DIR, UNIT_NAME);
  const unitFile = at(unitPath);
  const unit = renderUnit({
    user: o.user,
    node: o.node,
    cli: o.cli,
    configPath: CONFIG_PATH,
    stateDir: o.stateDir,
    stopTimeoutMs: o.stopTimeoutMs,
  });
  const current = existsSync(unitFile) ? readFileSync(unitFile, 'utf8') : undefined;
  let unitChanged = false;
  if (current === unit) step({ action: 'unchanged', path: unitPath, detail: 'up to date' });
  else {
    unitChanged = true;
    if (!o.dryRun) {
      mkdirSync(dirname(unitFile), { recursive: true, mode: 0o755 });
      writeFileAtomic(unitFile, unit, 0o644);
    }
    step({
      action: current === undefined ? 'create' : 'update',
      path: unitPath,
      detail: `User=${o.user}, ExecStart=${o.node} ${o.cli} daemon`,
    });
  }

  if (unitChanged && !o.dryRun && o.root === '/') {
    const problem = (o.reloadSystemd ?? systemctlDaemonReload)();
    if (problem) say(`note: systemctl daemon-reload failed (${problem}); run it yourself`);
    else say('ran: systemctl daemon-reload');
  }

  const next = [
    `edit ${CONFIG_PATH} (provider, [aws], [gitlab], [cache]): every key is explained in it`,
    'runner-fleet register --gitlab-url URL --runner-type instance_type < pat.txt   (or put an existing glrt- token in the SSM parameter / file)',
    'runner-fleet runner-config --write   (merges the [[runners]] entry into /etc/gitlab-runner/config.toml)',
    'systemctl enable --now runner-fleet',
    'runner-fleet doctor',
  ];
  return { ok: true, steps, next };
}
