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

export type Family = 4 | 6;

export class AddrSet {
  constructor(readonly v4: Uint32Array, readonly v6: BigUint64Array) {}
  static empty(): AddrSet { throw new Error('core: not implemented'); }
  /** 0.0.0.0/0 and ::/0 */
  static all(): AddrSet { throw new Error('core: not implemented'); }
  /** Union of already-valid entries (address, CIDR, range a-b). Throws CellwallError on a bad entry. */
  static of(entries: string[]): AddrSet { throw new Error('core: not implemented'); }
  isEmpty(): boolean { throw new Error('core: not implemented'); }
  /** restrict to one family */
  family(f: Family): AddrSet { throw new Error('core: not implemented'); }
  union(o: AddrSet): AddrSet { throw new Error('core: not implemented'); }
  intersect(o: AddrSet): AddrSet { throw new Error('core: not implemented'); }
  difference(o: AddrSet): AddrSet { throw new Error('core: not implemented'); }
  equals(o: AddrSet): boolean { throw new Error('core: not implemented'); }
  /** true when every address of o is in this */
  contains(o: AddrSet): boolean { throw new Error('core: not implemented'); }
  /** Minimal CIDR cover, sorted by address, v4 first then v6. Single hosts are written with /32 or /128. */
  toCidrs(family?: Family): string[] { throw new Error('core: not implemented'); }
  /** number of CIDRs toCidrs() would return, per family */
  cidrCount(family: Family): number { throw new Error('core: not implemented'); }
  /** Prefix-length reduction like iprange --ipset-reduce: same addresses, at most ~`percent`% more entries, fewer distinct prefix lengths. */
  reducedCidrs(percent: number, family?: Family): string[] { throw new Error('core: not implemented'); }
  /** Stable content hash (hex) of the set; equal sets give equal hashes. */
  hash(): string { throw new Error('core: not implemented'); }
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
}

/**
 * Parse many entries in one WASM call. Entries are single items (no commas):
 * IPv4, IPv6 (all RFC 4291/5952 forms incl. ::ffff:1.2.3.4), CIDR, range a-b.
 * IPv4 octets with leading zeros (010.0.0.0) are rejected, as Cloud Controller does.
 */
export function parseEntries(entries: string[], opts?: ParseOptions): ParsedEntry[] {
  throw new Error('core: not implemented');
}

/** One bad line of a text list. line is 1-based. */
export interface LineError { line: number; text: string; reason: string }

/**
 * Parse a text buffer with one entry per line (blank lines and `#` comments
 * ignored, surrounding whitespace trimmed) into a set, in one WASM call.
 */
export function parseLines(buf: Uint8Array, opts?: ParseOptions): { set: AddrSet; errors: LineError[]; count: number } {
  throw new Error('core: not implemented');
}

/**
 * Longest-prefix / containing-entry lookup built once, queried in bulk.
 * Build from (set, id) pairs; lookup returns, for each address, the id of the
 * most specific containing prefix (or -1). Used by explain and diff.
 */
export class Lookup {
  constructor(entries: Array<{ set: AddrSet; id: number }>) { throw new Error('core: not implemented'); }
  /** Addresses as text, one per array element. Returns ids (-1 = no match). */
  find(addresses: string[]): Int32Array { throw new Error('core: not implemented'); }
}
