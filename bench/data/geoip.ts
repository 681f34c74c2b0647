/**
 * Benchmark/test data: the Debian tor-geoipdb ranges expanded to minimal CIDRs
 * and shuffled with a fixed seed. Data preparation only (plain TS + BigInt),
 * deliberately independent of src/core so it can serve as a reference.
 *
 *   geoipCidrs(4)     -> ~562k IPv4 CIDRs
 *   geoipCidrs(6)     -> ~595k IPv6 CIDRs (RFC 5952 canonical text)
 *   geoipCidrFile(4)  -> path of bench/.data/geoip4-42.txt (written once)
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type GeoFamily = 4 | 6;

/** Where Debian's tor-geoipdb installs its files; overridable for tests. */
export const GEOIP_SOURCES: Record<GeoFamily, string> = {
  4: '/usr/share/tor/geoip',
  6: '/usr/share/tor/geoip6',
};

/** Directory holding package.json, found by walking up from this file (works from bench/ and dist/bench/). */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** Deterministic 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** In-place Fisher-Yates shuffle with mulberry32(seed). */
export function shuffle<T>(items: T[], seed: number): T[] {
  const rnd = mulberry32(seed);
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
  return items;
}

// ---------------------------------------------------------------- addresses

/** Parse IPv6 text (with optional `::` and trailing dotted IPv4) to a 128-bit BigInt. */
export function parseIPv6(text: string): bigint {
  const bad = () => new Error(`bench/data/geoip: invalid IPv6 address '${text}'`);
  let s = text.trim();
  const groups: number[] = [];
  const dotted = s.lastIndexOf('.') >= 0 ? s.slice(s.lastIndexOf(':') + 1) : '';
  if (dotted) {
    const v4 = parseIPv4(dotted);
    s = s.slice(0, s.length - dotted.length) + `${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) throw bad();
  const part = (h: string) => (h === '' ? [] : h.split(':').map((g) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw bad();
    return parseInt(g, 16);
  }));
  const head = part(halves[0]);
  if (halves.length === 2) {
    const tail = part(halves[1]);
    if (head.length + tail.length > 7) throw bad();
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  } else {
    if (head.length !== 8) throw bad();
    groups.push(...head);
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | BigInt(g);
  return v;
}

/** RFC 5952 canonical text: lowercase, no leading zeros, longest (first on tie) run of >= 2 zero groups as `::`. */
export function formatIPv6(v: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((v >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never compressed
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

export function parseIPv4(text: string): number {
  const p = text.trim().split('.');
  if (p.length !== 4 || !p.every((o) => /^\d{1,3}$/.test(o) && Number(o) <= 255)) {
    throw new Error(`bench/data/geoip: invalid IPv4 address '${text}'`);
  }
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}

export function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

// ---------------------------------------------------------------- expansion

function bitLength(v: bigint): number {
  return v === 0n ? 0 : v.toString(2).length;
}

/**
 * Minimal CIDR cover of the inclusive range [start, end] in a `bits`-wide
 * address space, as [network, prefixLength] pairs in address order.
 */
export function rangeToPrefixes(start: bigint, end: bigint, bits: 32 | 128): Array<[bigint, number]> {
  if (start > end) throw new Error(`bench/data/geoip: range start > end (${start} > ${end})`);
  const out: Array<[bigint, number]> = [];
  let cur = start;
  while (cur <= end) {
    // largest block aligned at cur (trailing zero bits of cur) that does not pass end
    const align = cur === 0n ? bits : bitLength(cur & -cur) - 1;
    const fit = bitLength(end - cur + 1n) - 1;
    const size = Math.min(align, fit);
    out.push([cur, bits - size]);
    cur += 1n << BigInt(size);
  }
  return out;
}

/** Expand tor-geoipdb lines (`start,end,CC`; `#` comments and blanks skipped) to CIDR strings, in file order. */
export function expandGeoipLines(lines: Iterable<string>, family: GeoFamily): string[] {
  const out: string[] = [];
  let n = 0;
  for (const raw of lines) {
    n++;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const f = line.split(',');
    if (f.length < 2) throw new Error(`bench/data/geoip: line ${n}: expected 'start,end,CC', got '${line}'`);
    if (family === 4) {
      const s = BigInt(f[0]);
      const e = BigInt(f[1]);
      for (const [net, len] of rangeToPrefixes(s, e, 32)) out.push(`${formatIPv4(Number(net))}/${len}`);
    } else {
      for (const [net, len] of rangeToPrefixes(parseIPv6(f[0]), parseIPv6(f[1]), 128)) {
        out.push(`${formatIPv6(net)}/${len}`);
      }
    }
  }
  return out;
}

function dataPath(family: GeoFamily, seed: number): string {
  return join(repoRoot(), 'bench', '.data', `geoip${family}-${seed}.txt`);
}

const cache = new Map<string, string[]>();

/** All geoip ranges of one family as minimal CIDRs, shuffled with mulberry32(seed). Memoised per process. */
export function geoipCidrs(family: GeoFamily, seed = 42): string[] {
  const key = `${family}-${seed}`;
  let list = cache.get(key);
  if (!list) {
    const src = GEOIP_SOURCES[family];
    const written = dataPath(family, seed);
    if (existsSync(written)) {
      // the expansion is deterministic: reuse the file another run wrote
      list = readFileSync(written, 'utf8').split('\n').filter((l) => l !== '');
      cache.set(key, list);
      return list.slice();
    }
    if (!existsSync(src)) {
      throw new Error(`tor-geoipdb not found (${src} missing): install it with \`apt-get install tor-geoipdb\``);
    }
    list = shuffle(expandGeoipLines(readFileSync(src, 'utf8').split('\n'), family), seed);
    cache.set(key, list);
  }
  return list.slice();
}

/** Path of bench/.data/geoip<family>-<seed>.txt (one CIDR per line), written on first use. */
export function geoipCidrFile(family: GeoFamily, seed = 42): string {
  const path = dataPath(family, seed);
  if (existsSync(path)) return path;
  mkdirSync(dirname(path), { recursive: true });
  // write then rename, so concurrent test workers never see a partial file
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, geoipCidrs(family, seed).join('\n') + '\n');
  renameSync(tmp, path);
  return path;
}
