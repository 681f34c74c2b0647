// Interval sets. v4: u32 pairs [s, e] (inclusive), v6: u64 quads
// [shi, slo, ehi, elo]; sorted, disjoint and non-adjacent after normalize.
import { alloc, v4p, v4n, v6p, v6n } from './mem';
import { radixSort, setPasses } from './sort';

export let resPtr: usize = 0;

/** sort + merge the v4 accumulator into u32 pairs at resPtr; returns the pair count */
export function normalize4(): u32 {
  const n = v4n;
  // few ranges (a policy destination): insertion sort in place; the radix sort's
  // histograms cost more than the records
  const sorted = n <= SMALL_SORT ? insertionSort64(v4p, n) : radixSort(v4p, n, 1, setPasses(0, 0, 4, 8));
  const out = alloc(n * 8 + 8);
  resPtr = out;
  if (n == 0) return 0;
  let k: usize = 0;
  let v = load<u64>(sorted);
  let cs = v >> 32, ce = v & 0xffffffff;
  const end = sorted + (n << 3);
  for (let q = sorted + 8; q < end; q += 8) {
    v = load<u64>(q);
    const s = v >> 32, e = v & 0xffffffff;
    if (s <= ce + 1) { if (e > ce) ce = e; }
    else {
      store<u32>(out + (k << 3), <u32>cs); store<u32>(out + (k << 3), <u32>ce, 4); k++;
      cs = s; ce = e;
    }
  }
  store<u32>(out + (k << 3), <u32>cs); store<u32>(out + (k << 3), <u32>ce, 4); k++;
  return <u32>k;
}

const SMALL_SORT: usize = 48;

/** sort n u64 records at p ascending, in place (start << 32 | end: by start, then end) */
function insertionSort64(p: usize, n: usize): usize {
  for (let i: usize = 1; i < n; i++) {
    const v = load<u64>(p + (i << 3));
    let j = i;
    while (j > 0) {
      const u = load<u64>(p + ((j - 1) << 3));
      if (u <= v) break;
      store<u64>(p + (j << 3), u);
      j--;
    }
    store<u64>(p + (j << 3), v);
  }
  return p;
}

// @ts-ignore: decorator
@inline function le128(ahi: u64, alo: u64, bhi: u64, blo: u64): bool { return ahi < bhi || (ahi == bhi && alo <= blo); }
// @ts-ignore: decorator
@inline function lt128(ahi: u64, alo: u64, bhi: u64, blo: u64): bool { return ahi < bhi || (ahi == bhi && alo < blo); }

/** true when range starting at (shi, slo) overlaps or touches a range ending at (ehi, elo) that precedes it */
// @ts-ignore: decorator
@inline function touches(shi: u64, slo: u64, ehi: u64, elo: u64): bool {
  // s <= e + 1
  if (elo == <u64>-1) { if (ehi == <u64>-1) return true; return le128(shi, slo, ehi + 1, 0); }
  return le128(shi, slo, ehi, elo + 1);
}

/** sort + merge the v6 accumulator into quads at resPtr; returns the range count */
export function normalize6(): u32 {
  const n = v6n;
  let np = setPasses(0, 1, 0, 8);
  np = setPasses(np, 0, 0, 8);
  const sorted = radixSort(v6p, n, 4, np);
  const out = alloc(n * 32 + 32);
  resPtr = out;
  if (n == 0) return 0;
  return merge6(sorted, n, out);
}

function merge6(src: usize, n: usize, out: usize): u32 {
  let k: usize = 0;
  let cshi = load<u64>(src), cslo = load<u64>(src, 8), cehi = load<u64>(src, 16), celo = load<u64>(src, 24);
  const end = src + (n << 5);
  for (let q = src + 32; q < end; q += 32) {
    const shi = load<u64>(q), slo = load<u64>(q, 8), ehi = load<u64>(q, 16), elo = load<u64>(q, 24);
    if (touches(shi, slo, cehi, celo)) {
      if (lt128(cehi, celo, ehi, elo)) { cehi = ehi; celo = elo; }
    } else {
      const o = out + (k << 5);
      store<u64>(o, cshi); store<u64>(o, cslo, 8); store<u64>(o, cehi, 16); store<u64>(o, celo, 24); k++;
      cshi = shi; cslo = slo; cehi = ehi; celo = elo;
    }
  }
  const o = out + (k << 5);
  store<u64>(o, cshi); store<u64>(o, cslo, 8); store<u64>(o, cehi, 16); store<u64>(o, celo, 24); k++;
  return <u32>k;
}

// ---- binary set operations on normalized sets ---------------------------
// kind: 0 union, 1 intersection, 2 difference (a minus b). out must hold na+nb+1 ranges.

