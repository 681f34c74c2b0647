/**
 * The JSON fast path (src/policy/json.ts) against the YAML parser it stands
 * in for: the same trees, positions, canonical forms, models and
 * diagnostics, and a fallback to YAML for everything that is not plain JSON.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateCfScale } from '../../bench/cfscale.js';
import { DiagnosticsError, type Diagnostic } from '../../src/errors.js';
import { AddressPool } from '../../src/policy/addresses.js';
import { loadPolicy, loadPolicyText, type Policy } from '../../src/policy/index.js';
import { jsonFastPath, scanJson } from '../../src/policy/json.js';
import { canonical, Diags, SourceFile, type Node } from '../../src/policy/source.js';
import { BAD, caseFiles } from './corpus-cases.js';

const POLICIES = join(import.meta.dirname, '..', 'policies');

afterEach(() => { jsonFastPath.enabled = true; });

/** run fn with the fast path on, then off (YAML parser) */
async function bothPaths<T>(fn: () => T | Promise<T>): Promise<[T, T]> {
  jsonFastPath.enabled = true;
  const fast = await fn();
  jsonFastPath.enabled = false;
  try {
    return [fast, await fn()];
  } finally {
    jsonFastPath.enabled = true;
  }
}

function parse(text: string, file = 'p.json'): { src: SourceFile; diags: Diags } {
  const diags = new Diags();
  return { src: new SourceFile(file, text, diags), diags };
}

/** every node of a tree with its kind, value and file:line:col */
function flatten(src: SourceFile): unknown[] {
  const out: unknown[] = [];
  const walk = (n: Node | null, path: string): void => {
    if (n === null) { out.push([path, null]); return; }
    const { line, col } = src.loc(n, path);
    if (n.kind === 'scalar') out.push([path, 'scalar', n.value, n.quoted, n.start, n.end, line, col]);
    else out.push([path, n.kind, n.start, line, col]);
    if (n.kind === 'map') n.keys.forEach((k, i) => { walk(k, `${path}.k${i}`); walk(n.values[i], `${path}.v${i}`); });
    if (n.kind === 'seq') n.items.forEach((it, i) => walk(it, `${path}[${i}]`));
  };
  walk(src.root, '');
  return out;
}

/** a policy model as comparable plain data (sets as their range arrays) */
function plainModel(p: Policy): unknown {
  return JSON.parse(JSON.stringify(p, (_k, v: unknown) => {
    if (v instanceof Map) return [...v];
    if (v instanceof Uint32Array) return Array.from(v);
    if (v instanceof BigUint64Array) return Array.from(v, String);
    return v;
  }));
}

async function outcome(load: () => Promise<Policy>): Promise<{ model?: unknown; diagnostics?: Diagnostic[] }> {
  try {
    return { model: plainModel(await load()) };
  } catch (e) {
    if (e instanceof DiagnosticsError) return { diagnostics: e.diagnostics };
    throw e;
  }
}

function jsonFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile() && d.name.endsWith('.json'))
    .map((d) => join(d.parentPath, d.name));
}

const small = generateCfScale(7, { asgs: 30, rulesPerAsg: 8, maxDestinations: 40, spaces: 12, apps: 30, appRules: 60, globalAsgs: 3 });

const TRICKY = [
  '{"a": "\\u00e9\\/\\b\\f\\n\\r\\t\\"\\\\ \\ud83d\\ude00 \\u0000 \\uD800x", "b": "plain", "": ""}',
  '{"n": [0, -0, 1, -1, 12345678901234567890123, 1.50, 1E400, -1e-7, 0.1e2, 2e+3, 5.0]}',
  '[true, false, null, [], {}, [[]], {"a": {}}]',
  '{\n"version": 1,\n\t"a": [\n1,\n  2\n ]\n}\n',
  '{\r\n  "a": [1,\r\n 2]\r\n}\r\n',
  '\n\n  {"a"  :  1 ,"b":\n2}  \n',
  '{"k\u00e9y": "v\u2028al\u00a0ue", "x": "caf\u00e9 #1"}',
  `{${Array.from({ length: 40 }, (_, i) => `"key${i}": ${i}`).join(', ')}}`,
  '"top-level string"',
];

describe('the JSON scanner builds the YAML parser\'s tree', () => {
  const texts: Array<[string, string]> = [
    ...TRICKY.map((t, i): [string, string] => [`tricky-${i}`, t]),
    ['generated compact', JSON.stringify(small)],
    ['generated pretty', JSON.stringify(small, null, 2)],
    ...jsonFiles(POLICIES).map((f): [string, string] => [f.slice(POLICIES.length + 1), readFileSync(f, 'utf8')]),
  ];
  for (const [name, text] of texts) {
    it(name, async () => {
      const [fast, yaml] = await bothPaths(() => parse(text));
      expect(fast.src.parser).toBe('json');
      expect(yaml.src.parser).toBe('yaml');
      expect(yaml.diags.items).toEqual([]);
      expect(fast.diags.items).toEqual([]);
      expect(flatten(fast.src)).toEqual(flatten(yaml.src));
      expect(fast.src.canonical(100)).toBe(yaml.src.canonical(100));
      // and both are the canonical form of the value JSON.parse reads
      expect(fast.src.canonical(100)).toBe(canonical(JSON.parse(text)));
    });
  }
});

