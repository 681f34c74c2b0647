// Longest-prefix lookup. Every entry's ranges are cut into CIDR blocks
// tagged with the entry id; blocks are sorted by (start, prefix length) with
// a stable radix sort and swept with a stack into disjoint intervals, each
// labelled with the id of the most specific block covering it (the first
// entry wins between identical blocks). Queries are binary searches.
import { alloc, recReserve, rp, rn, accBegin } from './mem';
import { radixSort, setPasses } from './sort';
import { blocksOf, blocksOfRange } from './render';
import { parseItem, scanTo, F_ADDRS, rFam, rSlo, rShi } from './parse';

export let tablePtr: usize = 0;

const stack = memory.data(136 * 40);
let outP: usize = 0;
let outN: usize = 0;

// @ts-ignore: decorator
@inline function lt128(ahi: u64, alo: u64, bhi: u64, blo: u64): bool { return ahi < bhi || (ahi == bhi && alo < blo); }

function emitFlat(shi: u64, slo: u64, ehi: u64, elo: u64, id: u64): void {
  const o = outP + outN * 40;
  store<u64>(o, shi); store<u64>(o, slo, 8); store<u64>(o, ehi, 16); store<u64>(o, elo, 24); store<u64>(o, id, 32);
  outN++;
}

/** blocks: n records (hi, lo, prefix | id << 8); returns the interval count, table at tablePtr */
function flatten(fam: i32, blocks: usize, n: usize): u32 {
  const W = fam == 4 ? 32 : 128;
  let np = setPasses(0, 2, 0, 1);
  np = setPasses(np, 1, 0, 8);
  np = setPasses(np, 0, 0, 8);
  const sorted = radixSort(blocks, n, 3, np);
  outP = alloc(n * 80 + 40); outN = 0;
  tablePtr = outP;
  let depth = 0;
  let posHi: u64 = 0, posLo: u64 = 0, posValid = false;
  for (let i: usize = 0; i < n; i++) {
    const q = sorted + i * 24;
    const shi = load<u64>(q), slo = load<u64>(q, 8), meta = load<u64>(q, 16);
    const p = <i32>(meta & 0xff), id = meta >> 8;
    // end = s | hostmask
    let ehi = shi, elo = slo;
    const k = W - p;
    if (k >= 128) { ehi = <u64>-1; elo = <u64>-1; }
    else if (k >= 64) { elo = <u64>-1; ehi = shi | ((<u64>1 << <u64>(k - 64)) - 1); }
    else if (k > 0) { elo = slo | ((<u64>1 << <u64>k) - 1); }
    // close blocks that end before s
    while (depth > 0) {
      const t = stack + (depth - 1) * 40;
      const tehi = load<u64>(t, 16), telo = load<u64>(t, 24);
      if (!lt128(tehi, telo, shi, slo)) break;
      if (posValid && !lt128(tehi, telo, posHi, posLo)) emitFlat(posHi, posLo, tehi, telo, load<u64>(t, 32));
      posLo = telo + 1; posHi = posLo == 0 ? tehi + 1 : tehi; posValid = true;
      depth--;
    }
    if (depth > 0) {
      const t = stack + (depth - 1) * 40;
      if (load<u64>(t) == shi && load<u64>(t, 8) == slo && load<u64>(t, 16) == ehi && load<u64>(t, 24) == elo) continue;
      if (posValid && lt128(posHi, posLo, shi, slo)) {
        const mlo = slo - 1, mhi = slo == 0 ? shi - 1 : shi;
        emitFlat(posHi, posLo, mhi, mlo, load<u64>(t, 32));
      }
    }
    posHi = shi; posLo = slo; posValid = true;
    const t = stack + depth * 40;
    store<u64>(t, shi); store<u64>(t, slo, 8); store<u64>(t, ehi, 16); store<u64>(t, elo, 24); store<u64>(t, id, 32);
    depth++;
  }
  while (depth > 0) {
    const t = stack + (depth - 1) * 40;
    const tehi = load<u64>(t, 16), telo = load<u64>(t, 24);
    if (posValid && !lt128(tehi, telo, posHi, posLo)) emitFlat(posHi, posLo, tehi, telo, load<u64>(t, 32));
    if (tehi == <u64>-1 && telo == <u64>-1) posValid = false;
    else { posLo = telo + 1; posHi = posLo == 0 ? tehi + 1 : tehi; }
    depth--;
  }
  return <u32>outN;
}

/** ranges: n records (shi, slo, ehi, elo, id) of one family (v4 values in lo) */
export function lookupFromRanges(fam: i32, ranges: usize, n: usize): u32 {
  accBegin();
  for (let i: usize = 0; i < n; i++) {
    const q = ranges + i * 40;
    blocksOfRange(fam, load<u64>(q), load<u64>(q, 8), load<u64>(q, 16), load<u64>(q, 24), load<u64>(q, 32));
  }
  return flatten(fam, rp, rn / 24);
}

/** a normalized set; the id of each interval is the index of its CIDR in cover order */
export function lookupFromSet(fam: i32, p: usize, n: usize, base: u32): u32 {
  accBegin();
  blocksOf(fam, p, n, <i64>base);
  return flatten(fam, rp, rn / 24);
}

function search(tbl: usize, n: usize, hi: u64, lo: u64): i64 {
  // last interval with start <= addr
  let l: usize = 0, h: usize = n;
  while (l < h) {
    const m = (l + h) >>> 1;
    const q = tbl + m * 40;
    if (lt128(hi, lo, load<u64>(q), load<u64>(q, 8))) h = m; else l = m + 1;
  }
  if (l == 0) return -1;
  const q = tbl + (l - 1) * 40;
  if (lt128(load<u64>(q, 16), load<u64>(q, 24), hi, lo)) return -1;
  return <i64>load<u64>(q, 32);
}

/** addresses '\n'-separated in text; out: i32 per address (-1 no match, -2 not an address) */
export function lookupText(t4: usize, n4: usize, t6: usize, n6: usize, text: usize, len: usize, out: usize): u32 {
  const end = text + len;
  let s = text;
  let k: usize = 0;
  while (true) {
    const e = scanTo(s, end, 10);
    let r: i64 = -2;
    if (parseItem(s, e, F_ADDRS) == 0) {
      r = rFam == 4 ? search(t4, n4, 0, rSlo) : search(t6, n6, rShi, rSlo);
    }
    store<i32>(out + (k << 2), <i32>r);
    k++;
    if (e >= end) break;
    s = e + 1;
  }
  return <u32>k;
}

/** numeric v4 lookup: n u32 addresses */
export function lookupU32(t4: usize, n4: usize, addrs: usize, n: usize, out: usize): void {
  for (let i: usize = 0; i < n; i++) {
    store<i32>(out + (i << 2), <i32>search(t4, n4, 0, <u64>load<u32>(addrs + (i << 2))));
  }
}
