/**
 * The bash scripts that drive Docker on the leased instance, through the docker CLI there. They
 * are streamed over the transport's stdin like any stage script, so nothing in them (service
 * variables, registry credentials, the user's script) lands on a command line, and the only file
 * written is the per-job docker config (0700 directory) that cleanup removes. Pure string building.
 */
import { shellQuote as q } from '../transports/ssh/args.js';
import {
  type ContainerJob,
  type ContainerSettings,
  derivedHostnames,
  type ImageSpec,
  jobNames,
  pullPolicies,
} from './spec.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** What every script starts with: where Docker is, and failures as one line on stderr. */
function preamble(settings: ContainerSettings, hook: string): string {
  return [
    'set -u',
    settings.dockerHost ? `export DOCKER_HOST=${q(settings.dockerHost)}` : '',
    `rf_fail() { printf 'runner-fleet ${hook}: %s\\n' "$*" >&2; exit 2; }`,
    // The line that says what went wrong: docker's last error line, else the last line.
    `rf_last() { local l; l=$(printf '%s\\n' "$1" | grep -i -E 'error|denied|unauthorized|no such' | tail -n 1); [ -n "$l" ] || l=$(printf '%s\\n' "$1" | sed '/^[[:space:]]*$/d' | tail -n 1); printf '%s' "$l"; }`,
    '',
  ].join('\n');
}

/**
 * prepare: write the per-job docker config, create the job network (after removing leftovers of
 * this job, if any), start the services (pulling per pull policy) and wait for their ports, then
 * start the job container that every user stage runs in. As few docker calls as possible: each
 * costs a CLI start and an API round trip (bench/containers.ts holds this to docker run's cost).
 */
export function setupScript(
  jobId: string,
  job: ContainerJob,
  settings: ContainerSettings,
  dockerConfigJson: string,
): string {
  const n = jobNames(jobId);
  const waitS = Math.max(1, Math.ceil(settings.serviceWaitMs / 1000));
  const network = `docker network create --label ${q(n.label)} ${q(n.network)} 2>&1 >/dev/null`;
  const lines = [
    preamble(settings, 'prepare'),
    'command -v docker >/dev/null 2>&1 || rf_fail "Docker is not installed on this instance (no docker CLI on PATH); container jobs need Docker in the AMI (docs/containers.md)"',
    `rf_dir="${n.configDir}"`,
    '(umask 077 && mkdir -p "$rf_dir") && chmod 700 "$HOME/.runner-fleet" "$HOME/.runner-fleet/jobs" "$rf_dir" || rf_fail "cannot create the per-job docker config directory"',
    `(umask 077 && printf '%s' ${q(dockerConfigJson)} >"$rf_dir/config.json") || rf_fail "cannot write the per-job docker config"`,
    'export DOCKER_CONFIG="$rf_dir"',
    `mkdir -p ${q(settings.buildsDir)} && rf_builds=$(cd -P ${q(settings.buildsDir)} && pwd -P) || rf_fail "cannot create builds_dir ${settings.buildsDir}"`,
    RUN_FUNCTION,
    WAIT_FUNCTION,
    `if ! rf_err=$(${network}); then`,
    '  case $rf_err in',
    '    *"already exists"*)',
    // A retried prepare of the same job: start from nothing.
    indent(cleanupBody(jobId, false), 6),
    `      rf_err=$(${network}) || rf_fail "cannot create the job network: $(rf_last "$rf_err")";;`,
    `    *"Cannot connect"*|*"Is the docker daemon running"*) rf_fail "cannot reach the Docker daemon\${DOCKER_HOST:+ at $DOCKER_HOST}: $(rf_last "$rf_err")";;`,
    '    *) rf_fail "cannot create the job network: $(rf_last "$rf_err")";;',
    '  esac',
    'fi',
    'rf_hosts=()',
  ];
  job.services.forEach((service, i) => {
    const name = n.service(i);
    const env: Record<string, string> = { ...job.variables, ...service.variables };
    const names = Object.keys(env).filter((k) => ENV_NAME.test(k));
    const hostnames = [...new Set(service.aliases)];
    const port = service.variables.HEALTHCHECK_TCP_PORT;
    lines.push(
      `printf 'Starting service %s as %s (pull_policy %s) ...\\n' ${q(service.name)} ${q(hostnames.join(', '))} ${q(pullPolicies(service, settings).join(', '))}`,
      // Values exported in a subshell and passed by name (-e NAME): never on a command line.
      `( ${names.map((k) => `export ${k}=${q(env[k]!)};`).join(' ')} rf_run ${q(`service ${service.name}`)} ${q(service.name)} ${q(pullPolicies(service, settings).join(' '))} ${q(service.platform ?? '')} ${q(name)} --label ${q(n.label)} --network ${q(n.network)} ${hostnames.map((h) => `--network-alias ${q(h)}`).join(' ')} ${names.map((k) => `-e ${k}`).join(' ')} ${createOptions(service)} ) || exit 2`,
      `rf_info=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}|{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' ${q(name)} 2>/dev/null)`,
      `rf_ip_${i}=\${rf_info%%|*}`,
      port && /^\d+$/.test(port) ? `rf_ports_${i}=${q(port)}` : `rf_ports_${i}=\${rf_info#*|}`,
      // /etc/hosts entries as well as network aliases: found even where Docker's embedded DNS
      // does not answer (dockerd without iptables). A service that already exited has no address.
      `if [ -n "$rf_ip_${i}" ]; then`,
      ...hostnames.map((h) => `  rf_hosts+=(--add-host ${q(`${h}:`)}"$rf_ip_${i}")`),
      'fi',
    );
  });
  job.services.forEach((service, i) => {
    lines.push(`rf_wait ${q(n.service(i))} ${q(service.name)} ${waitS} "$rf_ip_${i}" $rf_ports_${i}`);
  });
  const image = job.image;
  lines.push(
    `printf 'Starting the job container from %s (pull_policy %s) ...\\n' ${q(image.name)} ${q(pullPolicies(image, settings).join(', '))}`,
    // bash when the image has it, else sh (as the docker executor): found once, read by each stage.
    `rf_run 'the job container' ${q(image.name)} ${q(pullPolicies(image, settings).join(' '))} ${q(image.platform ?? '')} ${q(n.container)} --label ${q(n.label)} --network ${q(n.network)} \${rf_hosts[@]+"\${rf_hosts[@]}"} --volume "$rf_builds":${q(settings.buildsDir)} --workdir ${q(settings.buildsDir)} ${createOptions(image, KEEP_ALIVE)}`,
    `if docker exec ${q(n.container)} sh -c 'command -v bash' >/dev/null 2>&1; then echo bash; else echo sh; fi >"$rf_dir/shell"`,
    'exit 0',
  );
  return `${lines.filter(Boolean).join('\n')}\n`;
}

