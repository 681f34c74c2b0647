/** Small helpers shared by the compiler, renderers and explain. */
import { basename, dirname, relative } from 'node:path';
import type { AddrSet } from '../core/index.js';
import type { SourceLoc } from '../errors.js';
import type { PortRange } from '../policy/model.js';

export const CELLWALL_VERSION = '0.1.0';

export { sha256 } from '../core/sha256.js';

/** Union of many sets (one implementation for the loader and the compiler). */
export { unionAll } from '../policy/addresses.js';

export function portsText(ports: PortRange[]): string {
  return ports.map((p) => (p.from === p.to ? String(p.from) : `${p.from}-${p.to}`)).join(',');
}

/** number of ports in a list of ranges */
export function portCount(ports: PortRange[]): number {
  let n = 0;
  for (const p of ports) n += p.to - p.from + 1;
  return n;
}

/** multiport takes at most 15 slots; a range takes 2. Splits a port list into rule-sized chunks. */
export function multiportChunks(ports: PortRange[]): PortRange[][] {
  const out: PortRange[][] = [];
  let cur: PortRange[] = [];
  let slots = 0;
  for (const p of ports) {
    const need = p.from === p.to ? 1 : 2;
    if (slots + need > 15) {
      out.push(cur);
      cur = [];
      slots = 0;
    }
    cur.push(p);
    slots += need;
  }
  if (cur.length) out.push(cur);
  return out;
}

/** `file:line:col` with the file relative to the main policy file's folder, so output does not depend on the cwd. */
export function locText(loc: SourceLoc, policyFile: string): string {
  return `${shownFile(loc.file, policyFile)}:${loc.line}:${loc.col}`;
}

/** a policy has few files but CF-scale plans hold ~10^5 locations: resolve each file once per working directory */
const shown = new Map<string, Map<string, string>>();
let shownCwd = '';

function shownFile(file: string, policyFile: string): string {
  if (!policyFile) return file;
  // relative() resolves relative paths against the working directory
  const cwd = process.cwd();
  if (cwd !== shownCwd || shown.size > 100) { shown.clear(); shownCwd = cwd; }
  let files = shown.get(policyFile);
  if (!files) shown.set(policyFile, (files = new Map()));
  let out = files.get(file);
  if (out === undefined) {
    const rel = relative(dirname(policyFile), file);
    out = rel && !rel.startsWith('..') ? rel : basename(file);
    if (files.size > 1000) files.clear();
    files.set(file, out);
  }
  return out;
}

export function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Cheap pre-check in JS (no WASM call): can `outer` contain `inner` in family f?
 * False when inner reaches below outer's lowest or above its highest address.
 */
export function mayContain(outer: AddrSet, inner: AddrSet, f: 4 | 6): boolean {
  if (f === 4) {
    const o = outer.v4, i = inner.v4;
    if (i.length === 0) return true;
    if (o.length === 0) return false;
    return i[0] >= o[0] && i[i.length - 1] <= o[o.length - 1];
  }
  const o = outer.v6, i = inner.v6;
  if (i.length === 0) return true;
  if (o.length === 0) return false;
  const lo = (a: BigUint64Array, k: number) => (a[k] << 64n) | a[k + 1];
  return lo(i, 0) >= lo(o, 0) && lo(i, i.length - 2) <= lo(o, o.length - 2);
}
