// Address parsing: IPv4, IPv6 (RFC 4291 text forms incl. embedded IPv4),
// CIDR, range a-b. Every failure yields a code, an absolute error position
// and an auxiliary number; the JS facade turns them into human messages.
import { push4, push6, recReserve, outReserve, outAdvance, outLen, accClear } from './mem';
import { normalize4, normalize6, resPtr } from './sets';
import { renderAddr4, renderAddr6 } from './render';

// error codes (mirrored in src/core/wasm.ts)
export const E_EMPTY: i32 = 1;
export const E_BAD_CHAR: i32 = 2;
export const E_V4_TRAILING_DOT: i32 = 3;
export const E_V4_LEADING_ZERO: i32 = 4;
export const E_V4_OCTET_RANGE: i32 = 5;
export const E_V4_FEW_OCTETS: i32 = 6;
export const E_V4_MANY_OCTETS: i32 = 7;
export const E_V4_EMPTY_OCTET: i32 = 8;
export const E_V6_GROUP_LONG: i32 = 9;
export const E_V6_EMPTY_GROUP: i32 = 10;
export const E_V6_MULTI_DC: i32 = 11;
export const E_V6_FEW_GROUPS: i32 = 12;
export const E_V6_MANY_GROUPS: i32 = 13;
export const E_V6_LEADING_COLON: i32 = 14;
export const E_V6_TRAILING_COLON: i32 = 15;
export const E_V6_V4_POSITION: i32 = 16;
export const E_PREFIX_EMPTY: i32 = 17;
export const E_PREFIX_LEADING_ZERO: i32 = 18;
export const E_PREFIX_TOO_LONG: i32 = 19;
export const E_HOST_BITS: i32 = 20;
export const E_RANGE_REVERSED: i32 = 21;
export const E_RANGE_MIXED: i32 = 22;
export const E_RANGE_NOT_ALLOWED: i32 = 23;
export const E_ADDRESS_NOT_ALLOWED: i32 = 24;
export const E_CIDR_NOT_ALLOWED: i32 = 25;

// flags
export const F_STRICT: u32 = 1;
export const F_RANGES: u32 = 2;
export const F_ADDRS: u32 = 4;
export const F_CIDRS: u32 = 8;
/** parseLines: each line is exactly one entry (no comments, comma lists, trimming or blank lines) */
export const F_EXACT: u32 = 16;

// results of the last parse
let aHi: u64 = 0; let aLo: u64 = 0; let aFam: i32 = 0;
export let rFam: i32 = 0; export let rKind: i32 = 0; export let rPfx: i32 = 0;
export let rShi: u64 = 0; export let rSlo: u64 = 0; export let rEhi: u64 = 0; export let rElo: u64 = 0;
export let errPos: usize = 0; export let errAux: i32 = 0;

// @ts-ignore: decorator
@inline function fail(code: i32, pos: usize, aux: i32): i32 { errPos = pos; errAux = aux; return code; }

// @ts-ignore: decorator
@inline function isDigit(c: u32): bool { return c - 48 < 10; }

function hexVal(c: u32): i32 {
  if (c - 48 < 10) return <i32>(c - 48);
  const l = c | 0x20;
  if (l - 97 < 6) return <i32>(l - 87);
  return -1;
}

/** IPv4 in [a, b) -> aLo */
function parseV4(a: usize, b: usize): i32 {
  if (a == b) return fail(E_EMPTY, a, 0);
  let val: u32 = 0, digits: i32 = 0, octets: i32 = 0, ostart: usize = a;
  let acc: u64 = 0;
  for (let i = a; i < b; i++) {
    const c = <u32>load<u8>(i);
    if (isDigit(c)) {
      if (digits == 0) ostart = i;
      if (digits < 4) val = val * 10 + (c - 48);
      digits++;
    } else if (c == 46) { // '.'
      if (digits == 0) return fail(E_V4_EMPTY_OCTET, i, 0);
      if (digits > 1 && load<u8>(ostart) == 48) return fail(E_V4_LEADING_ZERO, ostart, digits);
      if (digits > 3 || val > 255) return fail(E_V4_OCTET_RANGE, ostart, digits);
      octets++;
      if (octets == 4) return i + 1 == b ? fail(E_V4_TRAILING_DOT, i, 0) : fail(E_V4_MANY_OCTETS, i, 0);
      acc = (acc << 8) | val;
      val = 0; digits = 0;
    } else {
      return fail(E_BAD_CHAR, i, <i32>c);
    }
  }
  if (digits == 0) return fail(E_V4_TRAILING_DOT, b - 1, 0);
  if (digits > 1 && load<u8>(ostart) == 48) return fail(E_V4_LEADING_ZERO, ostart, digits);
  if (digits > 3 || val > 255) return fail(E_V4_OCTET_RANGE, ostart, digits);
  octets++;
  if (octets < 4) return fail(E_V4_FEW_OCTETS, a, octets);
  aHi = 0; aLo = (acc << 8) | val; aFam = 4;
  return 0;
}

