// Runs the fake as its own process (soak test, manual use): prints `{"url": …}` on stdout, then
// serves until SIGINT/SIGTERM. Knobs: POST /__fake/<route> (see README.md).
//
//   node dist/test/fakes/aws/main.js [--port N] [--pending-ms N] [--page-size N] [--seed file.json]

import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { routes } from './control.js';
import { AwsFake } from './fake.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    'pending-ms': { type: 'string' },
    'shutting-down-ms': { type: 'string' },
    'page-size': { type: 'string' },
    seed: { type: 'string' },
  },
});

const num = (s: string | undefined): number | undefined => (s === undefined ? undefined : Number(s));

const fake = await AwsFake.start({
  port: num(values.port),
  timing: {
    ...(values['pending-ms'] ? { pendingMs: Number(values['pending-ms']) } : {}),
    ...(values['shutting-down-ms'] ? { shuttingDownMs: Number(values['shutting-down-ms']) } : {}),
  },
  describeDefaultPageSize: num(values['page-size']),
});

// A seed file is a list of control calls, e.g. [{"route": "launchTemplate", "body": {...}}], so the
// soak test can describe its world in the same words it later uses to inject faults.
if (values.seed) {
  const steps = JSON.parse(await readFile(values.seed, 'utf8')) as {
    route: string;
    body?: Record<string, unknown>;
  }[];
  for (const step of steps) {
    const route = routes[step.route];
    if (!route) throw new Error(`seed: unknown route ${step.route}`);
    await route(fake, step.body ?? {});
  }
}

process.stdout.write(`${JSON.stringify({ url: fake.url })}\n`);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  void fake.close().then(() => process.exit(0));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
