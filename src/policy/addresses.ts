/**
 * Address entries of a policy: collected from every file during the
 * structural pass, parsed by the core in ONE bulk call, then resolved into
 * sets (network names followed, `!` exclusions applied after inclusions,
 * cycles reported).
 */
import { AddrSet, parseEntries, parseLines, parseLists } from '../core/index.js';
import type { Family, ParsedEntry } from '../core/index.js';
import type { SourceLoc } from '../errors.js';
import type { Node } from './nodes.js';
import type { Reader } from './source.js';
import { suggest } from './source.js';

const enc = new TextEncoder();
const STRICT = { strict: true };
const LAX = { strict: false };

/** network names: not confusable with an address (no leading digit, no ':' or '/') */
export const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
export const NAME_FORM = 'a name of letters, digits, "_", "." and "-" starting with a letter or "_"';
export const ENTRY_FORM = 'an IPv4/IPv6 address, CIDR, range a-b, or network name, optionally prefixed with "!" to exclude';

/** Where an entry was written: the scalar node and the entry's offset inside it. */
interface Origin { reader: Reader; node: Node; path: string; offset: number }

export type EntryItem = AddrItem | { kind: 'name'; name: string; exclude: boolean; text: string; loc: SourceLoc };

/** A literal address entry; its location is computed only when a message needs it. */
export class AddrItem {
  readonly kind = 'addr' as const;
  constructor(readonly idx: number, readonly exclude: boolean, readonly text: string, private readonly pool: AddressPool) {}
  get loc(): SourceLoc { return this.pool.loc(this.idx); }
}

/** Collects every literal address entry of the policy for one bulk parse. */
export class AddressPool {
  private readonly texts: string[] = [];
  private readonly origins: Origin[] = [];
  private results: ParsedEntry[] = [];

  /** Classify one entry (already split from its list) as a network name or a literal address. */
  item(text: string, exclude: boolean, o: Origin): EntryItem {
    if (NAME_RE.test(text)) return { kind: 'name', name: text, exclude, text, loc: o.reader.loc(o.node, o.path, o.offset) };
    this.texts.push(text);
    this.origins.push(o);
    return new AddrItem(this.texts.length - 1, exclude, text, this);
  }

  /** where literal entry idx was written */
  loc(idx: number): SourceLoc {
    const o = this.origins[idx];
    return o.reader.loc(o.node, o.path, o.offset);
  }

  get size(): number { return this.texts.length; }

  /** CIDRs with host bits set are errors (the policy's `strict`); set before any entry is read */
  strict = true;

  /**
   * A comma list of literal entries (an ASG destination) parsed in one core
   * call straight into its union, without per-entry sets. Undefined when any
   * item needs the per-entry path: a network name, an empty or malformed item
   * (its message names the exact character), or a `#` (a comment to the line
   * parser).
   */
  literalUnion(text: string, items: number): AddrSet | undefined {
    const hit = this.prefetched.get(text);
    if (hit !== undefined) return hit && hit.count === items ? hit.set : undefined;
    if (text.includes('#')) return undefined;
    // UTF-8 takes at most 3 bytes per UTF-16 unit
    if (this.scratch.length < text.length * 3) this.scratch = new Uint8Array(Math.max(text.length * 3, this.scratch.length * 2));
    const { written } = enc.encodeInto(text, this.scratch);
    const r = parseLines(this.scratch.subarray(0, written), this.parseOpts);
    return r.errors.length === 0 && r.count === items ? r.set : undefined;
  }

  /**
   * literalUnion() of many destinations at once, before their rules are read
   * (one core call for a policy's inline ASG rules instead of one per rule).
   * A text the core cannot take whole (a newline, a bad item, a network name)
   * is remembered as such and read by the per-entry path as before.
   */
  prefetchLiterals(texts: string[]): void {
    const uniq = [...new Set(texts)].filter((t) => !t.includes('\n') && !t.includes('#'));
    const res = parseLists(uniq, this.parseOpts);
    uniq.forEach((t, i) => this.prefetched.set(t, res[i] ?? null));
  }