const groups = memory.data(32);

/** IPv6 in [a, b) -> aHi, aLo */
function parseV6(a: usize, b: usize): i32 {
  let n: i32 = 0, dc: i32 = -1;
  let i = a;
  if (load<u8>(i) == 58) { // ':'
    if (i + 1 < b && load<u8>(i + 1) == 58) { dc = 0; i += 2; }
    else return fail(E_V6_LEADING_COLON, i, 0);
  }
  while (i < b) {
    const gs = i;
    let v: u32 = 0, len: i32 = 0;
    while (i < b) {
      const h = hexVal(<u32>load<u8>(i));
      if (h < 0) break;
      v = (v << 4) | <u32>h; len++; i++;
    }
    if (i < b && load<u8>(i) == 46) { // embedded IPv4 from gs to end
      if (n > 6) return fail(E_V6_V4_POSITION, gs, 0);
      const r = parseV4(gs, b);
      if (r) return r;
      store<u16>(groups + (n << 1), <u16>(aLo >> 16));
      store<u16>(groups + ((n + 1) << 1), <u16>aLo);
      n += 2; i = b;
      break;
    }
    if (len == 0) {
      if (i < b && load<u8>(i) == 58) return fail(E_V6_EMPTY_GROUP, i, 0);
      return fail(E_BAD_CHAR, i, <i32>load<u8>(i));
    }
    if (len > 4) return fail(E_V6_GROUP_LONG, gs, len);
    if (n == 8) return fail(E_V6_MANY_GROUPS, gs, 0);
    store<u16>(groups + (n << 1), <u16>v);
    n++;
    if (i == b) break;
    const c = load<u8>(i);
    if (c != 58) return fail(E_BAD_CHAR, i, <i32>c);
    i++;
    if (i == b) return fail(E_V6_TRAILING_COLON, i - 1, 0);
    if (load<u8>(i) == 58) {
      if (dc >= 0) return fail(E_V6_MULTI_DC, i - 1, 0);
      dc = n; i++;
    }
  }
  if (dc < 0) {
    if (n != 8) return fail(E_V6_FEW_GROUPS, a, n);
  } else if (n > 7) {
    return fail(E_V6_MANY_GROUPS, a, n);
  }
  // expand
  let hi: u64 = 0, lo: u64 = 0;
  const zeros = dc < 0 ? 0 : 8 - n;
  let g = 0;
  for (let k = 0; k < 8; k++) {
    let val: u64 = 0;
    if (dc >= 0 && k >= dc && k < dc + zeros) val = 0;
    else { val = <u64>load<u16>(groups + (g << 1)); g++; }
    if (k < 4) hi = (hi << 16) | val; else lo = (lo << 16) | val;
  }
  aHi = hi; aLo = lo; aFam = 6;
  return 0;
}

function parseAddr(a: usize, b: usize): i32 {
  if (a == b) return fail(E_EMPTY, a, 0);
  for (let i = a; i < b; i++) {
    if (load<u8>(i) == 58) return parseV6(a, b);
  }
  return parseV4(a, b);
}

