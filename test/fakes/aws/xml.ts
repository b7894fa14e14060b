// Tiny XML writer for the EC2 / awsQuery response bodies. String building is enough: the fake only
// ever writes XML, and every value goes through `esc` so tag values and user data cannot break it.

export type XmlValue = string | number | boolean | Date | undefined | null;

export function esc(s: string): string {
  return s
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

function text(v: Exclude<XmlValue, undefined | null>): string {
  if (v instanceof Date) return v.toISOString();
  return esc(String(v));
}

/** `<name>value</name>`, or nothing when the value is absent (AWS omits unset members). */
export function el(name: string, value: XmlValue): string {
  if (value === undefined || value === null) return '';
  return `<${name}>${text(value)}</${name}>`;
}

/** `<name>…</name>` around already-built XML; omitted when `inner` is undefined. */
export function wrap(name: string, inner: string | undefined): string {
  if (inner === undefined) return '';
  return `<${name}>${inner}</${name}>`;
}

/** EC2 lists: `<fooSet><item>…</item></fooSet>`. Written even when empty, as EC2 does. */
export function ec2List<T>(name: string, items: readonly T[], render: (item: T) => string): string {
  return `<${name}>${items.map((i) => `<item>${render(i)}</item>`).join('')}</${name}>`;
}

/** awsQuery lists: `<Foo><member>…</member></Foo>`. */
export function memberList<T>(name: string, items: readonly T[], render: (item: T) => string): string {
  return `<${name}>${items.map((i) => `<member>${render(i)}</member>`).join('')}</${name}>`;
}

export const XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>';
