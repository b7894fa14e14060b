/**
 * The zod duration field, in its own module so that config sections living beside their feature
 * (e.g. manager/providers/aws/config.ts) can use it while schema.ts imports those sections: with
 * the helper inside schema.ts that would be an import cycle evaluated in the wrong order.
 */
import { z } from 'zod';
import { formatDuration, parseDuration } from './duration.js';

/** A duration string ("30s", "5m", "1h30m") parsed to milliseconds, optionally within a range. */
export const duration = (fallback: string, range?: { minMs: number; maxMs: number }) =>
  z
    .string()
    .default(fallback)
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        ctx.addIssue({
          code: 'custom',
          message: `expected a duration like "30s", "5m" or "1h30m", got "${text}"`,
        });
        return z.NEVER;
      }
      if (range && (ms < range.minMs || ms > range.maxMs)) {
        ctx.addIssue({
          code: 'custom',
          message: `duration "${text}" out of range (${formatDuration(range.minMs)} to ${formatDuration(range.maxMs)})`,
        });
        return z.NEVER;
      }
      return ms;
    });