/** Parse one item [a, b): address, CIDR or range. Sets r* globals. */
export function parseItem(a: usize, b: usize, flags: u32): i32 {
  if (a == b) return fail(E_EMPTY, a, 0);
  let dash: usize = 0, slash: usize = 0, colon: usize = 0;
  for (let i = a; i < b; i++) {
    const c = load<u8>(i);
    if (c == 58) { if (colon == 0) colon = i; }
    else if (c == 45) { if (dash == 0) dash = i; }
    else if (c == 47) { if (slash == 0) slash = i; }
  }
  if (dash) {
    if (!(flags & F_RANGES)) return fail(E_RANGE_NOT_ALLOWED, dash, 0);
    let r = parseAddr(a, dash);
    if (r) return r;
    const sHi = aHi, sLo = aLo, sFam = aFam;
    r = parseAddr(dash + 1, b);
    if (r) return r;
    if (aFam != sFam) return fail(E_RANGE_MIXED, dash + 1, sFam);
    if (sHi > aHi || (sHi == aHi && sLo > aLo)) return fail(E_RANGE_REVERSED, a, <i32>(dash - a));
    rFam = sFam; rKind = 2; rPfx = -1;
    rShi = sHi; rSlo = sLo; rEhi = aHi; rElo = aLo;
    return 0;
  }
  const end = slash ? slash : b;
  const r = a == end ? fail(E_EMPTY, a, 0) : (colon != 0 && colon < end ? parseV6(a, end) : parseV4(a, end));
  if (r) return r;
  const W: i32 = aFam == 4 ? 32 : 128;
  rFam = aFam;
  if (!slash) {
    if (!(flags & F_ADDRS)) return fail(E_ADDRESS_NOT_ALLOWED, a, 0);
    rKind = 0; rPfx = W;
    rShi = aHi; rSlo = aLo; rEhi = aHi; rElo = aLo;
    return 0;
  }
  if (!(flags & F_CIDRS)) return fail(E_CIDR_NOT_ALLOWED, slash, 0);
  // prefix length
  const ps = slash + 1;
  if (ps == b) return fail(E_PREFIX_EMPTY, slash, 0);
  let p: i32 = 0;
  for (let i = ps; i < b; i++) {
    const c = <u32>load<u8>(i);
    if (!isDigit(c)) return fail(E_BAD_CHAR, i, <i32>c);
    if (p < 1000) p = p * 10 + <i32>(c - 48);
  }
  if (b - ps > 1 && load<u8>(ps) == 48) return fail(E_PREFIX_LEADING_ZERO, ps, <i32>(b - ps));
  if (p > W) return fail(E_PREFIX_TOO_LONG, ps, p);
  // masks: host part of the 128-bit (or 32-bit in lo) value
  let mhi: u64 = 0, mlo: u64 = 0; // host mask
  if (W == 32) {
    mlo = p == 32 ? 0 : (<u64>0xffffffff >> <u64>p);
  } else {
    if (p == 0) { mhi = <u64>-1; mlo = <u64>-1; }
    else if (p < 64) { mhi = <u64>-1 >> <u64>p; mlo = <u64>-1; }
    else if (p < 128) { mhi = 0; mlo = <u64>-1 >> <u64>(p - 64); }
  }
  rKind = 1; rPfx = p;
  rShi = aHi & ~mhi; rSlo = aLo & ~mlo;
  rEhi = rShi | mhi; rElo = rSlo | mlo;
  if ((flags & F_STRICT) && ((aHi & mhi) | (aLo & mlo)) != 0) return fail(E_HOST_BITS, a, p);
  return 0;
}

// @ts-ignore: decorator
@inline function isSpace(c: u32): bool { return c == 32 || c == 9 || c == 13; }

// last-call statistics
export let okCount: u32 = 0;
export let errCount: u32 = 0;

/**
 * Fast path for the common line: an IPv4 address or CIDR, nothing else, then
 * '\n' or the end. Returns the position after the line's '\n' on success,
 * 0 when the general path must handle the line (also for every error).
 */