function indent(text: string, spaces: number): string {
  return text
    .split('\n')
    .map((line) => ' '.repeat(spaces) + line)
    .join('\n');
}

/**
 * The job container's main process: alive until removed, whatever the image's CMD. Run through the
 * image's entrypoint (unless overridden), which by convention ends with `exec "$@"`.
 */
const KEEP_ALIVE = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'];

function createOptions(spec: ImageSpec, defaultCommand?: readonly string[]): string {
  const opts: string[] = [];
  if (spec.user) opts.push('--user', q(spec.user));
  if (spec.platform) opts.push('--platform', q(spec.platform));
  let command = spec.command ?? defaultCommand ?? [];
  if (spec.entrypoint !== undefined) {
    const [first, ...rest] = spec.entrypoint;
    // entrypoint: [""] (or []) removes the image's entrypoint, as in the docker executor.
    opts.push('--entrypoint', q(first ?? ''));
    if (first) command = [...rest, ...command];
  }
  return [...opts, q(spec.name), ...command.map(q)].join(' ');
}

/**
 * `docker run --detach --pull …` per pull policy, in order, as gitlab-runner tries them: the
 * first that starts the container wins. One docker call per container when the image is there.
 * `docker: platform` goes to the explicit pull as well as to `docker run` (whose arguments carry
 * it): without it, the pull would fetch the instance's own platform and the run would then refuse
 * the image, or a multi-platform tag would be pulled for the wrong one.
 */
