// Decoding of form-encoded query-protocol requests into a tree.
//
// Both EC2 (`TagSpecification.1.Tag.2.Key`) and awsQuery (`Tags.member.1.Key`) flatten nested
// shapes into dotted keys with 1-based list indexes. One generic decoder turns the keys back into
// objects and arrays; awsQuery's `member` level is folded away so handlers read both the same way.

export type QNode = string | QNode[] | QObject;
export interface QObject {
  [key: string]: QNode;
}

const INDEX = /^[1-9][0-9]{0,5}$/;

export function decodeForm(body: string): { flat: Record<string, string>; tree: QObject } {
  const flat: Record<string, string> = {};
  const raw: Record<string, unknown> = {};
  for (const [key, value] of new URLSearchParams(body)) {
    flat[key] = value;
    const parts = key.split('.');
    let node = raw;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      // Keys like `__proto__` must never reach an object's prototype chain.
      if (part === '__proto__' || part === 'constructor' || part === 'prototype') break;
      if (i === parts.length - 1) {
        node[part] = value;
      } else {
        const next = node[part];
        if (typeof next !== 'object' || next === null) {
          const fresh: Record<string, unknown> = {};
          node[part] = fresh;
          node = fresh;
        } else {
          node = next as Record<string, unknown>;
        }
      }
    }
  }
  return { flat, tree: normalize(raw) as QObject };
}

/** Objects whose keys are all list indexes become arrays (ordered by index); `{member: [...]}` unwraps. */
function normalize(node: unknown): QNode {
  if (typeof node === 'string') return node;
  const obj = node as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length > 0 && keys.every((k) => INDEX.test(k))) {
    return keys
      .map(Number)
      .sort((a, b) => a - b)
      .map((k) => normalize(obj[String(k)]));
  }
  const out: QObject = {};
  for (const k of keys) out[k] = normalize(obj[k]);
  if (keys.length === 1 && keys[0] === 'member')
    return Array.isArray(out.member) ? out.member : [out.member!];
  return out;
}

export function obj(node: QNode | undefined, key: string): QObject | undefined {
  if (node === undefined || typeof node === 'string' || Array.isArray(node)) return undefined;
  const v = node[key];
  if (v === undefined || typeof v === 'string' || Array.isArray(v)) return undefined;
  return v;
}

export function str(node: QNode | undefined, key: string): string | undefined {
  if (node === undefined || typeof node === 'string' || Array.isArray(node)) return undefined;
  const v = node[key];
  return typeof v === 'string' ? v : undefined;
}

export function num(node: QNode | undefined, key: string): number | undefined {
  const s = str(node, key);
  if (s === undefined || s === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : Number.NaN;
}

export function bool(node: QNode | undefined, key: string): boolean | undefined {
  const s = str(node, key);
  if (s === undefined) return undefined;
  return s === 'true';
}

/** A list member; an empty awsQuery list arrives as `Key=` and reads as []. */
export function list(node: QNode | undefined, key: string): QNode[] {
  if (node === undefined || typeof node === 'string' || Array.isArray(node)) return [];
  const v = node[key];
  if (v === undefined || typeof v === 'string') return [];
  if (Array.isArray(v)) return v;
  return [v];
}

export function strList(node: QNode | undefined, key: string): string[] {
  return list(node, key).filter((v): v is string => typeof v === 'string');
}
