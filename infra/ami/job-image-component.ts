/**
 * The EC2 Image Builder component that bakes the job AMI (README "AMI prerequisites"): SSH server,
 * git, git-lfs, a pinned and verified gitlab-runner, Docker and the ECR credential helper, and
 * builds_dir/cache_dir owned by the SSH user. Its test phase runs on an instance booted from the
 * new AMI, so the manifest it publishes to SSM (what `runner-fleet doctor` reads) describes what
 * is really on the image, under the image's own id.
 *
 * The document holds no CloudFormation token: the region and the AMI id come from the instance
 * metadata at run time, so the text is the same at synth and in tests, and its hash versions it.
 */
import { createHash } from 'node:crypto';
import { Document, type Scalar } from 'yaml';
import { type GitlabRunnerRelease, renderGitlabRunnerInstall } from '../fleet/boot-scripts.js';

export interface JobImageOptions {
  /** `[aws] ssh_user`: the user every stage runs as. */
  sshUser: string;
  /** `[executor] builds_dir` and `cache_dir`: created owned by sshUser. */
  buildsDir: string;
  cacheDir: string;
  /** The manager's gitlab-runner release (cache and artifact transfer run on the instance). */
  gitlabRunner: GitlabRunnerRelease;
  /** `[image] manifest_parameter_prefix`: the manifest goes to `<prefix>/<ami-id>`. */
  manifestParameterPrefix: string;
}

/** Packages of the base image (Amazon Linux 2023) the manifest reports, by manifest name. */
const RPM_PACKAGES = {
  git: 'git',
  'git-lfs': 'git-lfs',
  docker: 'docker',
  'docker-credential-ecr-login': 'amazon-ecr-credential-helper',
  'openssh-server': 'openssh-server',
} as const;

export interface ComponentStep {
  name: string;
  action: 'ExecuteBash';
  inputs: { commands: string[] };
}

export interface ComponentDocument {
  name: string;
  description: string;
  schemaVersion: number;
  phases: { name: 'build' | 'validate' | 'test'; steps: ComponentStep[] }[];
}

// Values are spliced into bash unquoted-safe: refuse anything that would need escaping.
const SAFE_PATH = /^\/[A-Za-z0-9._/-]+$/;
const SAFE_USER = /^[a-z_][a-z0-9_-]*$/;

function check(o: JobImageOptions): void {
  if (!SAFE_USER.test(o.sshUser))
    throw new Error(`job image: ssh user "${o.sshUser}" is not a plain user name`);
  for (const [key, path] of [
    ['builds_dir', o.buildsDir],
    ['cache_dir', o.cacheDir],
    ['manifest_parameter_prefix', o.manifestParameterPrefix],
  ] as const)
    if (!SAFE_PATH.test(path))
      throw new Error(`job image: ${key} "${path}" must be an absolute path of [A-Za-z0-9._/-]`);
}

const step = (name: string, script: string): ComponentStep => ({
  name,
  action: 'ExecuteBash',
  inputs: { commands: [`set -euo pipefail\n${script}`] },
});

function publishManifestScript(o: JobImageOptions): string {
  const prefix = o.manifestParameterPrefix.replace(/\/+$/, '');
  const rpmReads = Object.entries(RPM_PACKAGES)
    .map(([key, rpm]) => `packages+=("$(pkg_entry '${key}' "$(rpm -q --qf '%{VERSION}' '${rpm}')")")`)
    .join('\n');
  return `# IMDSv2: this instance was booted from the new AMI, so its ami-id is the image being tested.
imds_token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token)"
imds() { curl -fsS -H "X-aws-ec2-metadata-token: $imds_token" "http://169.254.169.254/latest/meta-data/$1"; }
ami_id="$(imds ami-id)"
region="$(imds placement/region)"
[[ "$ami_id" =~ ^ami-[0-9a-f]+$ ]] || { echo "unexpected ami-id '$ami_id'" >&2; exit 1; }

# A version is one word of plain characters, so the JSON below needs no escaping.
pkg_entry() {
  [[ "$2" =~ ^[0-9A-Za-z._+~-]+$ ]] || { echo "$1: unexpected version '$2'" >&2; return 1; }
  printf '"%s":"%s"' "$1" "$2"
}
packages=()
${rpmReads}
runner_version="$(gitlab-runner --version | awk '/^Version:/ {print $2; exit}')"
packages+=("$(pkg_entry gitlab-runner "$runner_version")")

# Only directories the SSH user can really write are listed: doctor fails on a missing one.
dirs=()
for dir in '${o.buildsDir}' '${o.cacheDir}'; do
  if runuser -u '${o.sshUser}' -- test -d "$dir" -a -w "$dir"; then dirs+=("\\"$dir\\""); fi
done

join() { local IFS=,; printf '%s' "$*"; }
manifest="$(printf '{"packages":{%s},"ssh_user":"%s","writable_dirs":[%s]}' "$(join "\${packages[@]}")" '${o.sshUser}' "$(join "\${dirs[@]}")")"
echo "AMI manifest of $ami_id: $manifest"
aws ssm put-parameter --region "$region" --name "${prefix}/$ami_id" --type String --overwrite --value "$manifest" >/dev/null
`;
}