  private readonly prefetched = new Map<string, { set: AddrSet; count: number } | null>();

  /** encoding buffer of literalUnion() */
  private scratch = new Uint8Array(4096);
  private get parseOpts(): { strict: boolean } { return this.strict ? STRICT : LAX; }

  /** One core call for all entries; bad entries are reported at the exact character. */
  parse(strict: boolean): void {
    this.results = this.texts.length ? parseEntries(this.texts, { strict }) : [];
    this.results.forEach((res, i) => {
      if (res.ok) return;
      const o = this.origins[i];
      o.reader.error(o.node, o.path, `invalid address ${JSON.stringify(this.texts[i])}: ${res.reason}`,
        'an IPv4/IPv6 address, CIDR or range a-b (IPv4 octets without leading zeros)', o.offset);
    });
  }

  result(idx: number): ParsedEntry | undefined {
    return this.results[idx];
  }
}

/**
 * Read an entry list (a string or a list of strings): addresses, CIDRs,
 * ranges, network names, each optionally prefixed by `!` when exclusions are
 * allowed. Returns undefined when the node has the wrong type.
 */
export function readEntryList(r: Reader, raw: Node | null, path: string, pool: AddressPool, allowExclude: boolean): EntryItem[] | undefined {
  const strs = r.strings(raw, path, 'a list of address entries or network names');
  if (!strs) return undefined;
  const items: EntryItem[] = [];
  for (const s of strs) {
    let text = s.text;
    let offset = 0;
    let exclude = false;
    if (text.startsWith('!')) {
      if (!allowExclude) {
        r.error(s.node, s.path, `exclusions are not allowed here: ${JSON.stringify(text)}`, 'an address entry or network name without "!"');
        continue;
      }
      exclude = true;
      text = text.slice(1);
      offset = 1;
    }
    const ws = text.search(/\s/);
    if (ws >= 0) {
      r.error(s.node, s.path, `entry ${JSON.stringify(s.text)} contains whitespace`, ENTRY_FORM, offset + ws);
      continue;
    }
    const comma = text.indexOf(',');
    if (comma >= 0) {
      r.error(s.node, s.path, `entry ${JSON.stringify(s.text)} holds a comma`, 'one entry per list item', offset + comma);
      continue;
    }
    if (text === '') {
      r.error(s.node, s.path, 'empty entry', ENTRY_FORM);
      continue;
    }
    items.push(pool.item(text, exclude, { reader: r, node: s.node, path: s.path, offset }));
  }
  return items;
}

interface NetworkDef { items: EntryItem[] }

/**
 * Resolves entry lists to sets, following network names. Errors (undefined
 * names, cycles) are reported once each; a list with an error resolves to
 * undefined.
 */
export class Resolver {
  private readonly done = new Map<string, AddrSet | undefined>();
  private readonly visiting: string[] = [];

  constructor(
    private readonly pool: AddressPool,
    private readonly defs: Map<string, NetworkDef>,
    private readonly report: (loc: SourceLoc, message: string, expected?: string) => void,
  ) {}

  network(name: string): AddrSet | undefined {
    if (this.done.has(name)) return this.done.get(name);
    const def = this.defs.get(name);
    if (!def) return undefined;
    this.visiting.push(name);
    const set = this.items(def.items);
    this.visiting.pop();
    this.done.set(name, set);
    return set;
  }