describe('the policy hash reads the file\'s bytes when they are ASCII', () => {
  // the bytes the hash is fed
  const canonicalWith = (text: string, bytes?: Uint8Array) => {
    const chunks: Buffer[] = [];
    new SourceFile('p.json', text, new Diags(), bytes).writeCanonical(100, (c) => chunks.push(Buffer.from(c)));
    return Buffer.concat(chunks).toString('latin1');
  };
  const utf8Of = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
  it('the same canonical form with the bytes as read, without them, and from the value', () => {
    // generated CF-scale text is ASCII and spans several 64 KB chunks
    const big = JSON.stringify(generateCfScale(3, { asgs: 150, rulesPerAsg: 10, maxDestinations: 200, spaces: 12, apps: 30, appRules: 60, globalAsgs: 3 }));
    expect(big.length).toBeGreaterThan(3 * 65536);
    for (const text of [...TRICKY, big, JSON.stringify(small, null, 2)]) {
      const c = canonicalWith(text, Buffer.from(text, 'utf8'));
      expect(c).toBe(canonicalWith(text));
      expect(c).toBe(utf8Of(canonical(JSON.parse(text))));
    }
  });
  it('bytes that are not ASCII (invalid UTF-8 included) hash the decoded text', () => {
    const bytes = Buffer.concat([Buffer.from('{"a": "caf'), Buffer.from([0xe9]), Buffer.from('", "b": "\\u00e9t\\u00e9"}')]);
    const text = bytes.toString('utf8');
    // one replacement character per invalid byte: as many UTF-16 units as bytes
    expect(text.length).toBe(bytes.length);
    expect(canonicalWith(text, bytes)).toBe(utf8Of(canonical(JSON.parse(text))));
    expect(canonicalWith(text, bytes)).toContain(utf8Of('caf\ufffd'));
  });
});

describe('anything that is not plain JSON goes to the YAML parser', () => {
  const cases: Array<[string, string]> = [
    ['a comment', '{"a": 1} # note'],
    ['a trailing comma', '{"a": [1, 2,],}'],
    ['single quotes', "{'a': 1}"],
    ['an unquoted key', '{a: 1}'],
    ['a duplicate key', '{"a": 1, "b": 2, "a": 3}'],
    ['a duplicate key in a large mapping', `{${Array.from({ length: 30 }, (_, i) => `"k${i}": ${i}`).join(',')}, "k3": 0}`],
    ['a byte order mark', '\ufeff{"a": 1}'],
    ['a lone carriage return', '{"a":\r1}'],
    ['a raw tab in a string', '{"a": "x\ty"}'],
    ['a line break in a string', '{"a": "x\ny"}'],
    ['a YAML escape', '{"a": "\\x41"}'],
    ['a leading zero', '{"a": 01}'],
    ['a line break between key and colon', '{"a"\n: 1}'],
    ['two documents', '{"a": 1}\n---\n{"b": 2}'],
    ['an unterminated mapping', '{"a": [1, 2]'],
    ['an unterminated string', '{"a": "b'],
    ['very deep nesting', `${'['.repeat(600)}${']'.repeat(600)}`],
  ];
  for (const [name, text] of cases) {
    it(name, async () => {
      expect(scanJson(text)).toBeUndefined();
      const [fast, yaml] = await bothPaths(() => parse(text));
      expect(fast.src.parser).toBe('yaml');
      expect(fast.diags.items).toEqual(yaml.diags.items);
      expect(flatten(fast.src)).toEqual(flatten(yaml.src));
    });
  }

  it('a duplicate key is reported at its line and column', async () => {
    const text = '{\n  "version": 1,\n  "mode": "enforce",\n  "version": 1\n}\n';
    const [fast, yaml] = await bothPaths(() => outcome(() => loadPolicyText(text, 'dup.json')));
    expect(fast).toEqual(yaml);
    expect(fast.diagnostics).toEqual([expect.objectContaining({ message: 'duplicate key', loc: expect.objectContaining({ file: 'dup.json', line: 4, col: 3 }) })]);
  });

  it('a syntax error names file, line, column and the expected form', async () => {
    const text = '{\n  "version": 1,\n  "mode": "enforce"\n  "strict": true\n}\n';
    const [fast, yaml] = await bothPaths(() => outcome(() => loadPolicyText(text, 'broken.json')));
    expect(fast).toEqual(yaml);
    const errors = fast.diagnostics!.filter((d) => d.severity === 'error');
    expect(errors.length).toBeGreaterThan(0);
    for (const d of errors) {
      expect(d.loc.file).toBe('broken.json');
      expect(d.loc.line).toBeGreaterThan(0);
      expect(d.expected).toBe('valid YAML or JSON');
    }
  });

  it('YAML text is not scanned as JSON, and JSON text in a .yaml file is', () => {
    expect(parse('version: 1\n', 'p.yaml').src.parser).toBe('yaml');
    expect(parse('  {"version": 1}', 'p.yaml').src.parser).toBe('json');
    expect(parse('[1]', 'p.yml').src.parser).toBe('json');
  });
});

