/**
 * cellwall address core: typed facade over the AssemblyScript/WASM module in
 * assembly/. CONTRACT FILE: other stages code against these signatures.
 * The bodies are filled in by the core implementation; signatures may gain
 * optional parameters but must not change incompatibly.
 *
 * Representation (plain data, cheap to pass around, WASM does the work):
 *  - v4: Uint32Array of inclusive ranges [s0, e0, s1, e1, ...], sorted, merged
 *    (disjoint and non-adjacent).
 *  - v6: BigUint64Array of inclusive ranges [s0hi, s0lo, e0hi, e0lo, ...],
 *    sorted, merged.
 * Every operation crosses the JS/WASM boundary once per call with bulk
 * buffers, never once per address.
 */
import { sha256 } from './sha256.js';
import { CellwallError } from '../errors.js';
import { reasonFor, type RawError } from './messages.js';
import {
  bytesAt, E, F_ADDRS, F_BARE, F_CIDRS, F_EXACT, F_RANGES, F_STRICT, MODE_COUNT, put, wasm, type CoreExports,
} from './wasm.js';

export type Family = 4 | 6;

const EMPTY4 = new Uint32Array(0);
const EMPTY6 = new BigUint64Array(0);
const OP_UNION = 0, OP_INTERSECT = 1, OP_DIFF = 2;
const enc = new TextEncoder();
/** AddrSet.hashWith()'s buffer, grown as needed */
let hashScratch = new Uint8Array(4096);
let hashView = new DataView(hashScratch.buffer);
const dec = new TextDecoder();

