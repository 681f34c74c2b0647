// CIDR cover of interval sets, text rendering (IPv4 dotted quad, IPv6 in
// RFC 5952 form), and iprange-style prefix-length reduction.
import { outReserve, outAdvance, recReserve } from './mem';

const HEX = memory.data<u8>([48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102]);

export function renderAddr4(a: u32): void {
  let q = outReserve(16);
  const q0 = q;
  for (let i = 24; i >= 0; i -= 8) {
    const v = (a >> <u32>i) & 0xff;
    if (v >= 100) { store<u8>(q, <u8>(48 + v / 100)); store<u8>(q, <u8>(48 + (v / 10) % 10), 1); store<u8>(q, <u8>(48 + v % 10), 2); q += 3; }
    else if (v >= 10) { store<u8>(q, <u8>(48 + v / 10)); store<u8>(q, <u8>(48 + v % 10), 1); q += 2; }
    else { store<u8>(q, <u8>(48 + v)); q += 1; }
    if (i) { store<u8>(q, 46); q++; }
  }
  outAdvance(q - q0);
}

export function renderAddr6(hi: u64, lo: u64): void {
  if (hi == 0 && (lo >> 32) == 0xffff) { // IPv4-mapped: ::ffff:a.b.c.d (RFC 5952 section 5)
    const q = outReserve(7);
    store<u8>(q, 58); store<u8>(q, 58, 1);
    store<u8>(q, 102, 2); store<u8>(q, 102, 3); store<u8>(q, 102, 4); store<u8>(q, 102, 5); store<u8>(q, 58, 6);
    outAdvance(7);
    renderAddr4(<u32>lo);
    return;
  }
  // longest run of zero groups (length >= 2), first one on ties
  let bestS = -1, bestL = 1, runS = -1, runL = 0;
  for (let k = 0; k < 8; k++) {
    const g = k < 4 ? (hi >> <u64>((3 - k) * 16)) & 0xffff : (lo >> <u64>((7 - k) * 16)) & 0xffff;
    if (g == 0) {
      if (runS < 0) { runS = k; runL = 0; }
      runL++;
      if (runL > bestL) { bestL = runL; bestS = runS; }
    } else runS = -1;
  }
  let q = outReserve(40);
  const q0 = q;
  for (let k = 0; k < 8; k++) {
    if (k == bestS) {
      store<u8>(q, 58); store<u8>(q, 58, 1); q += 2;
      k += bestL - 1;
      continue;
    }
    if (k > 0 && k != bestS + bestL) { store<u8>(q, 58); q++; }
    const g = <u32>(k < 4 ? (hi >> <u64>((3 - k) * 16)) & 0xffff : (lo >> <u64>((7 - k) * 16)) & 0xffff);
    let started = false;
    for (let sh = 12; sh >= 0; sh -= 4) {
      const d = (g >> <u32>sh) & 0xf;
      if (d != 0 || started || sh == 0) { store<u8>(q, load<u8>(HEX + d)); q++; started = true; }
    }
  }
  outAdvance(q - q0);
}

function renderDec2(v: u32): void {
  const q = outReserve(3);
  if (v >= 100) { store<u8>(q, <u8>(48 + v / 100)); store<u8>(q, <u8>(48 + (v / 10) % 10), 1); store<u8>(q, <u8>(48 + v % 10), 2); outAdvance(3); }
  else if (v >= 10) { store<u8>(q, <u8>(48 + v / 10)); store<u8>(q, <u8>(48 + v % 10), 1); outAdvance(2); }
  else { store<u8>(q, <u8>(48 + v)); outAdvance(1); }
}

// --- cover -----------------------------------------------------------------
export const MODE_TEXT: i32 = 0;
export const MODE_COUNT: i32 = 1;
export const MODE_BLOCKS: i32 = 2;
export const F_BARE: u32 = 1; // write single hosts without /32 or /128

export const counts = memory.data(129 * 8);  // u64 per prefix length
export const enabled = memory.data(129);     // u8 per prefix length
let useEnabled = false;
let blockId: i64 = 0;
let textFlags: u32 = 0;
export let coverCount: u64 = 0;

// @ts-ignore: decorator
@inline function ctz128(hi: u64, lo: u64): i32 {
  if (lo != 0) return <i32>ctz(lo);
  if (hi != 0) return 64 + <i32>ctz(hi);
  return 128;
}

// text written before and after each CIDR (renderLines): e.g. "add SET " and " -exist"
let linePre: usize = 0, linePreLen: usize = 0, lineSuf: usize = 0, lineSufLen: usize = 0;

function emit(fam: i32, hi: u64, lo: u64, p: i32): void {
  coverCount++;
  if (coverMode == MODE_TEXT) {
    if (linePreLen) { memory.copy(outReserve(linePreLen), linePre, linePreLen); outAdvance(linePreLen); }
    if (fam == 4) renderAddr4(<u32>lo); else renderAddr6(hi, lo);
    const W = fam == 4 ? 32 : 128;
    if (!((textFlags & F_BARE) && p == W)) {
      store<u8>(outReserve(1), 47); outAdvance(1);
      renderDec2(<u32>p);
    }
    if (lineSufLen) { memory.copy(outReserve(lineSufLen), lineSuf, lineSufLen); outAdvance(lineSufLen); }
    store<u8>(outReserve(1), 10); outAdvance(1);
  } else if (coverMode == MODE_COUNT) {
    const c = counts + (<usize>p << 3);
    store<u64>(c, load<u64>(c) + 1);
  } else {
    const r = recReserve(24);
    store<u64>(r, hi); store<u64>(r, lo, 8);
    store<u64>(r, <u64>p | (<u64>blockId << 8), 16);
    if (blockIdAuto) blockId++;
  }
}
let coverMode: i32 = 0;
let blockIdAuto = false;

