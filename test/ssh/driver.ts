/**
 * A stand-in for the `run` hook process in SSH transport tests: runs one stage with the job
 * log on its own stdout/stderr, turns SIGTERM into a cancel like the hook does, and writes the
 * outcome as JSON to a file (stdout is the job log). Config comes as JSON in argv[2].
 */
import { writeFileSync } from 'node:fs';
import { createSshTransport, type SshTransportOptions } from '../../executor/transports/ssh.js';
import type { StageRequest } from '../../executor/transports/transport.js';
import type { SshConnectInfo } from '../../manager/providers/provider.js';

export interface DriverConfig {
  readonly info: SshConnectInfo;
  readonly request: StageRequest;
  readonly options?: SshTransportOptions;
  readonly outcomeFile: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as DriverConfig;
const controller = new AbortController();
process.once('SIGTERM', () => controller.abort());
const transport = createSshTransport(config.info, config.options);
const started = Date.now();
const outcome = await transport.runStage(config.request, controller.signal);
writeFileSync(config.outcomeFile, JSON.stringify({ ...outcome, ms: Date.now() - started }));