function fastLine4(ls: usize, end: usize, flags: u32): usize {
  let i = ls;
  let acc: u32 = 0;
  for (let o = 0; o < 4; o++) {
    if (i >= end) return 0;
    let c = <u32>load<u8>(i) - 48;
    if (c >= 10) return 0;
    let v = c; i++;
    if (i < end) {
      c = <u32>load<u8>(i) - 48;
      if (c < 10) {
        if (v == 0) return 0;
        v = v * 10 + c; i++;
        if (i < end) {
          c = <u32>load<u8>(i) - 48;
          if (c < 10) { v = v * 10 + c; i++; if (v > 255) return 0; }
        }
      }
    }
    acc = (acc << 8) | v;
    if (o < 3) { if (i >= end || load<u8>(i) != 46) return 0; i++; }
  }
  let p: u32 = 32;
  if (i < end && load<u8>(i) == 47) {
    i++;
    if (i >= end) return 0;
    let c = <u32>load<u8>(i) - 48;
    if (c >= 10) return 0;
    p = c; i++;
    if (i < end) {
      c = <u32>load<u8>(i) - 48;
      if (c < 10) { if (p == 0) return 0; p = p * 10 + c; i++; }
    }
    if (p > 32) return 0;
    if (!(flags & F_CIDRS)) return 0;
  } else if (!(flags & F_ADDRS)) return 0;
  if (i < end) {
    if (load<u8>(i) != 10) return 0;
    i++;
  }
  const host: u32 = p == 32 ? 0 : (<u32>0xffffffff >>> p);
  if (acc & host) {
    if (flags & F_STRICT) return 0;
    acc &= ~host;
  }
  push4(acc, acc | host);
  okCount++;
  return i;
}

/**
 * Lines mode: one entry per line (comma lists allowed), `#` comments, blank
 * lines ignored, whitespace trimmed. Good entries go to the accumulators; bad
 * ones produce 32-byte records: line, col(of item in line), code, offset in
 * item, aux, item start, item end (relative to buf), pad.
 */
export function parseLines(buf: usize, len: usize, flags: u32, line0: u32): u32 {
  okCount = 0; errCount = 0;
  const end = buf + len;
  let line: u32 = line0;
  let ls = buf;
  while (ls < end) {
    const nx = fastLine4(ls, end, flags);
    if (nx) { line++; ls = nx; continue; }
    // find end of line and comment
    let le = ls;
    let ce: usize = 0;
    while (le < end) {
      const c = load<u8>(le);
      if (c == 10) break;
      if (c == 35 && ce == 0) ce = le;
      le++;
    }
    line++;
    const exact = (flags & F_EXACT) != 0;
    const stop = ce && !exact ? ce : le;
    let s = ls;
    let e = stop;
    if (!exact) {
      while (s < stop && isSpace(<u32>load<u8>(s))) s++;
      while (e > s && isSpace(<u32>load<u8>(e - 1))) e--;
    }
    if (s < e || exact) {
      let is = s;
      while (true) {
        let ie = is;
        let a = is, b = ie;
        if (exact) { ie = e; b = e; } else {
          ie = scanTo(ie, e, 44);
          // trim item
          b = ie;
          while (a < b && isSpace(<u32>load<u8>(a))) a++;
          while (b > a && isSpace(<u32>load<u8>(b - 1))) b--;
        }
        const code = parseItem(a, b, flags);
        if (code == 0) {
          okCount++;
          pushParsed();
        } else {
          errCount++;
          const q = recReserve(32);
          store<u32>(q, line);
          store<u32>(q, <u32>(a - ls), 4);
          store<i32>(q, code, 8);
          store<u32>(q, <u32>(errPos - a), 12);
          store<i32>(q, errAux, 16);
          store<u32>(q, <u32>(a - buf), 20);
          store<u32>(q, <u32>(b - buf), 24);
        }
        if (ie >= e) break;
        is = ie + 1;
      }
    }
    ls = le + 1;
  }
  return line;
}

/**
 * Entries mode: items separated by '\n', taken verbatim. One 64-byte record
 * per entry: code, offset, aux, fam(u8) kind(u8) prefix(u8), shi, slo, ehi,
 * elo, text start, text length (canonical text in the output buffer).
 */
