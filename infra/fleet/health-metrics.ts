/**
 * How the manager's /healthz becomes a CloudWatch alarm: a systemd timer on the manager instance
 * asks /healthz and /metrics once a minute and puts three numbers into CloudWatch
 * (ManagerHealthy, ForeignInstances, StuckInstances; infra/shared/alarms.ts alarms on them).
 *
 * Why a timer with curl and `aws cloudwatch put-metric-data`, not the CloudWatch agent's Prometheus
 * scrape: /healthz's answer (200 or 503) is the signal, and the agent scrapes /metrics only; the
 * agent's Prometheus path goes through an EMF log group and a metric declaration per family, for
 * three numbers; and the check runs outside the daemon, so a hung or dead daemon shows (a daemon
 * cannot report its own death). Nothing reported at all (instance, timer or daemon gone) is
 * treated as unhealthy by the alarm. Grafana (docs/grafana) graphs everything else from /metrics.
 */
import { FLEET_METRICS, FLEET_METRICS_NAMESPACE } from '../shared/alarms.js';

export const HEALTH_SCRIPT_PATH = '/usr/local/sbin/runner-fleet-health-metrics';
export const HEALTH_UNIT = 'runner-fleet-health-metrics';

export interface HealthMetricsOptions {
  fleetName: string;
  region: string;
  /** host:port of the daemon's [metrics] listen. */
  listen: string;
  /** Test seam: the CLI that receives put-metric-data (default `aws`). */
  awsCli?: string;
}

/** The script the timer runs; needs curl, awk and the AWS CLI (all on Amazon Linux 2023). */
export function renderHealthMetricsScript(o: HealthMetricsOptions): string {
  if (!/^[a-z0-9-]{1,32}$/.test(o.fleetName)) throw new Error(`fleet name "${o.fleetName}" is not [a-z0-9-]`);
  return `#!/bin/bash
# Puts the runner-fleet manager's health and its fleet's foreign and stuck instance counts into
# CloudWatch (${FLEET_METRICS_NAMESPACE}, Fleet=${o.fleetName}). Rendered by infra/fleet/health-metrics.ts.
set -uo pipefail
base='http://${o.listen}'
healthy=0
if curl -fsS -m 10 -o /dev/null "$base/healthz"; then healthy=1; fi
metrics="$(curl -fsS -m 10 "$base/metrics" 2>/dev/null || true)"
# Sum of a family's samples (every label set); nothing when the family is absent.
total() {
  awk -v name="$1" '$1 == name || index($1, name "{") == 1 { sum += $NF; seen = 1 } END { if (seen) print sum + 0 }' <<<"$metrics"
}
datum() {
  printf '{"MetricName":"%s","Value":%s,"Unit":"Count","Dimensions":[{"Name":"Fleet","Value":"${o.fleetName}"}]}' "$1" "$2"
}
data="$(datum ${FLEET_METRICS.healthy} "$healthy")"
foreign="$(total runner_fleet_foreign_instances)"
stuck="$(total runner_fleet_stuck_instances)"
# Without a scrape the counts are unknown, not zero: they are left out (the health alarm speaks).
if [ -n "$foreign" ]; then data="$data,$(datum ${FLEET_METRICS.foreign} "$foreign")"; fi
if [ -n "$stuck" ]; then data="$data,$(datum ${FLEET_METRICS.stuck} "$stuck")"; fi
exec ${o.awsCli ?? 'aws'} cloudwatch put-metric-data --region '${o.region}' --namespace '${FLEET_METRICS_NAMESPACE}' --metric-data "[$data]"
`;
}

/** The oneshot service and the timer that runs it every minute. */
export function renderHealthMetricsUnits(scriptPath = HEALTH_SCRIPT_PATH): {
  service: string;
  timer: string;
} {
  return {
    service: `[Unit]
Description=runner-fleet manager health and fleet counts to CloudWatch
After=network-online.target runner-fleet.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=${scriptPath}
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=true
`,
    timer: `[Unit]
Description=runner-fleet manager health to CloudWatch, every minute

[Timer]
OnBootSec=2min
OnUnitActiveSec=1min
AccuracySec=5s

[Install]
WantedBy=timers.target
`,
  };
}
