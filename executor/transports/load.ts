import type { ConnectInfo } from '../../manager/providers/provider.js';
import type { Transport } from './transport.js';

/** The transport for a lease, loaded on demand so a local job never loads the SSH code. */
export async function loadTransport(connect: ConnectInfo): Promise<Transport> {
  switch (connect.kind) {
    case 'local': {
      const { LocalTransport } = await import('./local.js');
      return new LocalTransport(connect);
    }
    case 'ssh': {
      const { createSshTransport } = await import('./ssh.js');
      return createSshTransport(connect);
    }
  }
}