export class AddrSet {
  constructor(readonly v4: Uint32Array, readonly v6: BigUint64Array) {}
  static empty(): AddrSet { return new AddrSet(EMPTY4, EMPTY6); }
  /** 0.0.0.0/0 and ::/0 */
  static all(): AddrSet {
    const m = 0xffffffffffffffffn;
    return new AddrSet(Uint32Array.of(0, 0xffffffff), BigUint64Array.of(0n, 0n, m, m));
  }
  /** Union of already-valid entries (address, CIDR, range a-b). Throws CellwallError on a bad entry. */
  static of(entries: string[]): AddrSet {
    // bulk path: one entry per line, taken exactly; on any error redo per entry for the message
    if (entries.length > 0) {
      const w = wasm();
      w.reset();
      w.accBegin();
      const bytes = Buffer.from(entries.join('\n'), 'utf8');
      w.parseLines(put(w, bytes), bytes.length, F_EXACT | F_STRICT | F_RANGES | F_ADDRS | F_CIDRS, 0);
      if (w.errCount() === 0 && w.okCount() === entries.length) return takeAccumulated(w);
    }
    const r = parseEntriesRaw(entries, F_STRICT | F_RANGES | F_ADDRS | F_CIDRS);
    const bad = r.results.find((x) => !x.ok);
    if (bad && !bad.ok) {
      const i = r.results.indexOf(bad);
      throw new CellwallError(`invalid address entry "${entries[i]}": ${bad.reason}`);
    }
    return r.set;
  }
  isEmpty(): boolean { return this.v4.length === 0 && this.v6.length === 0; }
  /** restrict to one family */
  family(f: Family): AddrSet {
    // sets are immutable: one that holds only this family is its own answer
    if (f === 4) return this.v6.length === 0 ? this : new AddrSet(this.v4, EMPTY6);
    return this.v4.length === 0 ? this : new AddrSet(EMPTY4, this.v6);
  }
  union(o: AddrSet): AddrSet {
    if (o.isEmpty()) return this;
    if (this.isEmpty()) return o;
    return binop(OP_UNION, this, o);
  }
  intersect(o: AddrSet): AddrSet {
    if (o.isEmpty() || this.isEmpty()) return AddrSet.empty();
    return binop(OP_INTERSECT, this, o);
  }
  difference(o: AddrSet): AddrSet {
    if (o.isEmpty() || this.isEmpty()) return this;
    return binop(OP_DIFF, this, o);
  }
  equals(o: AddrSet): boolean { return sameArray(this.v4, o.v4) && sameArray(this.v6, o.v6); }
  /** true when every address of o is in this */
  contains(o: AddrSet): boolean { return o.difference(this).isEmpty(); }
  /** Minimal CIDR cover, sorted by address, v4 first then v6. Single hosts are written with /32 or /128. */
  toCidrs(family?: Family): string[] {
    const text = dec.decode(renderText(this, { family }));
    return text === '' ? [] : text.slice(0, -1).split('\n');
  }
  /**
   * One line per CIDR of the family's minimal cover, `${prefix}${cidr}${suffix}\n`,
   * rendered inside WASM (payloads with millions of set entries) and returned as
   * a view of WASM memory, valid only until the next call into the core:
   * payloads copy it straight into their own buffer. prefix and suffix must be
   * ASCII.
   */
  cidrLinesView(family: Family, prefix: string, suffix: string): Uint8Array {
    const w = wasm();
    w.reset();
    w.accBegin();
    const pre = put(w, latin1(prefix)), suf = put(w, latin1(suffix));
    const [p, n] = putRanges(w, this, family);
    if (n === 0) return EMPTY_BYTES;
    w.renderLines(family, p, n, 0, pre, prefix.length, suf, suffix.length);
    return new Uint8Array(w.memory.buffer, w.outPtr(), w.outLen());
  }
  /** number of CIDRs toCidrs() would return, per family */
  cidrCount(family: Family): number {
    const counts = family === 4 ? COUNT4 : COUNT6;
    const memo = counts.get(this);
    if (memo !== undefined) return memo;
    let c: number;
    // small v4 sets (most policy destinations): counted here, without a copy into WASM
    if (family === 4 && this.v4.length <= JS_COUNT_RANGES) c = jsCidrCount4(this.v4);
    else {
      const w = wasm();
      w.reset();
      const [p, n] = putRanges(w, this, family);
      c = n === 0 ? 0 : Number(w.coverSet(family, p, n, MODE_COUNT, 0));
    }
    counts.set(this, c);
    return c;
  }
  /**
   * Prefix-length reduction like iprange --ipset-reduce: same addresses, at most ~`percent`% more entries, fewer
   * distinct prefix lengths. `minEntries` is iprange's --ipset-reduce-entries (growth up to that many entries is
   * always accepted; default 0).
   */
  reducedCidrs(percent: number, family?: Family, minEntries = 0): string[] {
    const text = dec.decode(renderText(this, { family, reduce: percent, reduceEntries: minEntries }));
    return text === '' ? [] : text.slice(0, -1).split('\n');
  }
  /** Stable content hash (hex) of the set; equal sets give equal hashes. */
  hash(): string {
    return this.hashWith('');
  }
  /** hash() of the set with a text before it, in one digest (content-addressed names) */
  hashWith(prefix: string): string {
    // one buffer, one digest: prefix (UTF-8), the two range counts, the v4 then v6 ranges
    const v4 = new Uint8Array(this.v4.buffer, this.v4.byteOffset, this.v4.byteLength);
    const v6 = new Uint8Array(this.v6.buffer, this.v6.byteOffset, this.v6.byteLength);
    const need = prefix.length * 3 + 8 + v4.length + v6.length;
    if (hashScratch.length < need) {
      hashScratch = new Uint8Array(Math.max(need, hashScratch.length * 2));
      hashView = new DataView(hashScratch.buffer);
    }
    const p = prefix ? enc.encodeInto(prefix, hashScratch).written : 0;
    hashView.setUint32(p, this.v4.length, true);
    hashView.setUint32(p + 4, this.v6.length, true);
    hashScratch.set(v4, p + 8);
    hashScratch.set(v6, p + 8 + v4.length);
    return sha256(hashScratch.subarray(0, p + 8 + v4.length + v6.length));
  }
  /** Addresses in the set, per family (BigInt, exact). */
  size(family: Family): bigint {
    let t = 0n;
    if (family === 4) for (let i = 0; i < this.v4.length; i += 2) t += BigInt(this.v4[i + 1] - this.v4[i] + 1);
    else {
      for (let i = 0; i < this.v6.length; i += 4) {
        t += ((this.v6[i + 2] << 64n) | this.v6[i + 3]) - ((this.v6[i] << 64n) | this.v6[i + 1]) + 1n;
      }
    }
    return t;
  }
}

const EMPTY_BYTES = new Uint8Array(0);

function latin1(s: string): Buffer {
  if (!/^[\x20-\x7e]*$/.test(s)) throw new Error(`core: line text must be printable ASCII: ${JSON.stringify(s)}`);
  return Buffer.from(s, 'latin1');
}