describe('policies load identically through both paths', () => {
  it('a generated CF-scale policy, compact and pretty-printed: same model, same hash', async () => {
    const [compact, compactYaml] = await bothPaths(() => outcome(() => loadPolicyText(JSON.stringify(small), '/p/small.json')));
    expect(compact.model).toBeDefined();
    expect(compact).toEqual(compactYaml);
    const [pretty, prettyYaml] = await bothPaths(() => outcome(() => loadPolicyText(JSON.stringify(small, null, 2), '/p/small.json')));
    expect(pretty).toEqual(prettyYaml);
    // reformatting changes locations, not the hash
    expect((pretty.model as { hash: string }).hash).toBe((compact.model as { hash: string }).hash);
  });

  it('errors in a pretty-printed JSON policy keep their line and column', async () => {
    const p = structuredClone(small) as unknown as { security_groups: Record<string, Array<Record<string, unknown>>> };
    const first = Object.keys(p.security_groups)[1];
    p.security_groups[first][2] = { protocol: 'tcp', destination: '10.0.0.0/8,10.1.2.3/8', ports: '80' };
    p.security_groups[first][3] = { protocol: 'tpc', destination: '10.0.0.1', ports: 80 };
    const text = JSON.stringify(p, null, 2);
    const [fast, yaml] = await bothPaths(() => outcome(() => loadPolicyText(text, '/p/bad.json')));
    expect(fast).toEqual(yaml);
    const lineOf = (needle: string) => text.slice(0, text.indexOf(needle)).split('\n').length;
    const colOf = (needle: string) => { const i = text.indexOf(needle); return i - text.lastIndexOf('\n', i - 1); };
    const at = (d: Diagnostic) => `${d.loc.line}:${d.loc.col} ${d.loc.path}`;
    expect(fast.diagnostics!.map(at)).toEqual([
      // the host-bits entry: its own column inside the destination string (quote + 11 characters)
      `${lineOf('"10.0.0.0/8,10.1.2.3/8"')}:${colOf('"10.0.0.0/8,10.1.2.3/8"') + 12} security_groups.${first}[2].destination`,
      `${lineOf('"tpc"')}:${colOf('"tpc"')} security_groups.${first}[3].protocol`,
    ]);
  });

  it('every case of the bad-policy corpus reports the same diagnostics', async () => {
    const files = caseFiles();
    expect(files.length).toBeGreaterThan(40);
    let viaJson = 0;
    for (const f of files) {
      const [fast, yaml] = await bothPaths(() => outcome(() => loadPolicy(join(BAD, f))));
      expect(fast, f).toEqual(yaml);
      if (f.endsWith('.json') || /\.json/.test(readFileSync(join(BAD, f), 'utf8'))) viaJson++;
    }
    expect(viaJson).toBeGreaterThan(5);
  });

  it('every good policy loads to the same model and hash', async () => {
    const dir = join(POLICIES, 'good');
    for (const f of readdirSync(dir).filter((n) => /\.(ya?ml|json)$/.test(n) && n !== 'policies.json')) {
      const [fast, yaml] = await bothPaths(() => outcome(() => loadPolicy(join(dir, f))));
      expect(fast.model, f).toBeDefined();
      expect(fast, f).toEqual(yaml);
    }
  });
});

describe('ASG destinations read in one core call (AddressPool.prefetchLiterals)', () => {
  /** run fn with the prefetch on, then off (one core call per rule, as before it) */
  async function bothPrefetch<T>(fn: () => Promise<T>): Promise<[T, T]> {
    const on = await fn();
    const saved = AddressPool.prototype.prefetchLiterals;
    AddressPool.prototype.prefetchLiterals = () => {};
    try {
      return [on, await fn()];
    } finally {
      AddressPool.prototype.prefetchLiterals = saved;
    }
  }

  it('the same model and hash, for a generated policy and every good policy', async () => {
    const [a, b] = await bothPrefetch(() => outcome(() => loadPolicyText(JSON.stringify(small), '/p/small.json')));
    expect(a.model).toBeDefined();
    expect(a).toEqual(b);
    const dir = join(POLICIES, 'good');
    for (const f of readdirSync(dir).filter((n) => /\.(ya?ml|json)$/.test(n) && n !== 'policies.json')) {
      const [x, y] = await bothPrefetch(() => outcome(() => loadPolicy(join(dir, f))));
      expect(x, f).toEqual(y);
    }
  });

  it('the same diagnostics for every case of the bad-policy corpus', async () => {
    for (const f of caseFiles()) {
      const [x, y] = await bothPrefetch(() => outcome(() => loadPolicy(join(BAD, f))));
      expect(x, f).toEqual(y);
    }
  });
});
