import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Stack, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/app.js';
import { MANAGER_METRICS_LISTEN } from '../../infra/fleet/runner-configs.js';
import { healthCheckDocumentContent } from '../../infra/shared/health-check.js';
import { appWithContext, cdkJson } from './cdk-context.js';
import { assemblyTemplates, scanTemplate } from './secret-scan.js';
import { type Json, SYNTH_TIMEOUT_MS, Synthesized } from './synth.js';

/** The whole app, synthesized once as `npm run synth` does (cdk.json context, no credentials). */
let synth: Synthesized;

beforeAll(() => {
  synth = new Synthesized(buildApp(appWithContext()));
}, SYNTH_TIMEOUT_MS);
afterAll(() => synth?.cleanup());

describe('the CDK app', () => {
  it('is what cdk.json runs', () => {
    expect(cdkJson.app).toBe('node dist/infra/app.js');
  });

  it('synthesizes the pipeline, deploy-target, GitLab POC and runner fleet stacks', () => {
    const top = synth.assembly.stacks.map((s) => s.stackName).sort();
    expect(top).toEqual([
      'RunnerFleet-Dev-DeployTarget',
      'RunnerFleet-DevOps-Pipeline',
      'RunnerFleet-Prod-DeployTarget',
    ]);
    for (const [stage, account] of [
      ['Dev', '222222222222'],
      ['Prod', '333333333333'],
    ] as const) {
      const nested = synth.assembly.getNestedAssembly(`assembly-${stage}`);
      expect(nested.stacks.map((s) => s.hierarchicalId).sort()).toEqual([
        `${stage}/Fleet`,
        `${stage}/GitLab`,
        `${stage}/JobAmi`,
      ]);
      for (const s of nested.stacks) expect(s.environment.account).toBe(account);
    }
  });

  it('needed no lookup: no missing context anywhere, so synth works offline and without credentials', () => {
    const manifests = [
      join(synth.assembly.directory, 'manifest.json'),
      ...['Dev', 'Prod'].map((stage) =>
        join(synth.assembly.getNestedAssembly(`assembly-${stage}`).directory, 'manifest.json'),
      ),
    ];
    for (const file of manifests) {
      expect(JSON.parse(readFileSync(file, 'utf8')).missing, file).toBeUndefined();
    }
  });

  it('has no unacknowledged cdk-nag finding and no CloudFormation-validate finding', () => {
    // The cdk-nag plugin registered by buildApp would have thrown during synth; the report says the rest.
    expect(synth.validationViolations()).toEqual([]);
  });

  it('has no secret-looking value in any template it synthesizes (every stack of both stages)', () => {
    const templates = assemblyTemplates(synth.assembly);
    expect(templates).toHaveLength(9);
    expect(templates.flatMap(([name, template]) => scanTemplate(name, template))).toEqual([]);
  });

  it('gives Dev and Prod their own host name, certificate and fleet (from cdk.json stages)', () => {
    const seen = { certificate: new Set<string>(), fleetTag: new Set<string>(), logGroup: new Set<string>() };
    for (const stage of ['Dev', 'Prod']) {
      const nested = synth.assembly.getNestedAssembly(`assembly-${stage}`);
      const gitlab = nested.getStackByName(`${stage}-GitLab`).template;
      const fleet = nested.getStackByName(`${stage}-Fleet`).template;
      const certs = Object.values(gitlab.Resources).filter(
        (r: Json) => r.Type === 'AWS::CertificateManager::Certificate',
      ) as Json[];
      expect(certs).toHaveLength(1);
      seen.certificate.add(certs[0].Properties.DomainName);
      const logs = Object.values(fleet.Resources).filter(
        (r: Json) => r.Type === 'AWS::Logs::LogGroup',
      ) as Json[];
      seen.logGroup.add(logs[0].Properties.LogGroupName);
      const lt = Object.values(fleet.Resources).find(
        (r: Json) =>
          r.Type === 'AWS::EC2::LaunchTemplate' && JSON.stringify(r).includes('runner-fleet:fleet'),
      ) as Json;
      const tags = lt.Properties.TagSpecifications.flatMap((t: Json) => t.Tags);
      seen.fleetTag.add(tags.find((t: Json) => t.Key === 'runner-fleet:fleet').Value);
    }
    expect([...seen.certificate].sort()).toEqual(['gitlab.dev.example.com', 'gitlab.example.com']);
    expect([...seen.fleetTag].sort()).toEqual(['ci', 'ci-dev']);
    expect([...seen.logGroup].sort()).toEqual(['/runner-fleet/ci', '/runner-fleet/ci-dev']);
  });

  it("launches jobs from the AMI the stage's image pipeline published, deployed before the fleet", () => {
    for (const stage of ['Dev', 'Prod']) {
      const nested = synth.assembly.getNestedAssembly(`assembly-${stage}`);
      const ami = nested.getStackByName(`${stage}-JobAmi`);
      const fleet = nested.getStackByName(`${stage}-Fleet`);
      expect(fleet.dependencies.map((d) => d.id)).toContain(ami.id);
      const parameter = Object.values(ami.template.Resources).find(
        (r: Json) => r.Type === 'AWS::SSM::Parameter',
      ) as Json;
      const lt = Object.values(fleet.template.Resources).find(
        (r: Json) =>
          r.Type === 'AWS::EC2::LaunchTemplate' && JSON.stringify(r).includes('runner-fleet:fleet'),
      ) as Json;
      // Resolved by CloudFormation from the parameter at each deploy, never a literal id.
      const ref = lt.Properties.LaunchTemplateData.ImageId.Ref;
      expect(fleet.template.Parameters[ref]).toEqual({
        Type: 'AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>',
        Default: parameter.Properties.Name,
      });
      // The tools are on the image: the job's user data is only the dead-man switch.
      const userData = lt.Properties.LaunchTemplateData.UserData['Fn::Base64'];
      expect(userData).toMatch(/^#!\/bin\/bash\n/);
      expect(userData).toContain('shutdown -P +');
      expect(userData).not.toContain('dnf install');
    }
  });

  it("gives each stage the smoke test's health checks, on the instances the deploy role may reach", () => {
    for (const stage of ['dev', 'prod'] as const) {
      const Stage = stage === 'dev' ? 'Dev' : 'Prod';
      const nested = synth.assembly.getNestedAssembly(`assembly-${Stage}`);
      for (const [stack, target, url] of [
        ['GitLab', 'gitlab', 'http://127.0.0.1/-/readiness'],
        ['Fleet', 'manager', `http://${MANAGER_METRICS_LISTEN}/healthz`],
      ] as const) {
        const template = nested.getStackByName(`${Stage}-${stack}`).template;
        const docs = Object.values(template.Resources).filter(
          (r: Json) => r.Type === 'AWS::SSM::Document' && r.Properties.Name?.endsWith('-health'),
        ) as Json[];
        expect(docs).toHaveLength(1);
        expect(docs[0].Properties.Name).toBe(`runner-fleet-${stage}-${target}-health`);
        expect(docs[0].Properties.Content).toEqual(healthCheckDocumentContent(url));
        // The tag the deploy role's SendCommand condition names, on the group's instances.
        const groups = Object.values(template.Resources).filter(
          (r: Json) =>
            r.Type === 'AWS::AutoScaling::AutoScalingGroup' &&
            r.Properties.Tags?.some((t: Json) => t.Key === 'runner-fleet:health-check'),
        ) as Json[];
        expect(groups).toHaveLength(1);
        expect(groups[0].Properties.Tags).toContainEqual({
          Key: 'runner-fleet:health-check',
          Value: `${stage}-${target}`,
          PropagateAtLaunch: true,
        });
      }
      // What the smoke test reads from `cdk deploy --outputs-file`.
      const outputs = nested.getStackByName(`${Stage}-GitLab`).template.Outputs;
      expect(outputs.GitlabUrl.Value).toBe(`https://gitlab.${stage === 'dev' ? 'dev.' : ''}example.com`);
      expect(outputs.LoadBalancerDnsName.Value['Fn::GetAtt'][1]).toBe('DNSName');
    }
    // postgresMajor 16 -> 17 must upgrade in place (docs/infrastructure.md, Upgrading).
    const dev = synth.assembly.getNestedAssembly('assembly-Dev').getStackByName('Dev-GitLab').template;
    const databases = Object.values(dev.Resources).filter(
      (r: Json) => r.Type === 'AWS::RDS::DBInstance',
    ) as Json[];
    expect(databases.map((d) => d.Properties.AllowMajorVersionUpgrade)).toEqual([true]);
    const deployTarget = synth.assembly.getStackByName('RunnerFleet-Dev-DeployTarget').template;
    expect(JSON.stringify(deployTarget)).toContain('document/runner-fleet-dev-manager-health');
  });

  it('refuses at synth two stages with one host name, naming it', () => {
    const same = { domainName: 'gitlab.example.com' };
    const context = { stages: { dev: { ...same, fleetName: 'a' }, prod: { ...same, fleetName: 'b' } } };
    expect(() => buildApp(appWithContext(context))).toThrow(
      /dev and prod both use the host name gitlab.example.com/,
    );
  });

  it('fails the synth on an unacknowledged cdk-nag finding', () => {
    const app = new App({ outdir: join(synth.assembly.directory, 'gate') });
    new s3.Bucket(new Stack(app, 'Careless'), 'Bucket');
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    expect(() => app.synth()).toThrow(/AwsSolutions-S1/);
  });
});