export function renderJobImageComponent(o: JobImageOptions): ComponentDocument {
  check(o);
  const u = o.sshUser;
  const dirs = `'${o.buildsDir}' '${o.cacheDir}'`;
  const rpms = Object.values(RPM_PACKAGES).join(' ');
  return {
    name: 'runner-fleet-job-image',
    description: 'runner-fleet job instance: SSH, git, git-lfs, gitlab-runner, Docker, ECR credential helper',
    schemaVersion: 1.0,
    phases: [
      {
        name: 'build',
        steps: [
          step(
            'InstallPackages',
            `dnf install -y ${rpms} tar gzip
systemctl enable sshd.service docker.service`,
          ),
          step(
            'InstallGitlabRunner',
            `# cache-archiver and artifacts-uploader run on the instance.
${renderGitlabRunnerInstall(o.gitlabRunner)}git lfs install --system`,
          ),
          step(
            'PrepareJobUser',
            `# Every stage runs as ${u} in these directories; nothing creates them at boot.
id '${u}' >/dev/null 2>&1 || useradd --create-home '${u}'
usermod -aG docker '${u}'
install -d -o '${u}' -g '${u}' -m 0750 ${dirs}`,
          ),
        ],
      },
      {
        name: 'validate',
        steps: [
          step(
            'ValidateTools',
            `git --version
git lfs version
gitlab-runner --version
docker --version
# One at a time: \`command -v a b\` succeeds when only the last one is found.
for tool in docker-credential-ecr-login setsid timeout sshd; do
  command -v "$tool" >/dev/null || { echo "$tool is not on PATH" >&2; exit 1; }
done
for dir in ${dirs}; do
  [ "$(stat -c %U "$dir")" = '${u}' ] || { echo "$dir is not owned by ${u}" >&2; exit 1; }
done`,
          ),
        ],
      },
      {
        name: 'test',
        steps: [
          step(
            'CheckJobUser',
            `systemctl is-active --quiet sshd.service
systemctl is-active --quiet docker.service
runuser -u '${u}' -- docker info >/dev/null
for dir in ${dirs}; do
  runuser -u '${u}' -- sh -c 'touch "$1/.rf-write-test" && rm "$1/.rf-write-test"' sh "$dir"
done`,
          ),
          // Last: an image whose checks failed above never gets a manifest.
          step('PublishManifest', publishManifestScript(o)),
        ],
      },
    ],
  };
}

export function renderJobImageComponentYaml(o: JobImageOptions): string {
  const doc = new Document(renderJobImageComponent(o));
  // Written `1.0`, as in AWS's own component documents (a bare number would print as `1`).
  (doc.get('schemaVersion', true) as Scalar).minFractionDigits = 1;
  // lineWidth 0: long bash lines stay on one line; block literals keep scripts readable.
  return doc.toString({ lineWidth: 0 });
}

/**
 * Image Builder components and recipes are immutable per version: a changed document needs a
 * new one. `1.0.<n>` from the content hash changes exactly when the content does.
 */
export function contentVersion(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return `1.0.${Number.parseInt(h.digest('hex').slice(0, 8), 16) % 1_000_000}`;
}
