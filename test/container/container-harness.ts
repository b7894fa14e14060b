/**
 * What the container-job suites (local and AWS provider) share: a job runner that logs in to the
 * test registry, the check that a job left no labelled container or network behind, and the
 * cancel-mid-build job whose after_script proves it ran in the same container with nothing left.
 */
import type { DockerWorld } from '../support/docker.js';
import { type JobResult, type JobSpec, type RunnerEntry, runJob } from '../support/gitlab-runner.js';

/** Runs a job as gitlab-runner would, logged in to the test registry unless the spec sets `credentials`. */
export function runContainerJob(
  entry: RunnerEntry,
  world: DockerWorld,
  id: number,
  spec: Partial<JobSpec> & { script: string },
): Promise<JobResult> {
  return runJob(entry, {
    id: String(id),
    credentials: [{ type: 'registry', url: world.registry, username: world.user, password: world.password }],
    ...spec,
  });
}

/** The ids of the containers and networks a job left behind (runner-fleet.job label); '' when none. */
export async function leftovers(world: DockerWorld): Promise<string> {
  const containers = await world.docker(['ps', '--all', '--quiet', '--filter', 'label=runner-fleet.job']);
  const networks = await world.docker(['network', 'ls', '--quiet', '--filter', 'label=runner-fleet.job']);
  return `${containers}${networks}`.trim();
}

/**
 * A job canceled 6 s into a build that beats once every 0.1 s for a minute, printing `onTerm` when
 * TERM reaches it. Its after_script prints the build's marker file (same container) and
 * "no build processes left" when the beat has stopped.
 */
export function cancelMidBuild(onTerm: string): {
  script: string;
  afterScript: string;
  cancelAfterMs: number;
} {
  return {
    script: [
      'echo marker >/tmp/same-container',
      onTerm,
      'echo build started',
      'i=0; while [ $i -lt 600 ]; do i=$((i + 1)); echo $i >/tmp/beat; sleep 0.1 || true; done',
      'echo not reached',
    ].join('\n'),
    afterScript: [
      'cat /tmp/same-container',
      'a=$(cat /tmp/beat); sleep 1; b=$(cat /tmp/beat)',
      '[ "$a" = "$b" ] && echo no build processes left',
    ].join('\n'),
    cancelAfterMs: 6000,
  };
}
