/**
 * Reading YAML/JSON with positions: every value read through a Reader is
 * type-checked, and every problem becomes a Diagnostic carrying
 * file:line:col, the field path and the expected form. Readers never throw
 * for bad input; they record the problem and return undefined so that one
 * pass lists every error.
 *
 * JSON text goes through a strict JSON scanner (./json.ts) that builds the
 * same tree (./nodes.ts) as the YAML parser; anything the scanner does not
 * take is parsed as YAML, so messages and locations do not depend on the path.
 */
import { isAscii } from 'node:buffer';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import type { Document } from 'yaml';
import type { Diagnostic, SourceLoc } from '../errors.js';
import { looksLikeJson, scanJson } from './json.js';
import type { MapNode, Node, ScalarNode } from './nodes.js';

export type { MapNode, Node, ScalarNode, SeqNode } from './nodes.js';

export class Diags {
  readonly items: Diagnostic[] = [];
  private errors = 0;
  error(loc: SourceLoc, message: string, expected?: string): void {
    this.errors++;
    this.items.push({ severity: 'error', loc, message, ...(expected ? { expected } : {}) });
  }
  warn(loc: SourceLoc, message: string, expected?: string): void {
    this.items.push({ severity: 'warning', loc, message, ...(expected ? { expected } : {}) });
  }
  get errorCount(): number {
    return this.errors;
  }
}

/** `a.b[0]`, `networks["Space.A"]`: a field path segment appended to a parent path. */
export function child(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  const seg = /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
  if (!path) return seg;
  return seg.startsWith('"') ? `${path}[${seg}]` : `${path}.${seg}`;
}

/** Closest candidate within edit distance 2, for "did you mean" hints. */
export function suggest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) { bestD = d; best = c; }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

export interface Field {
  key: string;
  keyNode: Node;
  /** null when the key has no value node at all */
  value: Node | null;
  path: string;
}

/**
 * Canonical JSON of a plain value: keys sorted, so that reformatting does
 * not change a policy's hash.
 */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v ?? null);
}

/**
 * canonical() of a JSON-scanned tree, straight from the nodes (no plain
 * copy of the document), written as UTF-8 in chunks: a string without
 * escapes is its own source text, copied as bytes when the file is ASCII
 * (no string per scalar: ~70 MB less garbage for a 23 MB policy).
 */
class CanonicalJson {
  private buf = Buffer.allocUnsafe(CANONICAL_CHUNK * 2);
  private pos = 0;
  /** the text's bytes when it is ASCII (byte offsets = string offsets), else undefined */
  private readonly ascii?: Buffer;
  constructor(private readonly text: string, bytes: Uint8Array | undefined, private readonly write: (chunk: Uint8Array) => void) {
    // ASCII: byte offsets are the text's offsets (a file with invalid UTF-8 is not ASCII either)
    const b = bytes ? Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength) : Buffer.from(text, 'utf8');
    if (b.length === text.length && isAscii(b)) this.ascii = b;
  }

  run(root: Node | null): void {
    this.node(root);
    if (this.pos) this.write(this.buf.subarray(0, this.pos));
  }

  /** room for n more bytes (flushing first when the chunk is full) */
  private room(n: number): void {
    if (this.pos >= CANONICAL_CHUNK) {
      this.write(this.buf.subarray(0, this.pos));
      this.pos = 0;
    }
    if (this.pos + n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
      this.buf.copy(bigger, 0, 0, this.pos);
      this.buf = bigger;
    }
  }

  private byte(c: number): void {
    this.room(1);
    this.buf[this.pos++] = c;
  }

  private str(t: string): void {
    this.room(t.length * 3);
    this.pos += this.buf.write(t, this.pos, 'utf8');
  }

  private node(n: Node | null): void {
    if (n === null) { this.str('null'); return; }
    if (n.kind === 'scalar') { this.scalar(n); return; }
    if (n.kind === 'seq') {
      this.byte(LBRACKET);
      for (let i = 0; i < n.items.length; i++) {
        if (i > 0) this.byte(COMMA);
        this.node(n.items[i]);
      }
      this.byte(RBRACKET);
      return;
    }
    if (n.kind === 'map') {
      const keys = n.keys as ScalarNode[];
      const order = sortedKeys(keys);
      this.byte(LBRACE);
      for (let j = 0; j < order.length; j++) {
        const i = order[j];
        if (j > 0) this.byte(COMMA);
        this.scalar(keys[i]);
        this.byte(COLON);
        this.node(n.values[i]);
      }
      this.byte(RBRACE);
      return;
    }
    this.str('null');
  }

  private scalar(n: ScalarNode): void {
    const v = n.value;
    if (typeof v === 'string' && n.end - n.start === v.length + 2) {
      if (this.ascii) {
        this.room(n.end - n.start);
        this.pos += this.ascii.copy(this.buf, this.pos, n.start, n.end);
      } else this.str(this.text.slice(n.start, n.end));
      return;
    }
    this.str(JSON.stringify(v ?? null));
  }
}

