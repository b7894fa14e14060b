/**
 * Optional outgoing email through Amazon SES's SMTP interface, for the POC and the 3k Rails and
 * Sidekiq nodes. The SES SMTP credentials live in a Secrets Manager secret that the operator
 * creates (docs/infrastructure.md, "Email through SES"): JSON `{"username": …, "password": …}`.
 * The node fetches it at boot (and at every in-place apply) into two root-only files that
 * gitlab.rb reads, so no credential is in a template, user data or gitlab.rb itself.
 */
import type * as iam from 'aws-cdk-lib/aws-iam';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';
import { rubyString } from './gitlab-rb.js';

/** Root-only files the boot (or apply) script writes from the secret; gitlab.rb reads them. */
export const SMTP_SECRET_FILES = {
  username: '/etc/gitlab/secrets/smtp-username',
  password: '/etc/gitlab/secrets/smtp-password',
} as const;

/** SES's SMTP interface takes STARTTLS on 587 (25 is throttled from EC2, 465 is implicit TLS). */
export const SES_SMTP_PORT = 587;

export interface SmtpSettings {
  /** Region of the SES identity (email-smtp.<region>.amazonaws.com). */
  region: string;
  /** From: address; its domain (or the address itself) must be a verified SES identity. */
  fromAddress: string;
  /** ARN (or name) of the secret with the SES SMTP username and password. */
  secretId: string;
}

export function sesSmtpEndpoint(region: string): string {
  return `email-smtp.${region}.amazonaws.com`;
}

/** The gitlab.rb section: GitLab's own SMTP keys, credentials read from the root-only files. */
export function renderSmtpGitlabRb(s: Pick<SmtpSettings, 'region' | 'fromAddress'>): string {
  const domain = s.fromAddress.split('@')[1];
  if (!domain) throw new Error(`SMTP from address "${s.fromAddress}" is not an email address`);
  const read = (path: string) => `File.read(${rubyString(path)}).strip`;
  return `
## Outgoing email through Amazon SES (SMTP, STARTTLS); credentials from Secrets Manager at boot.
gitlab_rails['smtp_enable'] = true
gitlab_rails['smtp_address'] = ${rubyString(sesSmtpEndpoint(s.region))}
gitlab_rails['smtp_port'] = ${SES_SMTP_PORT}
gitlab_rails['smtp_user_name'] = ${read(SMTP_SECRET_FILES.username)}
gitlab_rails['smtp_password'] = ${read(SMTP_SECRET_FILES.password)}
gitlab_rails['smtp_domain'] = ${rubyString(domain)}
gitlab_rails['smtp_authentication'] = 'login'
gitlab_rails['smtp_enable_starttls_auto'] = true
gitlab_rails['smtp_tls'] = false
gitlab_rails['smtp_openssl_verify_mode'] = 'peer'
gitlab_rails['gitlab_email_enabled'] = true
gitlab_rails['gitlab_email_from'] = ${rubyString(s.fromAddress)}
`;
}

/**
 * Bash lines that write the two files from the secret, for a script that already defines
 * `secret()` (get-secret-value … --output text) and runs with `umask 077` and `set -e`.
 */
export function renderSmtpSecretFetch(
  secretId: string,
  files: Record<keyof typeof SMTP_SECRET_FILES, string> = SMTP_SECRET_FILES,
): string {
  // jq -e: a secret without both keys fails the script, rather than leaving GitLab an empty login.
  return `secret '${secretId}' | jq -er .username > ${files.username}
secret '${secretId}' | jq -er .password > ${files.password}
`;
}

/** Lets each role read the operator's SMTP secret (by name: Secrets Manager adds a random suffix). */
export function grantSmtpSecret(scope: Construct, smtp: SmtpSettings, roles: iam.IGrantable[]): void {
  const secret = secretsmanager.Secret.fromSecretNameV2(scope, 'SmtpCredentials', smtp.secretId);
  for (const role of roles) secret.grantRead(role);
}
