/**
 * Slow, obviously-correct reference for the address core: sets are sorted
 * lists of disjoint inclusive BigInt intervals per family, built and
 * combined by brute force.
 */
export type Fam = 4 | 6;
export type Iv = [bigint, bigint];
export const BITS = { 4: 32, 6: 128 } as const;
export const MAX = { 4: (1n << 32n) - 1n, 6: (1n << 128n) - 1n } as const;

/** sort + merge overlapping or adjacent intervals */
export function normalize(ivs: Iv[]): Iv[] {
  const s = [...ivs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: Iv[] = [];
  for (const [a, b] of s) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1n) { if (b > last[1]) last[1] = b; } else out.push([a, b]);
  }
  return out;
}

export function has(set: Iv[], x: bigint): boolean {
  return set.some(([a, b]) => a <= x && x <= b);
}

/** elementary segments between all boundaries; membership decided per segment by `keep` */
function combine(a: Iv[], b: Iv[], keep: (inA: boolean, inB: boolean) => boolean): Iv[] {
  const pts = new Set<bigint>();
  for (const [s, e] of [...a, ...b]) { pts.add(s); pts.add(e + 1n); }
  const sorted = [...pts].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const out: Iv[] = [];
  for (let i = 0; i + 1 < sorted.length; i++) {
    const s = sorted[i], e = sorted[i + 1] - 1n;
    if (keep(has(a, s), has(b, s))) out.push([s, e]);
  }
  return normalize(out);
}
export const union = (a: Iv[], b: Iv[]) => combine(a, b, (x, y) => x || y);
export const intersect = (a: Iv[], b: Iv[]) => combine(a, b, (x, y) => x && y);
export const difference = (a: Iv[], b: Iv[]) => combine(a, b, (x, y) => x && !y);

/** minimal CIDR cover: greedily the largest aligned block that fits */
export function cover(set: Iv[], f: Fam): Array<[bigint, number]> {
  const W = BITS[f];
  const out: Array<[bigint, number]> = [];
  for (const [s0, e] of set) {
    let s = s0;
    while (s <= e) {
      let k = 0;
      while (k < W && s % (1n << BigInt(k + 1)) === 0n && s + (1n << BigInt(k + 1)) - 1n <= e) k++;
      out.push([s, W - k]);
      s += 1n << BigInt(k);
    }
  }
  return out;
}

export function fmt4(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 255n)).join('.');
}

/** RFC 5952 text (IPv4-mapped addresses in mixed notation) */
export function fmt6(v: bigint): string {
  if (v >> 32n === 0xffffn) return `::ffff:${fmt4(v & 0xffffffffn)}`;
  const g = Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(112 - 16 * i)) & 0xffffn));
  let bs = -1, bl = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bl) { bs = i; bl = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bs < 0) return hex.join(':');
  return `${hex.slice(0, bs).join(':')}::${hex.slice(bs + bl).join(':')}`;
}

export const fmt = (f: Fam, v: bigint) => (f === 4 ? fmt4(v) : fmt6(v));
export const cidrText = (f: Fam, [s, p]: [bigint, number]) => `${fmt(f, s)}/${p}`;

export function blockEnd(f: Fam, s: bigint, p: number): bigint {
  return s + (1n << BigInt(BITS[f] - p)) - 1n;
}

/** AddrSet arrays -> reference intervals */
export function fromV4(a: Uint32Array): Iv[] {
  const out: Iv[] = [];
  for (let i = 0; i < a.length; i += 2) out.push([BigInt(a[i]), BigInt(a[i + 1])]);
  return out;
}
export function fromV6(a: BigUint64Array): Iv[] {
  const out: Iv[] = [];
  for (let i = 0; i < a.length; i += 4) out.push([(a[i] << 64n) | a[i + 1], (a[i + 2] << 64n) | a[i + 3]]);
  return out;
}
