/**
 * Address entries of a policy: collected from every file during the
 * structural pass, parsed by the core in ONE bulk call, then resolved into
 * sets (network names followed, `!` exclusions applied after inclusions,
 * cycles reported).
 */
import { AddrSet, parseEntries } from '../core/index.js';
import type { Family, ParsedEntry } from '../core/index.js';
import type { SourceLoc } from '../errors.js';
import type { Node } from 'yaml';
import type { Reader } from './source.js';
import { suggest } from './source.js';

/** network names: not confusable with an address (no leading digit, no ':' or '/') */
export const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
export const NAME_FORM = 'a name of letters, digits, "_", "." and "-" starting with a letter or "_"';
export const ENTRY_FORM = 'an IPv4/IPv6 address, CIDR, range a-b, or network name, optionally prefixed with "!" to exclude';

/** Where an entry was written: the scalar node and the entry's offset inside it. */
interface Origin { reader: Reader; node: Node; path: string; offset: number }

export type EntryItem =
  | { kind: 'addr'; idx: number; exclude: boolean; text: string; loc: SourceLoc }
  | { kind: 'name'; name: string; exclude: boolean; text: string; loc: SourceLoc };

/** Collects every literal address entry of the policy for one bulk parse. */
export class AddressPool {
  private readonly texts: string[] = [];
  private readonly origins: Origin[] = [];
  private results: ParsedEntry[] = [];

  /** Classify one entry (already split from its list) as a network name or a literal address. */
  item(text: string, exclude: boolean, o: Origin): EntryItem {
    const loc = o.reader.loc(o.node, o.path, o.offset);
    if (NAME_RE.test(text)) return { kind: 'name', name: text, exclude, text, loc };
    this.texts.push(text);
    this.origins.push(o);
    return { kind: 'addr', idx: this.texts.length - 1, exclude, text, loc };
  }

  get size(): number { return this.texts.length; }

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
export function readEntryList(r: Reader, raw: unknown, path: string, pool: AddressPool, allowExclude: boolean): EntryItem[] | undefined {
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

/** Union of many sets as a balanced tree: O(n log n) work instead of O(n^2) for long entry lists. */
export function unionAll(sets: AddrSet[]): AddrSet {
  if (sets.length === 0) return AddrSet.empty();
  let level = sets;
  while (level.length > 1) {
    const next: AddrSet[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? level[i].union(level[i + 1]) : level[i]);
    level = next;
  }
  return level[0];
}