const RUN_FUNCTION = `rf_run() {
  local what=$1 image=$2 policies=$3 platform=$4 name=$5 p pull err=''; shift 5
  local pull_opts=(--quiet); [ -z "$platform" ] || pull_opts+=(--platform "$platform")
  for p in $policies; do
    case $p in if-not-present) pull=missing;; *) pull=$p;; esac
    # always: an explicit pull (retried once, as registries hiccup), then run what was pulled.
    if [ "$p" = always ]; then
      if ! err=$(docker pull "\${pull_opts[@]}" "$image" 2>&1 >/dev/null) && ! err=$(docker pull "\${pull_opts[@]}" "$image" 2>&1 >/dev/null); then continue; fi
      pull=never
    fi
    if err=$(docker run --detach --pull "$pull" --name "$name" "$@" 2>&1 >/dev/null); then return 0; fi
    docker rm --force "$name" >/dev/null 2>&1
  done
  case $err in
    *"no matching manifest for"*|*"does not match the specified platform"*|*"does not provide the specified platform"*)
      rf_fail "image $image has no variant for docker: platform \${platform:-of this instance} (pull_policy \${policies// /, }): $(rf_last "$err")";;
    *"Unable to find image"*|*"No such image"*|*"pull access denied"*|*"manifest unknown"*|*"not found"*|*unauthorized*|*"auth credentials"*|*"failed to resolve reference"*)
      rf_fail "cannot pull image $image (pull_policy \${policies// /, }): $(rf_last "$err")";;
  esac
  rf_fail "cannot start $what from $image: $(rf_last "$err")"
}`;

/**
 * GitLab's service health check: every exposed TCP port accepts a connection within the timeout;
 * if not, say so with the service's last log lines and go on.
 */
const WAIT_FUNCTION = `rf_wait() {
  local ctr=$1 image=$2 deadline=$((SECONDS + $3)) ip=$4 port; shift 4
  for port in "$@"; do
    case $port in */udp) continue;; esac
    port=\${port%/tcp}
    until timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ip" "$port" 2>/dev/null; do
      if [ "$SECONDS" -ge "$deadline" ] || [ "$(docker inspect --format '{{.State.Running}}' "$ctr" 2>/dev/null)" != true ]; then
        printf '*** WARNING: Service %s probably did not start properly: port %s did not accept a connection in time. Its last log lines:\\n' "$image" "$port"
        docker logs --tail 20 "$ctr" 2>&1 | sed 's/^/    /'
        printf '*********\\n'
        return 0
      fi
      sleep 0.5
    done
  done
}`;

/** Removes everything of the job by its label (containers, then the network) and its config dir. */
function cleanupBody(jobId: string, verbose: boolean): string {
  const n = jobNames(jobId);
  return [
    `rf_ids=$(docker ps --all --quiet --filter label=${q(n.label)} 2>/dev/null)`,
    'if [ -n "$rf_ids" ]; then docker rm --force --volumes $rf_ids >/dev/null 2>&1; fi',
    `for rf_net in $(docker network ls --quiet --filter label=${q(n.label)} 2>/dev/null); do`,
    '  if ! docker network rm "$rf_net" >/dev/null 2>&1; then',
    // docker 20.10 can keep endpoints of removed containers: disconnect them, then remove.
    `    for rf_ep in $(docker network inspect --format '{{range $k, $v := .Containers}}{{$k}} {{end}}' "$rf_net" 2>/dev/null); do docker network disconnect --force "$rf_net" "$rf_ep" >/dev/null 2>&1; done`,
    '    docker network rm "$rf_net" >/dev/null 2>&1',
    '  fi',
    'done',
    verbose
      ? `printf 'runner-fleet: removed %s container(s) and the network of job %s\\n' "$(printf '%s' "$rf_ids" | grep -c .)" ${q(jobId)}`
      : '',
  ]
    .filter(Boolean)
    .join('\n');
}

/** cleanup: idempotent, works from labels alone (prepare may have died anywhere). */
export function cleanupScript(jobId: string, settings: ContainerSettings): string {
  return [
    preamble(settings, 'cleanup'),
    `rm -rf "${jobNames(jobId).configDir}"`,
    'command -v docker >/dev/null 2>&1 || exit 0',
    cleanupBody(jobId, true),
    'exit 0',
    '',
  ].join('\n');
}