function sameArray(a: Uint32Array | BigUint64Array, b: Uint32Array | BigUint64Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** copy one family's ranges into WASM; returns [ptr, range count] */
function putRanges(w: CoreExports, s: AddrSet, f: Family): [number, number] {
  return f === 4 ? [put(w, s.v4), s.v4.length >> 1] : [put(w, s.v6), s.v6.length >> 2];
}

function binop(kind: number, a: AddrSet, b: AddrSet): AddrSet {
  return new AddrSet(op4(kind, a.v4, b.v4), op6(kind, a.v6, b.v6));
}

/** result of a set operation when one side is empty */
function trivial<T extends Uint32Array | BigUint64Array>(kind: number, a: T, b: T, empty: T): T | undefined {
  if (a.length === 0) return kind === OP_UNION ? b : empty;
  if (b.length === 0) return kind === OP_INTERSECT ? empty : a;
  return undefined;
}

/** below this many ranges in all, v4 operations run in JS (a WASM round trip costs more than the merge) */
const JS_OP4_RANGES = 256;

function op4(kind: number, a: Uint32Array, b: Uint32Array): Uint32Array {
  const t = trivial(kind, a, b, EMPTY4);
  if (t) return t;
  const na = a.length >> 1, nb = b.length >> 1;
  if (na + nb <= JS_OP4_RANGES) return jsOp4(kind, a, b);
  const w = wasm();
  w.reset();
  const pa = put(w, a), pb = put(w, b);
  const out = w.alloc((na + nb + 1) * 8);
  const n = w.op4(kind, pa, na, pb, nb, out);
  return n ? new Uint32Array(w.memory.buffer.slice(out, out + n * 8)) : EMPTY4;
}

function op6(kind: number, a: BigUint64Array, b: BigUint64Array): BigUint64Array {
  const t = trivial(kind, a, b, EMPTY6);
  if (t) return t;
  const w = wasm();
  w.reset();
  const na = a.length >> 2, nb = b.length >> 2;
  const pa = put(w, a), pb = put(w, b);
  const out = w.alloc((na + nb + 1) * 32);
  const n = w.op6(kind, pa, na, pb, nb, out);
  return n ? new BigUint64Array(w.memory.buffer.slice(out, out + n * 32)) : EMPTY6;
}

/** cidrCount() per set and family once known (sets are immutable; the compiler asks several times) */
const COUNT4 = new WeakMap<AddrSet, number>();
const COUNT6 = new WeakMap<AddrSet, number>();

/** v4 sets up to this many range bounds have their CIDRs counted in JS */
const JS_COUNT_RANGES = 512;

/**
 * Number of CIDRs in the minimal cover of normalized v4 ranges (inclusive
 * start/end pairs): from each start, the largest block aligned there that
 * fits in the rest of the range.
 */
export function jsCidrCount4(a: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i += 2) {
    let s = a[i];
    const e = a[i + 1];
    for (;;) {
      n++;
      const span = e - s + 1;
      // alignment of s (2^32 for 0) and the largest power of two within the span
      const align = s === 0 ? 4294967296 : (s & -s) >>> 0;
      const fit = span >= 4294967296 ? 4294967296 : 0x80000000 >>> Math.clz32(span);
      const size = align < fit ? align : fit;
      if (size >= span) break;
      s += size;
    }
  }
  return n;
}

/**
 * Union, intersection or difference of two normalised v4 range lists (sorted,
 * disjoint, non-adjacent, inclusive) in one sweep over both; same result as
 * the core's op4 (tested against it).
 */