const LBRACKET = 91, RBRACKET = 93, LBRACE = 123, RBRACE = 125, COMMA = 44, COLON = 58;

/** flush the canonical text to its consumer in chunks of about this many characters */
const CANONICAL_CHUNK = 1 << 16;

/** entry indices of a mapping ordered by key (UTF-16 order, as Array.prototype.sort orders strings) */
function sortedKeys(keys: ScalarNode[]): number[] {
  const order = new Array<number>(keys.length);
  for (let i = 0; i < keys.length; i++) {
    // insertion sort: mappings are small, and often nearly sorted
    const k = keys[i].value as string;
    let j = i;
    while (j > 0 && (keys[order[j - 1]].value as string) > k) { order[j] = order[j - 1]; j--; }
    order[j] = i;
  }
  return order;
}

let yamlLib: typeof Yaml | undefined;

/** the YAML library, loaded on first use: a JSON policy does not need it */
function yaml(): typeof Yaml {
  return (yamlLib ??= createRequire(import.meta.url)('yaml') as typeof Yaml);
}

/** The YAML parser's tree as reader nodes; an alias becomes its anchored node (null when unresolved). */
function fromYaml(doc: Document.Parsed): Node | null {
  const { isAlias, isMap, isScalar, isSeq } = yaml();
  const memo = new Map<unknown, Node>();
  const conv = (y: unknown): Node | null => {
    if (y == null) return null;
    if (isAlias(y)) return conv(y.resolve(doc));
    const hit = memo.get(y);
    if (hit) return hit;
    const range = (y as { range?: [number, number, number] }).range;
    const start = range?.[0] ?? 0;
    let n: Node;
    if (isScalar(y)) {
      n = { kind: 'scalar', start, end: range?.[1] ?? start, value: y.value, quoted: y.type === 'QUOTE_DOUBLE' || y.type === 'QUOTE_SINGLE' };
      memo.set(y, n);
    } else if (isMap(y)) {
      const m: MapNode = { kind: 'map', start, keys: [], values: [] };
      memo.set(y, m);
      for (const p of y.items) { m.keys.push(conv(p.key)); m.values.push(conv(p.value)); }
      n = m;
    } else if (isSeq(y)) {
      const items: Array<Node | null> = [];
      n = { kind: 'seq', start, items };
      memo.set(y, n);
      for (const it of y.items) items.push(conv(it));
    } else {
      n = { kind: 'other', start };
      memo.set(y, n);
    }
    return n;
  };
  return conv(doc.contents);
}

/** One parsed YAML/JSON file. */
export class SourceFile {
  /** the document's top node; null for an empty document */
  readonly root: Node | null;
  /** false when the file could not be parsed into a usable tree (syntax errors) */
  readonly ok: boolean;
  /** which parser read the file */
  readonly parser: 'json' | 'yaml';
  /** offsets where lines start, ascending (yaml's LineCounter form) */
  private readonly lineStarts: number[];
  /** the YAML document (YAML path only), for the alias-expanding canonical form */
  private readonly doc?: Document.Parsed;

  /**
   * `bytes`: the file as read, when the caller has it (`text` is their UTF-8
   * decoding); saves the policy hash an encoding of the text.
   */
  constructor(readonly file: string, readonly text: string, diags: Diags, private readonly bytes?: Uint8Array) {
    const json = looksLikeJson(file, text) ? scanJson(text) : undefined;
    if (json) {
      this.parser = 'json';
      this.root = json.root;
      this.lineStarts = json.lineStarts;
      this.ok = true;
      return;
    }
    this.parser = 'yaml';
    const { LineCounter, parseDocument } = yaml();
    const lc = new LineCounter();
    this.lineStarts = lc.lineStarts;
    const doc = parseDocument(text, { lineCounter: lc, uniqueKeys: true, prettyErrors: true, merge: false });
    let fatal = false;
    for (const e of doc.errors) {
      const pos = e.linePos?.[0] ?? lc.linePos(e.pos[0]);
      const first = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
      const loc: SourceLoc = { file, line: pos.line, col: pos.col, path: '' };
      if (e.code === 'DUPLICATE_KEY') diags.error(loc, 'duplicate key', 'each key at most once per mapping');
      else { fatal = true; diags.error(loc, `syntax error: ${first}`, 'valid YAML or JSON'); }
    }
    for (const w of doc.warnings) {
      const pos = w.linePos?.[0] ?? lc.linePos(w.pos[0]);
      diags.warn({ file, line: pos.line, col: pos.col, path: '' }, w.message.split('\n')[0]);
    }
    this.ok = !fatal;
    this.doc = doc;
    this.root = fromYaml(doc);
  }

