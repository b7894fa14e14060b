/** The test infrastructure itself: a private dockerd and an authenticated registry with test images. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DockerWorld, dockerInstalled, startDockerWorld } from '../support/docker.js';

describe.runIf(dockerInstalled())('docker test world', () => {
  let world: DockerWorld;
  beforeAll(async () => {
    world = await startDockerWorld({ images: ['busybox', 'bash'] });
  }, 180_000);
  afterAll(async () => {
    await world?.stop();
  }, 60_000);

  it('serves private images: a pull needs the registry password', async () => {
    const anonymous = mkdtempSync(join(tmpdir(), 'rf-anon-'));
    try {
      await expect(world.docker(['--config', anonymous, 'pull', world.image('busybox')])).rejects.toThrow(
        /no basic auth credentials|unauthorized|authentication required/i,
      );
    } finally {
      rmSync(anonymous, { recursive: true, force: true });
    }
    await world.docker(['pull', world.image('busybox')]);
    const out = await world.docker([
      'run',
      '--rm',
      world.image('busybox'),
      'sh',
      '-c',
      'echo hi; command -v bash || echo no-bash',
    ]);
    expect(out).toBe('hi\nno-bash\n');
    await world.docker(['pull', world.image('bash')]);
    expect(
      await world.docker(['run', '--rm', world.image('bash'), 'bash', '-c', 'echo $BASH_VERSION']),
    ).toMatch(/^5\./);
  });
});
