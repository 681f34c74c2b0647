/**
 * Reading YAML/JSON with positions: every value read through a Reader is
 * type-checked, and every problem becomes a Diagnostic carrying
 * file:line:col, the field path and the expected form. Readers never throw
 * for bad input; they record the problem and return undefined so that one
 * pass lists every error.
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import type { Document, Node, Scalar, YAMLMap } from 'yaml';
import type { Diagnostic, SourceLoc } from '../errors.js';

export class Diags {
  readonly items: Diagnostic[] = [];
  error(loc: SourceLoc, message: string, expected?: string): void {
    this.items.push({ severity: 'error', loc, message, ...(expected ? { expected } : {}) });
  }
  warn(loc: SourceLoc, message: string, expected?: string): void {
    this.items.push({ severity: 'warning', loc, message, ...(expected ? { expected } : {}) });
  }
  get errorCount(): number {
    return this.items.filter((d) => d.severity === 'error').length;
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

/** One parsed YAML/JSON file. */
export class SourceFile {
  readonly doc: Document.Parsed;
  private readonly lc = new LineCounter();
  /** false when the file could not be parsed into a usable tree (syntax errors) */
  readonly ok: boolean;

  constructor(readonly file: string, readonly text: string, diags: Diags) {
    this.doc = parseDocument(text, { lineCounter: this.lc, uniqueKeys: true, prettyErrors: true, merge: false });
    let fatal = false;
    for (const e of this.doc.errors) {
      const pos = e.linePos?.[0] ?? this.lc.linePos(e.pos[0]);
      const first = e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
      const loc: SourceLoc = { file, line: pos.line, col: pos.col, path: '' };
      if (e.code === 'DUPLICATE_KEY') diags.error(loc, 'duplicate key', 'each key at most once per mapping');
      else { fatal = true; diags.error(loc, `syntax error: ${first}`, 'valid YAML or JSON'); }
    }
    for (const w of this.doc.warnings) {
      const pos = w.linePos?.[0] ?? this.lc.linePos(w.pos[0]);
      diags.warn({ file, line: pos.line, col: pos.col, path: '' }, w.message.split('\n')[0]);
    }
    this.ok = !fatal;
  }

