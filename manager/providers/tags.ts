/** Tag keys, in one place: every provider writes them, the reconciler reads them. */
export const TAG = {
  fleet: 'runner-fleet:fleet',
  manager: 'runner-fleet:manager',
  state: 'runner-fleet:state',
  jobId: 'runner-fleet:job-id',
  leasedAt: 'runner-fleet:leased-at',
  createdAt: 'runner-fleet:created-at',
  useCount: 'runner-fleet:use-count',
  launchToken: 'runner-fleet:launch-token',
  credentialClass: 'runner-fleet:credential-class',
  orphanMarkedAt: 'runner-fleet:orphan-marked-at',
  /** Which launch settings made the instance (`default`, or a credential rule's, see shape.ts). */
  launchShape: 'runner-fleet:launch-shape',
} as const;
