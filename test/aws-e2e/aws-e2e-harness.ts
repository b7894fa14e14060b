/**
 * The per-test lifecycle of the AWS end-to-end suites: each test starts its own wire fake, scratch
 * dir and daemon (and maybe more, e.g. a JWKS server); after the test they are stopped, the daemon
 * first, the scratch dir last, whether the test passed or not.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import { AWS_ENV, type AwsWorld, startAwsWorld } from '../providers/aws-harness.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';

export interface AwsE2e {
  /** Starts the wire fake, and a scratch dir named after `prefix` for the daemon's job dirs. */
  start(
    prefix: string,
    options?: Parameters<typeof startAwsWorld>[0],
  ): Promise<{ w: AwsWorld; scratch: string }>;
  /** Starts the daemon on `config` with the fake's credentials in its environment. */
  daemon(config: string): Promise<TestDaemon>;
  /** Something else the test started, stopped after the daemon. */
  onStop(stop: () => unknown): void;
}

/** Call once per file, at the top level: registers the afterEach that stops what each test started. */
export function awsE2eLifecycle(): AwsE2e {
  let world: AwsWorld | undefined;
  let daemon: TestDaemon | undefined;
  let scratch: string | undefined;
  let stops: Array<() => unknown> = [];
  afterEach(async () => {
    const [d, w, dir, others] = [daemon, world, scratch, stops];
    [daemon, world, scratch, stops] = [undefined, undefined, undefined, []];
    await d?.cleanup();
    for (const stop of others) await stop();
    await w?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return {
    async start(prefix, options) {
      world = await startAwsWorld(options);
      scratch = mkdtempSync(join(tmpdir(), prefix));
      return { w: world, scratch };
    },
    async daemon(config) {
      daemon = await startTestDaemon(config, { env: AWS_ENV });
      return daemon;
    },
    onStop(stop) {
      stops.push(stop);
    },
  };
}