  /**
   * canonical() of the document's plain value, for the policy hash. Throws
   * when YAML aliases expand more than maxAliasCount times.
   */
  canonical(maxAliasCount: number): string {
    const chunks: Buffer[] = [];
    // a chunk is only valid during the call
    this.writeCanonical(maxAliasCount, (c) => chunks.push(Buffer.from(c)));
    return Buffer.concat(chunks).toString('utf8');
  }

  /** canonical() as UTF-8, written in chunks, each valid only during the call (nothing is written when it throws) */
  writeCanonical(maxAliasCount: number, write: (chunk: Uint8Array) => void): void {
    if (this.doc) write(Buffer.from(canonical(this.doc.toJS({ maxAliasCount })), 'utf8'));
    else new CanonicalJson(this.text, this.bytes, write).run(this.root);
  }

  /** Location of a node (or of a character inside a single-line scalar when offset is given). */
  loc(node: Node | null | undefined, path: string, offset = 0): SourceLoc {
    const start = node ? node.start : 0;
    let at = start;
    if (offset > 0 && node && node.kind === 'scalar' && typeof node.value === 'string') {
      const base = start + (node.quoted ? 1 : 0);
      // only when the source spells the value verbatim (no escapes, no folding)
      if (this.text.startsWith(node.value, base)) at = base + offset;
    }
    return this.locAt(at, path);
  }

  /** file:line:col of a text offset (yaml's LineCounter.linePos) */
  locAt(offset: number, path: string): SourceLoc {
    const starts = this.lineStarts;
    let low = 0;
    let high = starts.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (starts[mid] < offset) low = mid + 1;
      else high = mid;
    }
    if (starts[low] === offset) return { file: this.file, line: low + 1, col: 1, path };
    if (low === 0) return { file: this.file, line: 0, col: offset, path };
    return { file: this.file, line: low, col: offset - starts[low - 1] + 1, path };
  }
}

/** Typed access to one SourceFile's nodes, reporting into a shared Diags. */
export class Reader {
  constructor(readonly src: SourceFile, readonly diags: Diags) {}

  loc(node: Node | null | undefined, path: string, offset = 0): SourceLoc {
    return this.src.loc(node, path, offset);
  }

  error(node: Node | null | undefined, path: string, message: string, expected?: string, offset = 0): void {
    this.diags.error(this.loc(node, path, offset), message, expected);
  }

  warn(node: Node | null | undefined, path: string, message: string, expected?: string): void {
    this.diags.warn(this.loc(node, path), message, expected);
  }

  /** true when the node is absent or an explicit null (`key:` / `key: null`) */
  isNull(n: Node | null | undefined): boolean {
    return n == null || (n.kind === 'scalar' && n.value == null);
  }

  describe(node: Node | null | undefined): string {
    if (node == null) return 'nothing';
    if (node.kind === 'map') return 'a mapping';
    if (node.kind === 'seq') return 'a list';
    if (node.kind === 'scalar') {
      const v = node.value;
      if (v == null) return 'null';
      if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
      return `${typeof v} ${String(v)}`;
    }
    return 'an unexpected value';
  }

  map(node: Node | null | undefined, path: string, expected = 'a mapping'): MapNode | undefined {
    if (node && node.kind === 'map') return node;
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }

  /**
   * The fields of a mapping, in order. With `allowed`, any other key is an
   * error (typos must not silently weaken a firewall).
   */
  fields(map: MapNode, path: string, allowed?: readonly string[], hint?: string): Field[] {
    const out: Field[] = [];
    for (let i = 0; i < map.keys.length; i++) {
      const key = this.key(map, i, path, allowed, hint);
      if (key !== undefined) out.push({ key, keyNode: map.keys[i]!, value: map.values[i], path: child(path, key) });
    }
    return out;
  }

