/**
 * Synthesizes an app once per test file (CDK synthesis is CPU-heavy) and gives each test what it
 * needs: CloudFormation templates, the cdk-nag report, the synth validation report and every
 * acknowledgement with its reason.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type App, type Stack, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { CloudAssembly } from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';

export interface ValidationViolation {
  ruleName: string;
  description: string;
  severity?: string;
  violatingConstructs?: { constructPath: string }[];
}

interface ValidationReport {
  pluginReports: { pluginName: string; conclusion: string; violations: ValidationViolation[] }[];
}

/** Synthesis is CPU-bound; on a shared, busy machine it can take far longer than a unit test. */
export const SYNTH_TIMEOUT_MS = 240_000;

export class Synthesized {
  readonly assembly: CloudAssembly;

  constructor(readonly app: App) {
    this.assembly = app.synth();
  }

  template(stack: Stack): Template {
    return Template.fromJSON(this.assembly.getStackArtifact(stack.artifactId).template, {
      skipCyclicalDependenciesCheck: true,
    });
  }

  /** Findings cdk-nag's AwsSolutions pack reports that no acknowledgement covers. */
  nagViolations(scope: IConstruct): string[] {
    const report = new AwsSolutionsChecks().validateScope(scope);
    return report.violations.map(
      (v) => `${v.ruleName} at ${v.violatingResources.map((r) => r.constructPath).join(', ')}`,
    );
  }

  /** Violations (errors and warnings) in the validation report written at synth, e.g. CloudFormation Validate's. */
  validationViolations(): ValidationViolation[] {
    const path = join(this.assembly.directory, 'validation-report.json');
    let report: ValidationReport;
    try {
      report = JSON.parse(readFileSync(path, 'utf8')) as ValidationReport;
    } catch {
      return [];
    }
    return report.pluginReports
      .flatMap((p) => p.violations)
      .filter((v) => !OPERATOR_MESSAGES.includes((v as { ruleName?: string }).ruleName ?? ''));
  }

  cleanup(): void {
    rmSync(this.assembly.directory, { recursive: true, force: true });
  }
}

/**
 * Warnings the app prints on purpose for the operator (they land in the validation report as
 * construct annotations): not findings. The DNS steps of a stage without a hosted zone.
 */
const OPERATOR_MESSAGES = ['Annotation::runner-fleet:certificate-dns-validation'];

/** Every acknowledgement under scope: `{ path, id, reason }`. */
export function acknowledgements(scope: IConstruct): { path: string; id: string; reason: string }[] {
  return scope.node.findAll().flatMap((c) =>
    c.node.metadata
      .filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((m) =>
        Object.entries(m.data as Record<string, string>).map(([id, reason]) => ({
          path: c.node.path,
          id,
          reason,
        })),
      ),
  );
}

/** All statements of every IAM policy resource (inline policies on roles included) in a template. */
export function policyStatements(template: Template): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const type of ['AWS::IAM::Policy', 'AWS::IAM::ManagedPolicy']) {
    for (const r of Object.values(template.findResources(type))) {
      out.push(
        ...((r as { Properties: { PolicyDocument: { Statement: Record<string, unknown>[] } } }).Properties
          .PolicyDocument.Statement ?? []),
      );
    }
  }
  for (const r of Object.values(template.findResources('AWS::IAM::Role'))) {
    const policies = (
      r as { Properties: { Policies?: { PolicyDocument: { Statement: Record<string, unknown>[] } }[] } }
    ).Properties.Policies;
    for (const p of policies ?? []) out.push(...p.PolicyDocument.Statement);
  }
  return out;
}

export const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

/** CloudFormation and CI YAML are untyped JSON; tests index into them freely. */
// biome-ignore lint/suspicious/noExplicitAny: see above
export type Json = any;