export function parseEntries(buf: usize, len: usize, flags: u32): u32 {
  okCount = 0; errCount = 0;
  const end = buf + len;
  let s = buf;
  let n: u32 = 0;
  while (true) {
    const e = scanTo(s, end, 10);
    const code = parseItem(s, e, flags);
    const q = recReserve(64);
    store<i32>(q, code);
    n++;
    const t0 = outLen();
    if (code == 0) {
      okCount++;
      pushParsed();
    } else {
      errCount++;
      store<u32>(q, <u32>(errPos - s), 4);
      store<i32>(q, errAux, 8);
    }
    if (code == 0 || code == E_HOST_BITS) {
      store<u8>(q, <u8>rFam, 12);
      store<u8>(q, <u8>rKind, 13);
      store<u8>(q, <u8>(rPfx < 0 ? 255 : rPfx), 14);
      store<u64>(q, rShi, 16); store<u64>(q, rSlo, 24);
      store<u64>(q, rEhi, 32); store<u64>(q, rElo, 40);
      // canonical text (for host bits: the network CIDR)
      if (rFam == 4) renderAddr4(<u32>rSlo); else renderAddr6(rShi, rSlo);
      if (rKind == 1) {
        store<u8>(outReserve(1), 47); outAdvance(1);
        renderDec(<u32>rPfx);
      } else if (rKind == 2) {
        store<u8>(outReserve(1), 45); outAdvance(1);
        if (rFam == 4) renderAddr4(<u32>rElo); else renderAddr6(rEhi, rElo);
      }
    }
    store<u32>(q, <u32>t0, 48);
    store<u32>(q, <u32>(outLen() - t0), 52);
    if (e >= end) break;
    s = e + 1;
  }
  return n;
}

function renderDec(v: u32): void {
  const q = outReserve(3);
  if (v >= 100) { store<u8>(q, <u8>(48 + v / 100)); store<u8>(q, <u8>(48 + (v / 10) % 10), 1); store<u8>(q, <u8>(48 + v % 10), 2); outAdvance(3); }
  else if (v >= 10) { store<u8>(q, <u8>(48 + v / 10)); store<u8>(q, <u8>(48 + v % 10), 1); outAdvance(2); }
  else { store<u8>(q, <u8>(48 + v)); outAdvance(1); }
}
export { renderDec };

/** the first byte `ch` at or after p, or end */
// @ts-ignore: decorator
@inline export function scanTo(p: usize, end: usize, ch: u8): usize {
  while (p < end && load<u8>(p) != ch) p++;
  return p;
}

/** the item parseItem() just read, into the address accumulator */
// @ts-ignore: decorator
@inline function pushParsed(): void {
  if (rFam == 4) push4(<u32>rSlo, <u32>rElo);
  else push6(rShi, rSlo, rEhi, rElo);
}

/** `bytes` bytes of a normalize4/6 result (at resPtr) appended to the output vector */
function appendResult(bytes: usize): void {
  if (bytes == 0) return;
  memory.copy(outReserve(bytes), resPtr, bytes);
  outAdvance(bytes);
}

/**
 * Lists mode: one comma list per line ('\n' separated), items taken verbatim
 * (no trimming, no comments): every ASG destination of a policy in one call.
 * Each list is normalized on its own and its ranges appended to the output
 * vector (v4 pairs, then v6 quads; offsets stay multiples of 8). One 24-byte
 * record per list: good items, bad items, v4 ranges, v6 ranges, output
 * offset of its v4 ranges, pad. A list with a bad item gets no ranges (the
 * caller reads it again item by item for the messages). Returns the lists read.
 */
export function parseLists(buf: usize, len: usize, flags: u32): u32 {
  okCount = 0; errCount = 0;
  const end = buf + len;
  let ls = buf;
  let n: u32 = 0;
  while (true) {
    const le = scanTo(ls, end, 10);
    accClear();
    let good: u32 = 0, bad: u32 = 0;
    let is = ls;
    while (true) {
      const ie = scanTo(is, le, 44);
      const code = parseItem(is, ie, flags);
      if (code == 0) {
        good++;
        pushParsed();
      } else bad++;
      if (ie >= le) break;
      is = ie + 1;
    }
    let n4: u32 = 0, n6: u32 = 0;
    const off = <u32>outLen();
    if (bad == 0) {
      n4 = normalize4();
      appendResult(<usize>n4 << 3);
      n6 = normalize6();
      appendResult(<usize>n6 << 5);
    }
    okCount += good; errCount += bad;
    const r = recReserve(24);
    store<u32>(r, good); store<u32>(r, bad, 4); store<u32>(r, n4, 8); store<u32>(r, n6, 12); store<u32>(r, off, 16); store<u32>(r, 0, 20);
    n++;
    if (le >= end) break;
    ls = le + 1;
  }
  return n;
}