/**
 * A user stage, as the transport runs it: `script` is a few lines that exec `docker exec -i` in
 * the job container, handing it `input` (the user's script, streamed right after ours on fd 3),
 * read there by bash when the image has it, else sh (from fd 3, so the script's commands read
 * /dev/null). Nothing stands between the transport and the docker client: no fork, no writer.
 *
 * The stage's shell records its pid (a session leader) inside the container. A cancel must not
 * signal the docker client (Go's runtime ends it on SIGTERM even when ignored, and what the stage
 * prints while it stops would be lost): the run hook runs `cancel` instead (container/hooks.ts),
 * which signals that session in the container, waits up to the grace, then kills it; the client
 * then ends by itself.
 */
export function stageScript(
  jobId: string,
  settings: ContainerSettings,
  userScript: Buffer,
  token: string,
  killGraceMs: number,
): { script: Buffer; input: Buffer; cancel: Buffer } {
  const n = jobNames(jobId);
  const pidFile = `.runner-fleet-stage-${token}.pid`;
  // The shell runs the user's script as a file read from fd 3, command by command as it arrives
  // (`.` would first read to the end of the stream, which reaches the container ~4 ms after the
  // script's last command could have run). Its first line closes fd 3 for the script's commands.
  const inner = `{ echo $$ >/dev/shm/${pidFile}; } 2>/dev/null || echo $$ >/tmp/${pidFile}; exec 3<&0 </dev/null; exec "$0" /dev/fd/3`;
  const script = [
    preamble(settings, 'run'),
    `read -r rf_sh <"${n.configDir}/shell" 2>/dev/null || rf_sh=sh`,
    `exec docker exec --interactive --env RUNNER_FLEET_INSTANCE_ID ${q(n.container)} "$rf_sh" -c ${q(inner)} "$rf_sh" <&3 3<&-`,
    '',
  ].join('\n');
  return {
    script: Buffer.from(script),
    // On the script's first line, so line numbers in its errors stay right (a shebang becomes a comment).
    input: Buffer.concat([Buffer.from('exec 3<&-; '), userScript]),
    cancel: Buffer.from(cancelScript(settings, n.container, pidFile, killGraceMs)),
  };
}

/**
 * The cancel of one stage, started in the background so the run hook has its answer at once.
 * The whole sequence runs inside the container and is timed there (POSIX sh: any image): wait for
 * the stage's shell to record its pid (a cancel right at the start), TERM its session, give it the
 * grace, then KILL it. One docker call, in a session of its own: a slow docker CLI, or the hook
 * killed by gitlab-runner after its own grace, cannot keep the KILL from coming.
 */
function cancelScript(
  settings: ContainerSettings,
  container: string,
  pidFile: string,
  killGraceMs: number,
): string {
  const graceS = Math.max(1, Math.ceil((killGraceMs - 1500) / 1000));
  // A stage still starting (docker exec is slow on a loaded instance) records its pid late.
  const pidWaitTicks = 5 * Math.max(3, graceS);
  const inContainer = q(
    [
      'i=0; p=',
      `while [ "$i" -lt ${pidWaitTicks} ]; do p=$(cat /dev/shm/${pidFile} 2>/dev/null || cat /tmp/${pidFile} 2>/dev/null); [ -n "$p" ] && break; sleep 0.2 2>/dev/null || sleep 1; i=$((i + 1)); done`,
      '[ -n "$p" ] || exit 0',
      'kill -TERM -"$p" 2>/dev/null || exit 0',
      `end=$(( $(date +%s) + ${graceS} ))`,
      'while [ "$(date +%s)" -lt "$end" ] && kill -0 -"$p" 2>/dev/null; do sleep 0.2 2>/dev/null || sleep 1; done',
      'kill -KILL -"$p" 2>/dev/null; exit 0',
    ].join('; '),
  );
  const exec = `docker exec ${q(container)} sh -c ${inContainer} </dev/null >/dev/null 2>&1 &`;
  return [
    preamble(settings, 'run'),
    'if command -v setsid >/dev/null 2>&1; then',
    `  setsid ${exec}`,
    'else',
    `  ${exec}`,
    'fi',
    'exit 0',
    '',
  ].join('\n');
}

/** Exit 0 when the job container still runs (a failed stage is the script's, not the instance's). */
export function containerAliveScript(jobId: string, settings: ContainerSettings): string {
  return `${preamble(settings, 'run')}[ "$(docker inspect --format '{{.State.Running}}' ${q(jobNames(jobId).container)} 2>/dev/null)" = true ]\n`;
}

export { derivedHostnames };
