import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Packs the runner-fleet tarball the fleet stack ships (test/global-setup.ts).
    globalSetup: ['test/global-setup.ts'],
    // Many tests start real processes (daemon, hooks, sshd): keep the 2-core machine responsive.
    maxWorkers: 2,
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
