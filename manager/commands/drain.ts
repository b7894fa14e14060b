import { request } from '../control/client.js';
import { readOperatorToken } from '../control/operator-token.js';
import { socketOrReport } from './load-config.js';

export async function drainCommand(options: {
  wait: boolean;
  config: string | undefined;
  socket: string | undefined;
}): Promise<number> {
  const socket = socketOrReport(options);
  if (typeof socket === 'number') return socket;
  try {
    const result = await request<{ leased: number }>(
      socket,
      { op: 'drain', wait: options.wait, operatorToken: readOperatorToken(socket) },
      { onProgress: (m) => process.stdout.write(`${m}\n`) },
    );
    process.stdout.write(
      options.wait || result.leased === 0
        ? 'drained: no job is running; the daemon can be stopped or upgraded\n'
        : `draining: ${result.leased} job(s) still running; run with --wait to wait for them\n`,
    );
    return 0;
  } catch (error) {
    process.stderr.write(`runner-fleet drain: ${(error as Error).message}\n`);
    return 1;
  }
}