export function jsOp4(kind: number, a: Uint32Array, b: Uint32Array): Uint32Array {
  // at most one output range per input range
  const out = new Uint32Array(a.length + b.length);
  let m = 0;
  let i = 0, j = 0;
  if (kind === OP_UNION) {
    while (i < a.length || j < b.length) {
      let s: number, e: number;
      if (j >= b.length || (i < a.length && a[i] <= b[j])) { s = a[i]; e = a[i + 1]; i += 2; } else { s = b[j]; e = b[j + 1]; j += 2; }
      if (m && s <= out[m - 1] + 1) { if (e > out[m - 1]) out[m - 1] = e; } else { out[m++] = s; out[m++] = e; }
    }
  } else if (kind === OP_INTERSECT) {
    while (i < a.length && j < b.length) {
      const s = Math.max(a[i], b[j]), e = Math.min(a[i + 1], b[j + 1]);
      if (s <= e) { out[m++] = s; out[m++] = e; }
      if (a[i + 1] < b[j + 1]) i += 2; else j += 2;
    }
  } else {
    // a minus b: walk a's ranges, cutting out b's
    for (; i < a.length; i += 2) {
      let s = a[i];
      const e = a[i + 1];
      while (j < b.length && b[j + 1] < s) j += 2;
      let k = j;
      while (k < b.length && b[k] <= e && s <= e) {
        if (b[k] > s) { out[m++] = s; out[m++] = b[k] - 1; }
        if (b[k + 1] >= e) { s = e + 1; break; }
        s = b[k + 1] + 1;
        k += 2;
      }
      if (s <= e) { out[m++] = s; out[m++] = e; }
    }
  }
  return m === 0 ? EMPTY4 : m === out.length ? out : out.slice(0, m);
}

/** Normalize the WASM accumulators into a set (sort + merge inside WASM). */
function takeAccumulated(w: CoreExports): AddrSet {
  const n4 = w.normalize4();
  const v4 = n4 ? new Uint32Array(w.memory.buffer.slice(w.resPtr(), w.resPtr() + n4 * 8)) : EMPTY4;
  const n6 = w.normalize6();
  const v6 = n6 ? new BigUint64Array(w.memory.buffer.slice(w.resPtr(), w.resPtr() + n6 * 32)) : EMPTY6;
  return new AddrSet(v4, v6);
}

export interface RenderOptions {
  family?: Family;
  /** prefix-length reduction, max % entry growth */
  reduce?: number;
  /** iprange --ipset-reduce-entries */
  reduceEntries?: number;
  /** single hosts without /32 or /128 */
  bare?: boolean;
}

/** One CIDR per line ('\n' terminated), v4 then v6, rendered inside WASM. */
export function renderText(s: AddrSet, opts: RenderOptions = {}): Uint8Array {
  const w = wasm();
  w.reset();
  w.accBegin();
  renderInto(w, s, opts);
  return bytesAt(w, w.outPtr(), w.outLen());
}

function renderInto(w: CoreExports, s: AddrSet, opts: RenderOptions, p4?: number, n4?: number, p6?: number, n6?: number): void {
  const flags = opts.bare ? F_BARE : 0;
  for (const f of [4, 6] as const) {
    if (opts.family && opts.family !== f) continue;
    let p: number, n: number;
    if (f === 4 && p4 !== undefined) [p, n] = [p4, n4!];
    else if (f === 6 && p6 !== undefined) [p, n] = [p6, n6!];
    else [p, n] = putRanges(w, s, f);
    if (n === 0) continue;
    if (opts.reduce !== undefined) w.reduceSet(f, p, n, Math.max(0, Math.floor(opts.reduce)), BigInt(opts.reduceEntries ?? 0), flags);
    else w.renderSet(f, p, n, flags);
  }
}

export type EntryKind = 'address' | 'cidr' | 'range';

/** Result for one entry of a bulk parse. */
export type ParsedEntry =
  | { ok: true; family: Family; kind: EntryKind; set: AddrSet; /** canonical text of the entry */ text: string }
  | { ok: false; /** why it is malformed, e.g. `host bits set (did you mean 10.0.0.0/8?)` */ reason: string;
      /** 0-based character offset inside the entry where the problem starts */ offset: number };

export interface ParseOptions {
  /** CIDR with host bits set is an error (default true). When false, the host bits are masked off. */
  strict?: boolean;
  /** accept ranges "a-b" (default true) */
  ranges?: boolean;
  /** accept bare addresses (default true) */
  addresses?: boolean;
  /** accept CIDRs (default true) */
  cidrs?: boolean;
}

function flagsOf(opts?: ParseOptions): number {
  let f = 0;
  if (opts?.strict !== false) f |= F_STRICT;
  if (opts?.ranges !== false) f |= F_RANGES;
  if (opts?.addresses !== false) f |= F_ADDRS;
  if (opts?.cidrs !== false) f |= F_CIDRS;
  return f;
}

const KINDS: EntryKind[] = ['address', 'cidr', 'range'];