  /**
   * The string key of a mapping's entry i, or undefined (reported) when it
   * is not a string or, with `allowed`, not one of those.
   */
  key(map: MapNode, i: number, path: string, allowed?: readonly string[], hint?: string): string | undefined {
    const keyNode = map.keys[i];
    if (!keyNode || keyNode.kind !== 'scalar' || typeof keyNode.value !== 'string') {
      this.error(keyNode ?? map, path, `expected a string key, got ${this.describe(keyNode)}`, 'a string key (quote it)');
      return undefined;
    }
    const key = keyNode.value;
    if (allowed && !allowed.includes(key)) {
      const near = suggest(key, allowed);
      this.error(keyNode, child(path, key), `unknown key ${JSON.stringify(key)}${near ? ` (did you mean "${near}"?)` : ''}`,
        hint ?? `one of ${allowed.join(', ')}`);
      return undefined;
    }
    return key;
  }

  /**
   * The entries of a mapping by allowed key, without per-field objects (hot
   * paths): slot k holds the entry index of key allowed[k], or -1 when it is
   * absent. Other keys are reported as fields() reports them; a repeated key
   * keeps its last entry.
   */
  slots(map: MapNode, path: string, allowed: readonly string[], hint?: string): number[] {
    const at = new Array<number>(allowed.length).fill(-1);
    for (let i = 0; i < map.keys.length; i++) {
      const k = map.keys[i];
      const slot = k !== null && k.kind === 'scalar' ? allowed.indexOf(k.value as string) : -1;
      if (slot >= 0) at[slot] = i;
      else this.key(map, i, path, allowed, hint);
    }
    return at;
  }

  /** fields by key (the last one wins; duplicates are already errors) */
  fieldMap(map: MapNode, path: string, allowed?: readonly string[], hint?: string): Map<string, Field> {
    return new Map(this.fields(map, path, allowed, hint).map((f) => [f.key, f]));
  }

  /** a field's value node, or the key when the value is missing, for locations */
  at(f: Field): Node {
    return f.value ?? f.keyNode;
  }

  list(node: Node | null | undefined, path: string, expected = 'a list'): Node[] | undefined {
    if (node && node.kind === 'seq') return node.items.map((n) => n ?? node);
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }

  scalar(node: Node | null | undefined): ScalarNode | undefined {
    return node && node.kind === 'scalar' ? node : undefined;
  }

  str(node: Node | null | undefined, path: string, expected = 'a string'): string | undefined {
    if (node && node.kind === 'scalar' && typeof node.value === 'string') return node.value;
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }

  bool(node: Node | null | undefined, path: string): boolean | undefined {
    if (node && node.kind === 'scalar' && typeof node.value === 'boolean') return node.value;
    this.error(node, path, `expected true or false, got ${this.describe(node)}`, 'true or false');
    return undefined;
  }

  int(node: Node | null | undefined, path: string, min: number, max: number, expected?: string): number | undefined {
    const s = this.scalar(node);
    const exp = expected ?? `an integer from ${min} to ${max}`;
    if (s && typeof s.value === 'number' && Number.isInteger(s.value)) {
      if (s.value >= min && s.value <= max) return s.value;
      this.error(s, path, `${s.value} is out of range`, exp);
      return undefined;
    }
    this.error(node, path, `expected an integer, got ${this.describe(node)}`, exp);
    return undefined;
  }

  oneOf<T extends string>(node: Node | null | undefined, path: string, values: readonly T[]): T | undefined {
    const s = this.scalar(node);
    if (s && typeof s.value === 'string' && (values as readonly string[]).includes(s.value)) return s.value as T;
    const got = this.describe(node);
    const near = s && typeof s.value === 'string' ? suggest(s.value, values) : undefined;
    this.error(node, path, `invalid value: ${got}${near ? ` (did you mean "${near}"?)` : ''}`, values.join(' | '));
    return undefined;
  }

  /** A string or a list of strings, each with its node (for per-item locations). */
  strings(node: Node | null | undefined, path: string, expected = 'a string or a list of strings'): Array<{ text: string; node: Node; path: string }> | undefined {
    if (node && node.kind === 'scalar' && typeof node.value === 'string') return [{ text: node.value, node, path }];
    if (node && node.kind === 'seq') {
      const out: Array<{ text: string; node: Node; path: string }> = [];
      node.items.forEach((item, i) => {
        const p = child(path, i);
        const v = this.str(item, p, 'a string');
        if (v !== undefined) out.push({ text: v, node: item!, path: p });
      });
      return out;
    }
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }
}