/** Greedy CIDR cover of [s, e]; v4 values live in lo with hi = 0. */
function coverRange(fam: i32, shi: u64, slo: u64, ehi: u64, elo: u64): void {
  const W = fam == 4 ? 32 : 128;
  while (true) {
    // len = e - s + 1 (0 means 2^128)
    let lhi = ehi - shi - (elo < slo ? 1 : 0);
    let llo = elo - slo;
    llo += 1; if (llo == 0) lhi += 1;
    let lg: i32; // floor(log2(len))
    if (lhi == 0 && llo == 0) lg = 128;
    else if (lhi != 0) lg = 127 - <i32>clz(lhi);
    else lg = 63 - <i32>clz(llo);
    let k = ctz128(shi, slo);
    if (k > W) k = W;
    if (lg < k) k = lg;
    let p = W - k;
    if (useEnabled) {
      while (p < W && !load<u8>(enabled + p)) p++;
      k = W - p;
    }
    emit(fam, shi, slo, p);
    // block end = s | (2^k - 1); stop at e, else continue after it
    let bhi = shi, blo = slo;
    if (k >= 128) return;
    if (k < 64) blo = slo | ((<u64>1 << <u64>k) - 1);
    else { blo = <u64>-1; bhi = shi | ((<u64>1 << <u64>(k - 64)) - 1); }
    if (bhi == ehi && blo == elo) return;
    slo = blo + 1;
    shi = slo == 0 ? bhi + 1 : bhi;
  }
}

/** Cover every range of a normalized set (v4: u32 pairs, v6: u64 quads). */
export function coverSet(fam: i32, p: usize, n: usize, mode: i32, flags: u32): u64 {
  coverMode = mode; textFlags = flags; coverCount = 0;
  if (mode == MODE_COUNT) memory.fill(counts, 0, 129 * 8);
  for (let i: usize = 0; i < n; i++) {
    if (fam == 4) coverRange(4, 0, <u64>load<u32>(p + (i << 3)), 0, <u64>load<u32>(p + (i << 3), 4));
    else {
      const q = p + (i << 5);
      coverRange(6, load<u64>(q), load<u64>(q, 8), load<u64>(q, 16), load<u64>(q, 24));
    }
  }
  return coverCount;
}

/** Text rendering of the minimal CIDR cover. */
export function renderSet(fam: i32, p: usize, n: usize, flags: u32): u64 {
  useEnabled = false;
  return coverSet(fam, p, n, MODE_TEXT, flags);
}

/** renderSet with `pre` before and `suf` after every CIDR (one payload line per CIDR, e.g. ipset `add` lines). */
export function renderLines(fam: i32, p: usize, n: usize, flags: u32, pre: usize, preLen: usize, suf: usize, sufLen: usize): u64 {
  linePre = pre; linePreLen = preLen; lineSuf = suf; lineSufLen = sufLen;
  const c = renderSet(fam, p, n, flags);
  linePreLen = 0; lineSufLen = 0;
  return c;
}

/** Block records (hi, lo, prefix | id << 8) for the lookup; id = base + the block's index in cover order. */
export function blocksOf(fam: i32, p: usize, n: usize, base: i64): u64 {
  useEnabled = false;
  blockIdAuto = true;
  blockId = base;
  return coverSet(fam, p, n, MODE_BLOCKS, 0);
}

/** Block records for one range tagged with id. */
export function blocksOfRange(fam: i32, shi: u64, slo: u64, ehi: u64, elo: u64, id: u64): void {
  useEnabled = false;
  coverMode = MODE_BLOCKS; blockIdAuto = false; blockId = <i64>id;
  coverRange(fam, shi, slo, ehi, elo);
}

/**
 * Prefix-length reduction as iprange --ipset-reduce: repeatedly fold the
 * prefix length whose entries cost the fewest extra entries into the next
 * longer populated length, while the total stays within
 * max(total * (100 + percent) / 100, minEntries). Renders the result.
 */
export function reduceSet(fam: i32, p: usize, n: usize, percent: u32, minEntries: u64, flags: u32): u64 {
  const W = fam == 4 ? 32 : 128;
  useEnabled = false;
  coverSet(fam, p, n, MODE_COUNT, 0);
  let total: u64 = 0;
  for (let i = 0; i <= W; i++) {
    const c = load<u64>(counts + (<usize>i << 3));
    total += c;
    store<u8>(enabled + i, c ? 1 : 0);
  }
  let acceptable = total * (100 + <u64>percent) / 100;
  if (acceptable < minEntries) acceptable = minEntries;
  while (total < acceptable) {
    let min = -1, to = -1;
    let minInc: u64 = <u64>-1;
    for (let i = 0; i < W; i++) {
      const ci = load<u64>(counts + (<usize>i << 3));
      if (!ci || !load<u8>(enabled + i)) continue;
      for (let j = i + 1; j <= W; j++) {
        if (!load<u64>(counts + (<usize>j << 3))) continue;
        const d = j - i;
        const inc: u64 = d >= 63 ? <u64>-1 : ci * ((<u64>1 << <u64>d) - 1);
        if (inc < minInc) { minInc = inc; min = i; to = j; }
        break;
      }
    }
    if (min < 0) break;
    if (minInc == <u64>-1 || total + minInc > acceptable) break;
    const cm = load<u64>(counts + (<usize>min << 3));
    total += minInc;
    store<u64>(counts + (<usize>to << 3), load<u64>(counts + (<usize>to << 3)) + minInc + cm);
    store<u64>(counts + (<usize>min << 3), 0);
    store<u8>(enabled + min, 0);
  }
  useEnabled = true;
  const r = coverSet(fam, p, n, MODE_TEXT, flags);
  useEnabled = false;
  return r;
}