export function op4(kind: i32, a: usize, na: usize, b: usize, nb: usize, out: usize): u32 {
  let k: usize = 0, i: usize = 0, j: usize = 0;
  if (kind == 0) {
    let have = false;
    let cs: u64 = 0, ce: u64 = 0;
    while (i < na || j < nb) {
      let s: u64, e: u64;
      if (j >= nb || (i < na && load<u32>(a + (i << 3)) <= load<u32>(b + (j << 3)))) {
        s = load<u32>(a + (i << 3)); e = load<u32>(a + (i << 3), 4); i++;
      } else {
        s = load<u32>(b + (j << 3)); e = load<u32>(b + (j << 3), 4); j++;
      }
      if (have && s <= ce + 1) { if (e > ce) ce = e; }
      else {
        if (have) { store<u32>(out + (k << 3), <u32>cs); store<u32>(out + (k << 3), <u32>ce, 4); k++; }
        cs = s; ce = e; have = true;
      }
    }
    if (have) { store<u32>(out + (k << 3), <u32>cs); store<u32>(out + (k << 3), <u32>ce, 4); k++; }
  } else if (kind == 1) {
    while (i < na && j < nb) {
      const as = load<u32>(a + (i << 3)), ae = load<u32>(a + (i << 3), 4);
      const bs = load<u32>(b + (j << 3)), be = load<u32>(b + (j << 3), 4);
      const s = max(as, bs), e = min(ae, be);
      if (s <= e) { store<u32>(out + (k << 3), s); store<u32>(out + (k << 3), e, 4); k++; }
      if (ae < be) i++; else j++;
    }
  } else {
    for (; i < na; i++) {
      let cur: u64 = load<u32>(a + (i << 3));
      const e: u64 = load<u32>(a + (i << 3), 4);
      let done = false;
      while (j < nb && <u64>load<u32>(b + (j << 3), 4) < cur) j++;
      while (j < nb && <u64>load<u32>(b + (j << 3)) <= e) {
        const bs: u64 = load<u32>(b + (j << 3)), be: u64 = load<u32>(b + (j << 3), 4);
        if (bs > cur) { store<u32>(out + (k << 3), <u32>cur); store<u32>(out + (k << 3), <u32>(bs - 1), 4); k++; }
        if (be >= e) { done = true; break; }
        cur = be + 1;
        j++;
      }
      if (!done) { store<u32>(out + (k << 3), <u32>cur); store<u32>(out + (k << 3), <u32>e, 4); k++; }
    }
  }
  return <u32>k;
}

// @ts-ignore: decorator
@inline function put6(out: usize, k: usize, shi: u64, slo: u64, ehi: u64, elo: u64): void {
  const o = out + (k << 5);
  store<u64>(o, shi); store<u64>(o, slo, 8); store<u64>(o, ehi, 16); store<u64>(o, elo, 24);
}

export function op6(kind: i32, a: usize, na: usize, b: usize, nb: usize, out: usize): u32 {
  let k: usize = 0, i: usize = 0, j: usize = 0;
  if (kind == 0) {
    // merge the two sorted lists, then coalesce
    const tmp = alloc((na + nb) * 32 + 32);
    let t: usize = 0;
    while (i < na || j < nb) {
      let src: usize;
      if (j >= nb) src = a + (i++ << 5);
      else if (i >= na) src = b + (j++ << 5);
      else {
        const pa = a + (i << 5), pb = b + (j << 5);
        if (le128(load<u64>(pa), load<u64>(pa, 8), load<u64>(pb), load<u64>(pb, 8))) { src = pa; i++; } else { src = pb; j++; }
      }
      memory.copy(tmp + (t << 5), src, 32); t++;
    }
    if (t == 0) return 0;
    return merge6(tmp, t, out);
  } else if (kind == 1) {
    while (i < na && j < nb) {
      const pa = a + (i << 5), pb = b + (j << 5);
      const ashi = load<u64>(pa), aslo = load<u64>(pa, 8), aehi = load<u64>(pa, 16), aelo = load<u64>(pa, 24);
      const bshi = load<u64>(pb), bslo = load<u64>(pb, 8), behi = load<u64>(pb, 16), belo = load<u64>(pb, 24);
      let shi = ashi, slo = aslo; if (lt128(shi, slo, bshi, bslo)) { shi = bshi; slo = bslo; }
      let ehi = aehi, elo = aelo; if (lt128(behi, belo, ehi, elo)) { ehi = behi; elo = belo; }
      if (le128(shi, slo, ehi, elo)) { put6(out, k, shi, slo, ehi, elo); k++; }
      if (lt128(aehi, aelo, behi, belo)) i++; else j++;
    }
  } else {
    for (; i < na; i++) {
      const pa = a + (i << 5);
      let chi = load<u64>(pa), clo = load<u64>(pa, 8);
      const ehi = load<u64>(pa, 16), elo = load<u64>(pa, 24);
      let done = false;
      while (j < nb && lt128(load<u64>(b + (j << 5), 16), load<u64>(b + (j << 5), 24), chi, clo)) j++;
      while (j < nb && le128(load<u64>(b + (j << 5)), load<u64>(b + (j << 5), 8), ehi, elo)) {
        const pb = b + (j << 5);
        const bshi = load<u64>(pb), bslo = load<u64>(pb, 8), behi = load<u64>(pb, 16), belo = load<u64>(pb, 24);
        if (lt128(chi, clo, bshi, bslo)) {
          // emit [c, bs - 1]
          const mhi = bslo == 0 ? bshi - 1 : bshi, mlo = bslo - 1;
          put6(out, k, chi, clo, mhi, mlo); k++;
        }
        if (le128(ehi, elo, behi, belo)) { done = true; break; }
        // c = be + 1 (be < e so no overflow)
        clo = belo + 1; chi = clo == 0 ? behi + 1 : behi;
        j++;
      }
      if (!done) { put6(out, k, chi, clo, ehi, elo); k++; }
    }
  }
  return <u32>k;
}
