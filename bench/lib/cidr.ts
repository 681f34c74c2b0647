/**
 * Reference-side CIDR helpers for the benchmarks (plain TS + BigInt, independent
 * of src/core so they can check it): canonical text, output comparison,
 * containment and deterministic lookup queries.
 */
import {
  type GeoFamily, formatIPv4, formatIPv6, mulberry32, parseIPv4, parseIPv6,
} from '../data/geoip.js';

export interface Prefix { start: bigint; len: number }

/** Parse `addr[/len]` (a bare address counts as a host route). */
export function parsePrefix(text: string, family: GeoFamily): Prefix {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addr = slash < 0 ? t : t.slice(0, slash);
  const len = slash < 0 ? (family === 4 ? 32 : 128) : Number(t.slice(slash + 1));
  const start = family === 4 ? BigInt(parseIPv4(addr)) : parseIPv6(addr);
  return { start, len };
}

export function formatAddr(v: bigint, family: GeoFamily): string {
  return family === 4 ? formatIPv4(Number(v)) : formatIPv6(v);
}

/** `addr/len` in canonical text (RFC 5952 for v6, explicit /32 and /128). */
export function canonCidr(text: string, family: GeoFamily): string {
  const p = parsePrefix(text, family);
  return `${formatAddr(p.start, family)}/${p.len}`;
}

/** Non-empty lines of a tool's output. */
export function outputLines(stdout: string): string[] {
  return stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

export interface Agreement {
  agree: boolean;
  counts: [number, number];
  /** first differing entry, when they differ */
  firstDifference?: { index: number; a: string | null; b: string | null };
}

/**
 * Compare two CIDR lists as sets of canonical prefixes (order-insensitive:
 * both are sorted by address first).
 */
export function compareCidrLists(a: string[], b: string[], family: GeoFamily): Agreement {
  const norm = (xs: string[]) => xs.map((x) => parsePrefix(x, family))
    .sort((p, q) => (p.start < q.start ? -1 : p.start > q.start ? 1 : p.len - q.len))
    .map((p) => `${formatAddr(p.start, family)}/${p.len}`);
  const na = norm(a);
  const nb = norm(b);
  const res: Agreement = { agree: true, counts: [a.length, b.length] };
  const n = Math.max(na.length, nb.length);
  for (let i = 0; i < n; i++) {
    if (na[i] !== nb[i]) {
      res.agree = false;
      res.firstDifference = { index: i, a: na[i] ?? null, b: nb[i] ?? null };
      break;
    }
  }
  return res;
}

/**
 * Sorted, disjoint prefixes as parallel start/end arrays, for reference lookups
 * by binary search. Throws if the prefixes overlap.
 */
export class PrefixIndex {
  readonly starts: bigint[];
  readonly ends: bigint[];
  /** position in the original list, per sorted entry */
  readonly ids: number[];

  constructor(prefixes: string[], readonly family: GeoFamily) {
    const bits = BigInt(family === 4 ? 32 : 128);
    const items = prefixes.map((t, id) => {
      const p = parsePrefix(t, family);
      return { s: p.start, e: p.start + (1n << (bits - BigInt(p.len))) - 1n, id };
    }).sort((x, y) => (x.s < y.s ? -1 : x.s > y.s ? 1 : 0));
    for (let i = 1; i < items.length; i++) {
      if (items[i].s <= items[i - 1].e) throw new Error(`PrefixIndex: overlapping prefixes ${prefixes[items[i].id]}`);
    }
    this.starts = items.map((x) => x.s);
    this.ends = items.map((x) => x.e);
    this.ids = items.map((x) => x.id);
  }

  /** id (index in the original list) of the prefix containing v, or -1 */
  find(v: bigint): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid] > v) hi = mid - 1;
      else if (this.ends[mid] < v) lo = mid + 1;
      else return this.ids[mid];
    }
    return -1;
  }
}

/**
 * n query addresses (text), deterministic for a seed: half drawn inside random
 * prefixes of the list (hits), half uniform over the space (v4) or 2000::/3 (v6).
 */
export function lookupQueries(prefixes: string[], family: GeoFamily, n: number, seed: number): string[] {
  const rnd = mulberry32(seed);
  const bits = family === 4 ? 32 : 128;
  const rand = (nbits: number): bigint => { // uniform nbits-bit value
    let v = 0n;
    for (let got = 0; got < nbits; got += 32) v = (v << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
    return v & ((1n << BigInt(nbits)) - 1n);
  };
  const parsed = prefixes.map((p) => parsePrefix(p, family));
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    let v: bigint;
    if (i % 2 === 0) {
      const p = parsed[Math.floor(rnd() * parsed.length)];
      v = p.start + (p.len === bits ? 0n : rand(bits - p.len));
    } else {
      v = family === 4 ? rand(32) : (1n << 125n) | rand(125);
    }
    out.push(formatAddr(v, family));
  }
  return out;
}
