// STS GetCallerIdentity. The installed client speaks awsQuery (form POST, Version=2011-06-15).

import type { World } from './world.js';
import { el } from './xml.js';

export const STS_XMLNS = 'https://sts.amazonaws.com/doc/2011-06-15/';

export const stsActions: Record<string, (world: World) => string> = {
  GetCallerIdentity: (world) =>
    el('Arn', world.callerIdentity.Arn) +
    el('UserId', world.callerIdentity.UserId) +
    el('Account', world.callerIdentity.Account),
};