  /** the set of one item, or undefined when it is in error */
  item(it: EntryItem): AddrSet | undefined {
    if (it.kind === 'addr') {
      const res = this.pool.result(it.idx);
      return res && res.ok ? res.set : undefined;
    }
    const at = this.visiting.indexOf(it.name);
    if (at >= 0) {
      const chain = [...this.visiting.slice(at), it.name].join(' -> ');
      this.report(it.loc, `network cycle: ${chain}`, 'networks that do not include themselves');
      return undefined;
    }
    if (!this.defs.has(it.name)) {
      const near = suggest(it.name, this.defs.keys());
      this.report(it.loc, `undefined network ${JSON.stringify(it.name)}${near ? ` (did you mean "${near}"?)` : ''}`,
        this.defs.size ? `an address entry or one of the networks: ${[...this.defs.keys()].join(', ')}` : 'an address entry (no networks are defined)');
      return undefined;
    }
    return this.network(it.name);
  }

  /** inclusions united, then exclusions removed (exclusions apply after all inclusions) */
  items(items: EntryItem[]): AddrSet | undefined {
    const inc: AddrSet[] = [];
    const exc: AddrSet[] = [];
    let ok = true;
    for (const it of items) {
      const s = this.item(it);
      if (!s) { ok = false; continue; }
      (it.exclude ? exc : inc).push(s);
    }
    if (!ok) return undefined;
    const excluded = unionAll(exc);
    return excluded.isEmpty() ? unionAll(inc) : unionAll(inc).difference(excluded);
  }

  /** family of a literal entry, undefined for names and bad entries */
  familyOf(it: EntryItem): Family | undefined {
    if (it.kind !== 'addr') return undefined;
    const res = this.pool.result(it.idx);
    return res && res.ok ? res.family : undefined;
  }
}

/**
 * Union of many sets. IPv4 in JS: every range tagged with its start, one
 * native numeric sort, one merge pass (no WASM round trip and no
 * intermediate sets per pair). IPv6 (rare in policies) as a balanced tree of
 * pairwise core unions over the sets that have any.
 */
export function unionAll(sets: AddrSet[]): AddrSet {
  if (sets.length === 0) return AddrSet.empty();
  if (sets.length === 1) return sets[0];
  if (sets.length === 2) return sets[0].union(sets[1]);
  let n4 = 0;
  const with6: AddrSet[] = [];
  for (const s of sets) {
    n4 += s.v4.length >> 1;
    if (s.v6.length) with6.push(s.v4.length ? s.family(6) : s);
  }
  const v4 = n4 < MAX_SORT_RANGES ? union4(sets, n4) : treeUnion(sets.map((s) => s.family(4))).v4;
  const v6 = with6.length ? treeUnion(with6).v6 : new BigUint64Array(0);
  return new AddrSet(v4, v6);
}

/** ranges per sort: a key is start * 2^21 + index, exact in a double (2^32 * 2^21 = 2^53) */
const MAX_SORT_RANGES = 1 << 21;

function union4(sets: AddrSet[], n: number): Uint32Array {
  if (n === 0) return new Uint32Array(0);
  const starts = new Uint32Array(n), ends = new Uint32Array(n);
  const keys = new Float64Array(n);
  let k = 0;
  for (const s of sets) {
    const a = s.v4;
    for (let i = 0; i < a.length; i += 2, k++) {
      starts[k] = a[i];
      ends[k] = a[i + 1];
      keys[k] = a[i] * MAX_SORT_RANGES + k;
    }
  }
  keys.sort();
  const out = new Uint32Array(n * 2);
  let m = 0;
  let cs = -1, ce = -1;
  for (let i = 0; i < n; i++) {
    const j = keys[i] % MAX_SORT_RANGES;
    const s = starts[j], e = ends[j];
    if (cs >= 0 && s <= ce + 1) {
      if (e > ce) ce = e;
    } else {
      if (cs >= 0) { out[m++] = cs; out[m++] = ce; }
      cs = s;
      ce = e;
    }
  }
  out[m++] = cs;
  out[m++] = ce;
  return m === out.length ? out : out.slice(0, m);
}

function treeUnion(sets: AddrSet[]): AddrSet {
  let level = sets;
  while (level.length > 1) {
    const next: AddrSet[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? level[i].union(level[i + 1]) : level[i]);
    level = next;
  }
  return level[0] ?? AddrSet.empty();
}
