/**
 * Part of `npm run build`, after tsc: bundles the hooks' entry (dist/executor/entry.js) and all it
 * reaches into CommonJS under dist/executor/bundle/. gitlab-runner starts a hook process for every
 * stage of every job; a CommonJS main with the hook code in one file skips the ES module loader's
 * start-up and its file read per module (bench/hooks.ts shows the difference). Code a hook needs
 * only sometimes (the SSH transport, container jobs, the local transport) stays in chunks that are
 * read only when used. Only node: built-ins may be imported: the bundle must run without
 * node_modules, and test/job/hook-imports.test.ts checks that it does.
 */
import { rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'rolldown';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const outDir = join(dist, 'executor', 'bundle');
rmSync(outDir, { recursive: true, force: true });
await build({
  input: { hooks: join(dist, 'executor', 'entry.js') },
  platform: 'node',
  external: (id) => id.startsWith('node:'),
  plugins: [
    {
      // A package would be bundled silently; the hooks must not depend on any (no AWS SDK, no pino).
      name: 'node-built-ins-only',
      resolveId(source, importer) {
        if (importer && !/^(\.|\/|node:)/.test(source))
          throw new Error(`${importer} imports "${source}": the hooks may use node: built-ins only`);
        return null;
      },
    },
  ],
  logLevel: 'warn',
  output: {
    dir: outDir,
    format: 'cjs',
    entryFileNames: '[name].cjs',
    // e.g. transports-local-<hash>.cjs, container-hooks-<hash>.cjs: named after what they hold.
    chunkFileNames: (chunk) =>
      `${chunk.facadeModuleId ? `${basename(dirname(chunk.facadeModuleId))}-` : ''}${chunk.name}-[hash].cjs`,
  },
});
