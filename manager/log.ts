import { type Logger, pino } from 'pino';
import { withRedaction } from './log-redact.js';

export type { Logger };

/**
 * The root logger: JSON lines on stdout (journald keeps them), redaction configured once here.
 * Modules take `log.child({ module: '…' })`; per-job code adds `{ jobId, instanceId }`.
 * Written synchronously: a crashed or SIGKILLed daemon must leave its last lines (the launch it
 * just made) in the journal, and a few lines per job cost nothing worth buffering.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    withRedaction({
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label: string) => ({ level: label }) },
    }),
    destination ?? pino.destination({ sync: true }),
  );
}
