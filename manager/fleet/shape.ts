/**
 * Launch shapes: the launch settings a credential rule may set (launch template, subnets, instance
 * type). A job's instance is launched with its rule's shape, and an idle instance serves only jobs
 * of the same shape, so a default job never lands on a production-shaped instance (its template,
 * its subnet) nor the reverse. The key is a digest of the settings, so two rules with the same
 * settings share instances and a restart recognises them from the tag.
 */
import { createHash } from 'node:crypto';
import type { LaunchShape } from '../providers/provider.js';

/** The shape of instances launched with the provider's own settings. */
export const DEFAULT_SHAPE = 'default';

export function launchShapeOf(settings: {
  readonly launchTemplate?: string | undefined;
  readonly subnets?: readonly string[] | undefined;
  readonly instanceType?: string | undefined;
}): LaunchShape | undefined {
  const { launchTemplate, subnets, instanceType } = settings;
  if (!launchTemplate && !subnets?.length && !instanceType) return undefined;
  const canonical = JSON.stringify([launchTemplate ?? null, subnets ?? null, instanceType ?? null]);
  return {
    key: `s-${createHash('sha256').update(canonical).digest('hex').slice(0, 12)}`,
    ...(launchTemplate ? { launchTemplate } : {}),
    ...(subnets?.length ? { subnets } : {}),
    ...(instanceType ? { instanceTypes: [instanceType] } : {}),
  };
}