  /** Location of a node (or of a character inside a single-line scalar when offset is given). */
  loc(node: Node | null | undefined, path: string, offset = 0): SourceLoc {
    const start = node?.range?.[0] ?? 0;
    let at = start;
    if (offset > 0 && node && isScalar(node) && typeof node.value === 'string') {
      const quoted = node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE';
      const base = start + (quoted ? 1 : 0);
      // only when the source spells the value verbatim (no escapes, no folding)
      if (this.text.slice(base, base + node.value.length) === node.value) at = base + offset;
    }
    const p = this.lc.linePos(at);
    return { file: this.file, line: p.line, col: p.col, path };
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

  /** follow aliases to their anchored node */
  deref(node: unknown): Node | null {
    if (node == null) return null;
    if (isAlias(node)) return (node.resolve(this.src.doc) as Node | undefined) ?? null;
    return node as Node;
  }

  /** true when the node is absent or an explicit null (`key:` / `key: null`) */
  isNull(node: unknown): boolean {
    const n = this.deref(node);
    return n == null || (isScalar(n) && n.value == null);
  }

  describe(node: Node | null): string {
    if (node == null) return 'nothing';
    if (isMap(node)) return 'a mapping';
    if (isSeq(node)) return 'a list';
    if (isScalar(node)) {
      const v = node.value;
      if (v == null) return 'null';
      if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
      return `${typeof v} ${String(v)}`;
    }
    return 'an unexpected value';
  }

  map(raw: unknown, path: string, expected = 'a mapping'): YAMLMap | undefined {
    const node = this.deref(raw);
    if (node && isMap(node)) return node;
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }

  /**
   * The fields of a mapping, in order. With `allowed`, any other key is an
   * error (typos must not silently weaken a firewall).
   */
  fields(map: YAMLMap, path: string, allowed?: readonly string[], hint?: string): Field[] {
    const out: Field[] = [];
    for (const pair of map.items) {
      const keyNode = this.deref(pair.key);
      if (!keyNode || !isScalar(keyNode) || typeof keyNode.value !== 'string') {
        this.error(keyNode ?? map, path, `expected a string key, got ${this.describe(keyNode)}`, 'a string key (quote it)');
        continue;
      }
      const key = keyNode.value;
      const fpath = child(path, key);
      if (allowed && !allowed.includes(key)) {
        const near = suggest(key, allowed);
        this.error(keyNode, fpath, `unknown key ${JSON.stringify(key)}${near ? ` (did you mean "${near}"?)` : ''}`,
          hint ?? `one of ${allowed.join(', ')}`);
        continue;
      }
      out.push({ key, keyNode, value: (pair.value as Node | null) ?? null, path: fpath });
    }
    return out;
  }

  /** fields by key (the last one wins; duplicates are already errors) */
  fieldMap(map: YAMLMap, path: string, allowed?: readonly string[], hint?: string): Map<string, Field> {
    return new Map(this.fields(map, path, allowed, hint).map((f) => [f.key, f]));
  }

  /** a field's value node, or the key when the value is missing, for locations */
  at(f: Field): Node {
    return this.deref(f.value) ?? f.keyNode;
  }

  list(raw: unknown, path: string, expected = 'a list'): Node[] | undefined {
    const node = this.deref(raw);
    if (node && isSeq(node)) return node.items.map((n) => this.deref(n) ?? (node as Node));
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }

  scalar(raw: unknown): Scalar | undefined {
    const node = this.deref(raw);
    return node && isScalar(node) ? node : undefined;
  }

  str(raw: unknown, path: string, expected = 'a string'): string | undefined {
    const s = this.scalar(raw);
    if (s && typeof s.value === 'string') return s.value;
    this.error(this.deref(raw), path, `expected ${expected}, got ${this.describe(this.deref(raw))}`, expected);
    return undefined;
  }

  bool(raw: unknown, path: string): boolean | undefined {
    const s = this.scalar(raw);
    if (s && typeof s.value === 'boolean') return s.value;
    this.error(this.deref(raw), path, `expected true or false, got ${this.describe(this.deref(raw))}`, 'true or false');
    return undefined;
  }

  int(raw: unknown, path: string, min: number, max: number, expected?: string): number | undefined {
    const s = this.scalar(raw);
    const exp = expected ?? `an integer from ${min} to ${max}`;
    if (s && typeof s.value === 'number' && Number.isInteger(s.value)) {
      if (s.value >= min && s.value <= max) return s.value;
      this.error(s, path, `${s.value} is out of range`, exp);
      return undefined;
    }
    this.error(this.deref(raw), path, `expected an integer, got ${this.describe(this.deref(raw))}`, exp);
    return undefined;
  }

  oneOf<T extends string>(raw: unknown, path: string, values: readonly T[]): T | undefined {
    const s = this.scalar(raw);
    const exp = values.join(' | ');
    if (s && typeof s.value === 'string' && (values as readonly string[]).includes(s.value)) return s.value as T;
    const got = this.describe(this.deref(raw));
    const near = s && typeof s.value === 'string' ? suggest(s.value, values) : undefined;
    this.error(this.deref(raw), path, `invalid value: ${got}${near ? ` (did you mean "${near}"?)` : ''}`, exp);
    return undefined;
  }

  /** A string or a list of strings, each with its node (for per-item locations). */
  strings(raw: unknown, path: string, expected = 'a string or a list of strings'): Array<{ text: string; node: Node; path: string }> | undefined {
    const node = this.deref(raw);
    if (node && isScalar(node) && typeof node.value === 'string') return [{ text: node.value, node, path }];
    if (node && isSeq(node)) {
      const out: Array<{ text: string; node: Node; path: string }> = [];
      node.items.forEach((item, i) => {
        const p = child(path, i);
        const v = this.str(item, p, 'a string');
        if (v !== undefined) out.push({ text: v, node: this.deref(item)!, path: p });
      });
      return out;
    }
    this.error(node, path, `expected ${expected}, got ${this.describe(node)}`, expected);
    return undefined;
  }
}