/** byte offset inside text's UTF-8 form -> character offset */
function charOffset(text: string, byteOff: number): number {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(text)) return byteOff;
  return dec.decode(enc.encode(text).subarray(0, byteOff)).length;
}

function parseEntriesRaw(entries: string[], flags: number): { results: ParsedEntry[]; set: AddrSet } {
  if (entries.length === 0) return { results: [], set: AddrSet.empty() };
  // a line break inside an entry would split it: replace it by a character the parser rejects
  const joined = entries.map((e) => (e.includes('\n') ? e.replace(/\n/g, '\r') : e)).join('\n');
  const w = wasm();
  w.reset();
  w.accBegin();
  const bytes = enc.encode(joined);
  const p = put(w, bytes);
  const n = w.parseEntries(p, bytes.length, flags);
  if (n !== entries.length) throw new Error(`core: parsed ${n} entries, expected ${entries.length}`);
  const recs = new DataView(w.memory.buffer.slice(w.recPtr(), w.recPtr() + n * 64));
  const text = w.memory.buffer.slice(w.outPtr(), w.outPtr() + w.outLen());
  const set = takeAccumulated(w);
  const results: ParsedEntry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * 64;
    const code = recs.getInt32(o, true);
    const canon = dec.decode(new Uint8Array(text, recs.getUint32(o + 48, true), recs.getUint32(o + 52, true)));
    if (code === 0) {
      const family = recs.getUint8(o + 12) as Family;
      const kind = KINDS[recs.getUint8(o + 13)];
      const shi = recs.getBigUint64(o + 16, true), slo = recs.getBigUint64(o + 24, true);
      const ehi = recs.getBigUint64(o + 32, true), elo = recs.getBigUint64(o + 40, true);
      const es = family === 4
        ? new AddrSet(Uint32Array.of(Number(slo), Number(elo)), EMPTY6)
        : new AddrSet(EMPTY4, BigUint64Array.of(shi, slo, ehi, elo));
      results[i] = { ok: true, family, kind, set: es, text: canon };
    } else {
      const err: RawError = { code, offset: charOffset(entries[i], recs.getUint32(o + 4, true)), aux: recs.getInt32(o + 8, true) };
      results[i] = { ok: false, reason: reasonFor(entries[i], err, canon), offset: err.offset };
    }
  }
  return { results, set };
}

/**
 * Parse many entries in one WASM call. Entries are single items (no commas):
 * IPv4, IPv6 (all RFC 4291/5952 forms incl. ::ffff:1.2.3.4), CIDR, range a-b.
 * IPv4 octets with leading zeros (010.0.0.0) are rejected, as Cloud Controller does.
 */
export function parseEntries(entries: string[], opts?: ParseOptions): ParsedEntry[] {
  return parseEntriesRaw(entries, flagsOf(opts)).results;
}

/** One bad line of a text list. line is 1-based. */
export interface LineError { line: number; text: string; reason: string }

interface RawLineError { line: number; text: string; err: RawError }

function readLineErrors(w: CoreExports, buf: Uint8Array, from: number, to: number): RawLineError[] {
  const out: RawLineError[] = [];
  const recs = new DataView(w.memory.buffer.slice(w.recPtr() + from, w.recPtr() + to));
  for (let o = 0; o < to - from; o += 32) {
    const text = dec.decode(buf.subarray(recs.getUint32(o + 20, true), recs.getUint32(o + 24, true)));
    out.push({
      line: recs.getUint32(o, true),
      text,
      err: { code: recs.getInt32(o + 8, true), offset: charOffset(text, recs.getUint32(o + 12, true)), aux: recs.getInt32(o + 16, true) },
    });
  }
  return out;
}

/** Turn raw errors into messages (may run the parser again for host-bit hints, so call it last). */
function lineErrors(raw: RawLineError[]): LineError[] {
  const hostBits = raw.filter((r) => r.err.code === E.HOST_BITS).map((r) => r.text);
  const networks = new Map<string, string>();
  if (hostBits.length) {
    const fixed = parseEntriesRaw(hostBits, F_RANGES | F_ADDRS | F_CIDRS).results;
    hostBits.forEach((t, i) => { const r = fixed[i]; if (r.ok) networks.set(t, r.text); });
  }
  return raw.map((r) => ({ line: r.line, text: r.text, reason: reasonFor(r.text, r.err, networks.get(r.text)) }));
}

