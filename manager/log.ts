import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * The root logger: JSON lines on stdout (journald keeps them), redaction configured once here.
 * Modules take `log.child({ module: '…' })`; per-job code adds `{ jobId, instanceId }`.
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    destination ?? pino.destination({ sync: false }),
  );
}

/** Fields that may carry secrets if someone ever logs a whole request or job object. */
export const REDACT_PATHS = [
  'idToken',
  'jobToken',
  'token',
  '*.idToken',
  '*.jobToken',
  '*.token',
  '*.privateKey',
  '*.variables',
  '*.env',
  'job.idToken',
  'job.jobToken',
  'request.job.idToken',
  'request.job.jobToken',
  'headers.authorization',
  '*.headers.authorization',
];
