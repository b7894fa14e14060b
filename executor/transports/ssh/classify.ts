/**
 * Turns what OpenSSH wrote to its `-E` log into a cause a person can act on. ssh exits with 255
 * for every failure of its own, so the log is the only place that tells them apart.
 */

export type SshFailureKind = 'host-key' | 'auth' | 'unreachable' | 'lost' | 'other';

export interface SshFailure {
  readonly kind: SshFailureKind;
  /** The most telling log line, trimmed; ssh logs hold no script content or secrets. */
  readonly detail: string;
}

const PATTERNS: ReadonlyArray<readonly [SshFailureKind, RegExp]> = [
  [
    'host-key',
    /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|host key .* has changed|No \S+ host key is known|no matching host key type found/i,
  ],
  ['auth', /Permission denied|Too many authentication failures|no mutual signature algorithm/i],
  [
    'unreachable',
    /Connection refused|Connection timed out|timed out during banner exchange|No route to host|Network is unreachable|Could not resolve hostname|Name or service not known|kex_exchange_identification|Connection closed by .* port \d+|Connection reset by .* port \d+/i,
  ],
  [
    'lost',
    /closed by remote host|Broken pipe|Connection reset|Timeout, server .* not responding|Read from remote host|Write failed|client_loop|mux_client_read_packet|ssh_packet_write|ssh_dispatch_run_fatal/i,
  ],
];

export function classifySshLog(log: string): SshFailure | undefined {
  const lines = log
    .split('\n')
    .map((line) => line.replace(/\r/g, '').trim())
    .filter((line) => line.length > 0 && !/^Warning: Permanently added/.test(line));
  if (lines.length === 0) return undefined;
  for (const [kind, pattern] of PATTERNS) {
    const line = lines.find((candidate) => pattern.test(candidate));
    if (line) return { kind, detail: clip(line) };
  }
  return { kind: 'other', detail: clip(lines[lines.length - 1]!) };
}

function clip(line: string): string {
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

export function describeFailure(
  failure: SshFailure,
  where: { host: string; port: number; user: string },
): string {
  const target = `${where.host}:${where.port}`;
  switch (failure.kind) {
    case 'host-key':
      return `SSH host key mismatch: ${target} did not present the pinned host key of this instance; refusing to connect (${failure.detail})`;
    case 'auth':
      return `SSH authentication refused: ${where.user}@${target} did not accept this instance's client key (${failure.detail})`;
    case 'unreachable':
      return `instance unreachable over SSH at ${target} (${failure.detail})`;
    case 'lost':
      return `SSH connection to ${target} lost mid-stage (${failure.detail})`;
    case 'other':
      return `SSH to ${target} failed (${failure.detail})`;
  }
}
