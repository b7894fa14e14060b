import { relative } from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The files that take minutes, longest first (per-file times of a full run, 2 workers). Vitest
 * orders by the durations it cached from the last run, and without a cache (a fresh clone, as
 * in CI) by file size: these short files would then start last and leave one worker running
 * alone for minutes at the end. A stale entry only costs its place in the order.
 */
const SLOW_FIRST = [
  'test/container/build-job.test.ts',
  'test/container/local.test.ts',
  'test/aws-e2e/aws-e2e.test.ts',
  'test/soak/soak.test.ts',
  'test/fleet/simulator.test.ts',
  'test/soak/daemon-restart.test.ts',
  'test/providers/wire-calls.test.ts',
  'test/job/job-path.test.ts',
  'test/container/aws.test.ts',
];

class SlowFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification) => {
      const at = SLOW_FIRST.indexOf(relative(file.project.config.root, file.moduleId));
      return at < 0 ? SLOW_FIRST.length : at;
    };
    // Array sort is stable: the rest keep vitest's own order.
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b));
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Packs the runner-fleet tarball the fleet stack ships (test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    // Many tests start real processes (daemon, hooks, sshd): keep the 2-core machine responsive.
    maxWorkers: 2,
    sequence: { sequencer: SlowFirstSequencer },
    // Generous on purpose: a timeout only turns a hang into a failure. No test states a speed
    // (speed targets are ratios in `npm run bench`), so a loaded machine only makes it slower.
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // Tests reach only 127.0.0.0/8: never let the AWS SDK's credential chain probe the instance
    // metadata service (169.254.169.254) or read the developer's real AWS profile.
    env: {
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_CONFIG_FILE: '/dev/null',
      AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    },
  },
});
