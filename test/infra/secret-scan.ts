/**
 * Scans synthesized CloudFormation templates for values that look like secrets: private keys, AWS
 * access keys, GitLab tokens, literal passwords in properties or in user data, and random-looking
 * strings of the shape Secrets Manager generates. A template may name a secret (an ARN, a
 * `{{resolve:secretsmanager:…}}` reference, a file gitlab.rb reads) but never hold one.
 */
import type { Json } from './synth.js';

export interface SecretFinding {
  template: string;
  /** JSON path inside the template, e.g. Resources.X.Properties.UserData. */
  path: string;
  rule: string;
  excerpt: string;
}

/** Literal values Secrets Manager secrets may hold: the placeholder the first Rails node replaces. */
const PLACEHOLDERS = ['{}'];

const PATTERNS: { rule: string; re: RegExp }[] = [
  { rule: 'private-key', re: /-----BEGIN [A-Z ]*PRIVATE KEY-----/ },
  { rule: 'aws-access-key', re: /\b(?:AKIA|ASIA)[0-9A-Z]{16}\b/ },
  // GitLab's token prefixes (personal, runner, deploy, CI build, trigger, feed, incoming mail, OAuth,
  // SCIM, feature flag, agent) and the legacy runner registration token.
  {
    rule: 'gitlab-token',
    re: /\b(?:gl(?:pat|rt|dt|cbt|ptt|ft|imt|oas|soat|ffct|agent)-[0-9A-Za-z_-]{16,}|GR1348941[0-9A-Za-z_-]{16,})/,
  },
];

/** Property names that hold a credential; their value must come from a dynamic reference. */
const CREDENTIAL_PROPERTY = /(?:password|passphrase|authtoken|secretkey|privatekey|apikey|secretaccesskey)$/i;

/** `password = …`, `token: …`, `'secret_token'] = …` in scripts and config text. */
const ASSIGNMENT = /[\w-]*(?:password|passwd|token|secret)[\w'"\]-]*\s*(?:=>|=|:)\s*['"]?([^\s'",)}]+)/gi;
/** What may follow such a name: a file read, a shell expansion, a path, a placeholder, a reference. */
const INDIRECT_VALUE = /^(?:File\.read|\$|\/|<|\{\{|https?:|file:)/;

/** Keys whose strings are names, not values: logical ids, IAM actions, resource types, prose. */
const NAME_KEYS = new Set(['Ref', 'Fn::GetAtt', 'DependsOn', 'Type', 'Action', 'NotAction', 'Description']);

function entropy(text: string): number {
  const counts = new Map<string, number>();
  for (const c of text) counts.set(c, (counts.get(c) ?? 0) + 1);
  let bits = 0;
  for (const n of counts.values()) bits -= (n / text.length) * Math.log2(n / text.length);
  return bits;
}

const charClass = (c: string) => (/[a-z]/.test(c) ? 0 : /[A-Z]/.test(c) ? 1 : 2);

/**
 * A run of letters and digits as Secrets Manager generates them (`excludePunctuation`): mixed case
 * with digits, high entropy, and the class (lower, upper, digit) changing at most characters —
 * about 60 % for random text, under 40 % for words and CamelCase identifiers. Hex digests (asset
 * hashes, checksums) are lowercase and not secrets.
 */
export function looksRandom(run: string): boolean {
  if (run.length < 20) return false;
  if (!/[A-Z]/.test(run) || !/[a-z]/.test(run) || !/\d/.test(run)) return false;
  let switches = 0;
  for (let i = 1; i < run.length; i++) if (charClass(run[i]!) !== charClass(run[i - 1]!)) switches++;
  return switches / (run.length - 1) >= 0.4 && entropy(run) >= 3.5;
}

function* strings(value: Json, path: string[]): Generator<[string[], string]> {
  if (typeof value === 'string') yield [path, value];
  else if (Array.isArray(value))
    for (const [i, v] of value.entries()) yield* strings(v, [...path, String(i)]);
  else if (value && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) yield* strings(v, [...path, k]);
}

const isDynamicReference = (v: Json) => typeof v === 'string' && v.startsWith('{{resolve:');

export function scanTemplate(name: string, template: Json): SecretFinding[] {
  const findings: SecretFinding[] = [];
  // Logical ids appear inside text too (cfn-signal --resource <id>): names, not secrets.
  const logicalIds = new Set(
    Object.keys({ ...template.Resources, ...template.Parameters, ...template.Outputs }),
  );
  const add = (path: string[], rule: string, excerpt: string) =>
    findings.push({ template: name, path: path.join('.'), rule, excerpt: excerpt.slice(0, 80) });

  for (const [path, text] of strings(template, [])) {
    const key = [...path].reverse().find((p) => !/^\d+$/.test(p)) ?? '';
    if (NAME_KEYS.has(key) || path.includes('Fn::GetAtt') || path.includes('Fn::GetStackOutput')) continue;
    for (const { rule, re } of PATTERNS) {
      const m = re.exec(text);
      if (m) add(path, rule, m[0]);
    }
    // A dynamic reference or an ARN names a secret (…:SecretString:password::}}, …:secret:token-x).
    const plain = text.replace(/\{\{resolve:[^}]*\}\}/g, '').replace(/arn:aws[\w-]*:[^\s'"]*/g, '');
    for (const m of plain.matchAll(ASSIGNMENT)) {
      const value = m[1]!;
      if (INDIRECT_VALUE.test(value) || value.length < 8) continue;
      if (/\d/.test(value) || value.length >= 16) add(path, 'literal-assignment', m[0]);
    }
    for (const m of plain.matchAll(/[A-Za-z0-9]{20,}/g)) {
      if (!logicalIds.has(m[0]) && looksRandom(m[0])) add(path, 'random-token', m[0]);
    }
  }

  for (const [id, resource] of Object.entries((template.Resources ?? {}) as Record<string, Json>)) {
    const props = resource.Properties ?? {};
    const at = ['Resources', id, 'Properties'];
    if (resource.Type === 'AWS::SecretsManager::Secret' && props.SecretString !== undefined) {
      if (!PLACEHOLDERS.includes(props.SecretString))
        add([...at, 'SecretString'], 'secret-value', String(JSON.stringify(props.SecretString)));
    }
    for (const [path, value] of properties(props, at)) {
      const key = path[path.length - 1]!;
      if (CREDENTIAL_PROPERTY.test(key) && typeof value === 'string' && !isDynamicReference(value))
        add(path, 'credential-property', `${key}: ${value}`);
    }
  }
  return findings;
}

/** Every (path, value) of a properties object whose value is a string or an intrinsic. */
function* properties(value: Json, path: string[]): Generator<[string[], Json]> {
  if (!value || typeof value !== 'object') return;
  for (const [k, v] of Object.entries(value)) {
    yield [[...path, k], v];
    if (v && typeof v === 'object') yield* properties(v, [...path, k]);
  }
}

/** Every template of a cloud assembly, nested stage assemblies included, as [name, template]. */
export function assemblyTemplates(assembly: {
  stacks: { stackName: string; template: Json }[];
  nestedAssemblies: { nestedAssembly: { stacks: { stackName: string; template: Json }[] } }[];
}): [string, Json][] {
  return [...assembly.stacks, ...assembly.nestedAssemblies.flatMap((n) => n.nestedAssembly.stacks)].map(
    (s) => [s.stackName, s.template],
  );
}