/**
 * Parse a text buffer with one entry per line (blank lines and `#` comments
 * ignored, surrounding whitespace trimmed) into a set, in one WASM call.
 * A line may hold a comma list of entries.
 */
export function parseLines(buf: Uint8Array, opts?: ParseOptions): { set: AddrSet; errors: LineError[]; count: number } {
  const w = wasm();
  w.reset();
  w.accBegin();
  const p = put(w, buf);
  w.parseLines(p, buf.length, flagsOf(opts), 0);
  const count = w.okCount();
  const raw = readLineErrors(w, buf, 0, w.recLen());
  const set = takeAccumulated(w);
  return { set, errors: lineErrors(raw), count };
}

/**
 * Many comma lists (a policy's ASG destinations) parsed in one core call,
 * each into its own union, with the number of good items; undefined for a
 * list with a bad item (read it again item by item for the message). Items
 * are taken verbatim; a list must not contain a newline. The sets are views
 * of one buffer holding every list's ranges.
 */
export function parseLists(lists: string[], opts?: ParseOptions): Array<{ set: AddrSet; count: number } | undefined> {
  if (lists.length === 0) return [];
  for (const l of lists) if (l.includes('\n')) throw new Error('parseLists: a list contains a newline');
  const w = wasm();
  w.reset();
  w.accBegin();
  const bytes = Buffer.from(lists.join('\n'), 'utf8');
  const n = w.parseLists(put(w, bytes), bytes.length, flagsOf(opts));
  if (n !== lists.length) throw new Error(`parseLists: ${n} lists read, ${lists.length} given`);
  const recs = new Uint32Array(w.memory.buffer.slice(w.recPtr(), w.recPtr() + n * LIST_RECORD * 4));
  const out = w.memory.buffer.slice(w.outPtr(), w.outPtr() + w.outLen());
  const res: Array<{ set: AddrSet; count: number } | undefined> = new Array(n);
  for (let i = 0, r = 0; i < n; i++, r += LIST_RECORD) {
    if (recs[r + 1] !== 0) continue;
    const n4 = recs[r + 2], n6 = recs[r + 3], off = recs[r + 4];
    const v4 = n4 ? new Uint32Array(out, off, n4 * 2) : EMPTY4;
    const v6 = n6 ? new BigUint64Array(out, off + n4 * 8, n6 * 4) : EMPTY6;
    res[i] = { set: new AddrSet(v4, v6), count: recs[r] };
  }
  return res;
}

/** u32 words per list in parseLists' records (assembly/parse.ts): good, bad, v4 ranges, v6 ranges, offset, pad */
const LIST_RECORD = 6;

/** Errors of one input of aggregateText(). */
export interface InputErrors { input: number; errors: LineError[] }

/**
 * The `cidr aggregate` pipeline in one pass through WASM: parse every input
 * buffer, sort, merge and render the CIDR list (or its reduction) as text,
 * without materialising the set in JS.
 */
export function aggregateText(inputs: Uint8Array[], opts: ParseOptions & RenderOptions = {}):
  { text: Uint8Array; errors: InputErrors[]; count: number } {
  const w = wasm();
  w.reset();
  w.accBegin();
  const flags = flagsOf(opts);
  const raws: Array<{ input: number; raw: RawLineError[] }> = [];
  let count = 0;
  inputs.forEach((buf, i) => {
    const before = w.recLen();
    const p = put(w, buf);
    w.parseLines(p, buf.length, flags, 0);
    count += w.okCount();
    if (w.recLen() > before) raws.push({ input: i, raw: readLineErrors(w, buf, before, w.recLen()) });
  });
  const n4 = w.normalize4(); const p4 = w.resPtr();
  const n6 = w.normalize6(); const p6 = w.resPtr();
  const outStart = w.outLen();
  renderInto(w, AddrSet.empty(), opts, p4, n4, p6, n6);
  const text = bytesAt(w, w.outPtr() + outStart, w.outLen() - outStart);
  const errors = raws.map((r) => ({ input: r.input, errors: lineErrors(r.raw) }));
  return { text, errors, count };
}

/**
 * Longest-prefix / containing-entry lookup built once, queried in bulk.
 * Build from (set, id) pairs; lookup returns, for each address, the id of the
 * most specific containing prefix (or -1). Used by explain and diff.
 * Between identical prefixes of two entries, the earlier entry wins.
 */
export class Lookup {
  /** flattened disjoint intervals: [shi, slo, ehi, elo, id] per interval (v4 values in lo) */
  private t4!: BigUint64Array;
  private t6!: BigUint64Array;

  constructor(entries: Array<{ set: AddrSet; id: number }>) {
    if (entries.length === 0) { this.t4 = EMPTY6; this.t6 = EMPTY6; return; }
    let n4 = 0, n6 = 0;
    for (const e of entries) {
      if (!Number.isInteger(e.id) || e.id < 0 || e.id > 0x7fffffff) throw new Error(`Lookup: id ${e.id} is not an integer in 0..2^31-1`);
      n4 += e.set.v4.length >> 1; n6 += e.set.v6.length >> 2;
    }
    const r4 = new BigUint64Array(n4 * 5), r6 = new BigUint64Array(n6 * 5);
    let k4 = 0, k6 = 0;
    for (const { set, id } of entries) {
      const bid = BigInt(id);
      for (let i = 0; i < set.v4.length; i += 2) {
        r4[k4 + 1] = BigInt(set.v4[i]); r4[k4 + 3] = BigInt(set.v4[i + 1]); r4[k4 + 4] = bid; k4 += 5;
      }
      for (let i = 0; i < set.v6.length; i += 4) {
        r6[k6] = set.v6[i]; r6[k6 + 1] = set.v6[i + 1]; r6[k6 + 2] = set.v6[i + 2]; r6[k6 + 3] = set.v6[i + 3]; r6[k6 + 4] = bid; k6 += 5;
      }
    }
    const w = wasm();
    this.t4 = buildTable(w, () => w.lookupFromRanges(4, put(w, r4), n4));
    this.t6 = buildTable(w, () => w.lookupFromRanges(6, put(w, r6), n6));
  }

  /**
   * A lookup over the minimal CIDR cover of a set: the id of an address is
   * the index in set.toCidrs() of the CIDR holding it.
   */
  static ofCidrs(set: AddrSet): Lookup {
    const l = Object.create(Lookup.prototype) as Lookup;
    const w = wasm();
    const c4 = set.cidrCount(4);
    l.t4 = buildTable(w, () => w.lookupFromSet(4, put(w, set.v4), set.v4.length >> 1, 0));
    l.t6 = buildTable(w, () => w.lookupFromSet(6, put(w, set.v6), set.v6.length >> 2, c4));
    return l;
  }

  /** Addresses as text, one per array element. Returns ids (-1 = no match). Throws CellwallError on a non-address. */
  find(addresses: string[]): Int32Array {
    if (addresses.length === 0) return new Int32Array(0);
    const w = wasm();
    w.reset();
    const t4 = put(w, this.t4), t6 = put(w, this.t6);
    const bytes = enc.encode(addresses.map((a) => a.replace(/\n/g, '\r')).join('\n'));
    const p = put(w, bytes);
    const out = w.alloc(addresses.length * 4);
    w.lookupText(t4, this.t4.length / 5, t6, this.t6.length / 5, p, bytes.length, out);
    const ids = new Int32Array(w.memory.buffer.slice(out, out + addresses.length * 4));
    const bad = ids.indexOf(-2);
    if (bad >= 0) {
      const r = parseEntries([addresses[bad]], { ranges: false, cidrs: false })[0];
      throw new CellwallError(`invalid address "${addresses[bad]}": ${r.ok ? 'not an address' : r.reason}`);
    }
    return ids;
  }

  /** IPv4 addresses as integers, in bulk. */
  findV4(addresses: Uint32Array): Int32Array {
    const w = wasm();
    w.reset();
    const t4 = put(w, this.t4);
    const p = put(w, addresses);
    const out = w.alloc(addresses.length * 4);
    w.lookupU32(t4, this.t4.length / 5, p, addresses.length, out);
    return new Int32Array(w.memory.buffer.slice(out, out + addresses.length * 4));
  }
}

function buildTable(w: CoreExports, build: () => number): BigUint64Array {
  w.reset();
  const n = build();
  if (n === 0) return EMPTY6;
  const p = w.tablePtr();
  return new BigUint64Array(w.memory.buffer.slice(p, p + n * 40));
}
