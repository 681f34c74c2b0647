/**
 * Plan -> `ipset restore` payload for both families.
 *
 * Every line carries -exist: loading twice is harmless. Content-addressed sets
 * (cw4n-/cw4p-/cw4l-...) have a name derived from their content, so an
 * existing set of that name already holds these entries; sets are never
 * flushed (a flush would open a window in which live rules see an empty set).
 * Dynamic member sets are created empty when missing and otherwise left alone.
 * Removing sets no longer referenced is the applier's job.
 *
 * hash:net cannot hold a /0: 0.0.0.0/0 and ::/0 are written as two /1.
 */
import { AddrSet, type Family } from '../core/index.js';
import { DYNAMIC_SET, type Plan, type PlanSet } from '../compile/plan.js';
import { commentLine } from './quote.js';

const M64 = 0xffffffffffffffffn;
/** hash:net cannot hold a /0: the whole family as two adjacent halves, whose cover is the two /1 */
const HALVES = {
  4: new AddrSet(Uint32Array.of(0, 0x7fffffff, 0x80000000, 0xffffffff), new BigUint64Array(0)),
  6: new AddrSet(new Uint32Array(0), BigUint64Array.of(0n, 0n, M64 >> 1n, M64, 1n << 63n, 0n, M64, M64)),
};

function ipsetForm(addrs: AddrSet, f: Family): AddrSet {
  const a = f === 4 ? addrs.v4 : addrs.v6;
  const all = f === 4 ? a.length === 2 && a[0] === 0 && a[1] === 0xffffffff
    : a.length === 4 && a[0] === 0n && a[1] === 0n && a[2] === M64 && a[3] === M64;
  return all ? HALVES[f] : addrs;
}

export function renderIpset(plan: Plan): string {
  return renderIpsetBytes(plan).toString('utf8');
}

/**
 * The payload as bytes: the add lines come out of the core as bytes and are
 * never turned into JS strings (115 MB at CF scale).
 */
export function renderIpsetBytes(plan: Plan): Buffer {
  return renderIpsetInput(ipsetInput(plan));
}

/**
 * What the ipset payload is made of, packed into a few arrays: a worker
 * thread receives it at the cost of a copy of the addresses (compile renders
 * this payload in parallel with the iptables ones and the manifest), not of
 * 10^5 objects.
 */
export interface IpsetInput {
  header: string[];
  names: string[];
  /** per set, META fields: type, family, hashsize, maxelem, first part, parts, lookup cost (lookupCost), entries */
  meta: Float64Array;
  /** per part, PART fields: protocol (0 none, 1 tcp, 2 udp), port, first range, ranges; for a list: index into lists */
  parts: Float64Array;
  v4: Uint32Array;
  v6: BigUint64Array;
  lists: string[][];
}

const META = 8, PART = 4;
const TYPES: Array<PlanSet['kind']['type']> = ['dynamic', 'net', 'net,port', 'list'];
const LIST = TYPES.indexOf('list');

export function ipsetInput(plan: Plan): IpsetInput {
  const refs = setRefs(plan);
  const sets = [...plan.families[4].sets, ...plan.families[6].sets];
  let nParts = 0, n4 = 0, n6 = 0;
  const count = (f: Family, a: AddrSet) => { nParts++; if (f === 4) n4 += a.v4.length; else n6 += a.v6.length; };
  for (const s of sets) {
    const k = s.kind;
    if (k.type === 'net') count(s.family, k.addrs);
    else if (k.type === 'net,port') for (const e of k.byPort) count(s.family, e.addrs);
    else if (k.type === 'list') nParts++;
  }
  const input: IpsetInput = {
    header: [
      commentLine(`cellwall ${plan.cellwallVersion} segment ${plan.segment} policy ${plan.policyHash}`),
      commentLine('load with: ipset restore (before iptables-restore / ip6tables-restore)'),
    ],
    names: sets.map((s) => s.name),
    meta: new Float64Array(sets.length * META),
    parts: new Float64Array(nParts * PART),
    v4: new Uint32Array(n4),
    v6: new BigUint64Array(n6),
    lists: [],
  };
  let p = 0, o4 = 0, o6 = 0;
  const part = (proto: number, port: number, f: Family, a: AddrSet) => {
    const at = p++ * PART;
    input.parts[at] = proto;
    input.parts[at + 1] = port;
    if (f === 4) {
      input.v4.set(a.v4, o4);
      input.parts[at + 2] = o4;
      input.parts[at + 3] = a.v4.length;
      o4 += a.v4.length;
    } else {
      input.v6.set(a.v6, o6);
      input.parts[at + 2] = o6;
      input.parts[at + 3] = a.v6.length;
      o6 += a.v6.length;
    }
  };
  sets.forEach((s, i) => {
    const k = s.kind;
    const m = i * META;
    const first = p;
    if (k.type === 'net') part(0, 0, s.family, k.addrs);
    else if (k.type === 'net,port') for (const e of k.byPort) part(e.proto === 'tcp' ? 1 : 2, e.port, s.family, e.addrs);
    else if (k.type === 'list') {
      input.parts[p++ * PART + 2] = input.lists.length;
      input.lists.push(k.members);
    }
    input.meta.set([TYPES.indexOf(k.type), s.family, s.hashsize, s.maxelem, first, p - first,
      lookupCost(k.type === 'list', k.type === 'list' ? k.members.length : s.entries, refs.lists.get(s.name) ?? 0, refs.rules.get(s.name) ?? 0),
      s.entries], m);
  });
  return input;
}

/** Render an IpsetInput (in this thread or a worker's). */
export function renderIpsetInput(input: IpsetInput): Buffer {
  const out = new Lines(sizeHint(input));
  for (const h of input.header) out.push(h);
  for (const i of loadOrder(input)) renderSet(input, i, out);
  return out.bytes();
}

/** bytes the payload will take, about: entries x a typical line (only sizes the first buffer) */
function sizeHint(input: IpsetInput): number {
  let n = 0;
  for (let i = 0; i < input.names.length; i++) n += input.meta[i * META + 7] * (input.meta[i * META + 1] === 4 ? 64 : 80);
  return n + input.names.length * 100;
}

/** how often each set is named by a rule match, and as a list member */
function setRefs(plan: Plan): { rules: Map<string, number>; lists: Map<string, number> } {
  const rules = new Map<string, number>(), lists = new Map<string, number>();
  const ref = (refs: Map<string, number>, name: string | undefined) => { if (name) refs.set(name, (refs.get(name) ?? 0) + 1); };
  for (const f of [4, 6] as const) {
    for (const c of plan.families[f].chains) for (const r of c.rules) { ref(rules, r.match.src?.set); ref(rules, r.match.dst?.set); }
    for (const s of plan.families[f].sets) if (s.kind.type === 'list') for (const m of s.kind.members) ref(lists, m);
  }
  return { rules, lists };
}

/**
 * What the name lookups of a set cost per position it is created at, in
 * tenths of a nanosecond. The ipset tool and the kernel find a set by name
 * with a linear scan in creation order; perf at CF scale (50k sets) put
 * ~85% of `ipset restore` (98 s) and ~91% of `iptables-restore` (31 s) in
 * these scans:
 *  - the ipset tool looks the set up in its cache once per add line (3.5 ns
 *    per set passed);
 *  - the kernel once per netlink message (~128 add lines, a list's adds in
 *    one): 16 ns;
 *  - the kernel once per list member added, by the member's name (26 ns:
 *    nla_strcmp takes the length of every name passed);
 *  - iptables-restore once per `-m set` match (11.6 ns).
 */
export function lookupCost(list: boolean, lines: number, memberships: number, ruleRefs: number): number {
  const messages = lines === 0 ? 0 : list ? 1 : Math.ceil(lines / 128);
  return 35 * lines + 160 * messages + 260 * memberships + 116 * ruleRefs;
}

/**
 * The order sets are created in (indices into input.names): the total cost
 * of the lookups (lookupCost x position) is least when the costliest sets
 * come first (Smith's rule), except that a list:set must come after its
 * members. So sets go by cost, and a list as soon as its last member is
 * in, when it costs more than the next set. At CF scale this cut the modelled
 * lookup time of ipset restore + iptables-restore + ip6tables-restore
 * from 122 s to 103 s, and the measured load from 165.2 s to 133.6 s
 * (against largest-first with every list last).
 */
function loadOrder(input: IpsetInput): number[] {
  const { meta, names } = input;
  const n = names.length;
  const before = (a: number, b: number) => meta[b * META + 6] - meta[a * META + 6] || (names[a] < names[b] ? -1 : names[a] > names[b] ? 1 : 0);
  const index = new Map<string, number>();
  names.forEach((name, i) => index.set(name, i));
  // per list: members not created yet; per set: the lists it is a member of
  const waiting = new Int32Array(n);
  const inLists = new Map<number, number[]>();
  const free: number[] = [];
  for (let i = 0; i < n; i++) {
    if (meta[i * META] === LIST) {
      for (const m of input.lists[input.parts[meta[i * META + 4] * PART + 2]]) {
        const j = index.get(m);
        if (j === undefined) continue;
        waiting[i]++;
        let l = inLists.get(j);
        if (!l) inLists.set(j, (l = []));
        l.push(i);
      }
    }
    if (waiting[i] === 0) free.push(i);
  }
  free.sort(before);
  const ready = new Heap(before);
  const out: number[] = [];
  const place = (i: number) => {
    out.push(i);
    for (const l of inLists.get(i) ?? []) if (--waiting[l] === 0) ready.push(l);
  };
  let k = 0;
  while (k < free.length || ready.size > 0) {
    if (ready.size > 0 && (k === free.length || before(ready.peek(), free[k]) < 0)) place(ready.pop());
    else place(free[k++]);
  }
  if (out.length !== n) throw new Error(`ipset: ${n - out.length} list:set sets wait for members that never come`);
  return out;
}

/** a binary heap, least first by `cmp` */
class Heap {
  private readonly a: number[] = [];
  constructor(private readonly cmp: (x: number, y: number) => number) {}
  get size(): number { return this.a.length; }
  peek(): number { return this.a[0]; }
  push(x: number): void {
    const a = this.a;
    let i = a.push(x) - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.cmp(a[i], a[p]) >= 0) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): number {
    const a = this.a;
    const top = a[0], last = a.pop()!;
    if (a.length) {
      a[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && this.cmp(a[l], a[m]) < 0) m = l;
        if (r < a.length && this.cmp(a[r], a[m]) < 0) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

/**
 * The payload's bytes, in one growing buffer: text lines are encoded into
 * it, the core's add lines copied straight from WASM memory (no Buffer per
 * set: 10^5 small external allocations cost more in garbage collection than
 * the rendering itself).
 */
class Lines {
  private buf: Buffer;
  private len = 0;

  constructor(sizeHint: number) {
    this.buf = Buffer.allocUnsafe(Math.max(4096, sizeHint));
  }

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  push(line: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit
    this.reserve(line.length * 3 + 1);
    this.len += this.buf.write(line, this.len, 'utf8');
    this.buf[this.len++] = 10;
  }

  /** lines already rendered, each ending in a newline */
  pushBytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

function familyWord(f: Family): string {
  return f === 4 ? 'inet' : 'inet6';
}

function renderSet(input: IpsetInput, i: number, out: Lines): void {
  const name = input.names[i];
  const m = i * META;
  const type = TYPES[input.meta[m]];
  const family = input.meta[m + 1] as Family;
  const hashsize = input.meta[m + 2], maxelem = input.meta[m + 3];
  const first = input.meta[m + 4], nParts = input.meta[m + 5];
  switch (type) {
    case 'dynamic':
      out.push(`create ${name} ${DYNAMIC_SET.type} family ${familyWord(family)} hashsize ${DYNAMIC_SET.hashsize} maxelem ${DYNAMIC_SET.maxelem} -exist`);
      return;
    case 'net':
    case 'net,port':
      out.push(`create ${name} hash:${type} family ${familyWord(family)} hashsize ${hashsize} maxelem ${maxelem} -exist`);
      for (let p = first; p < first + nParts; p++) {
        const at = p * PART;
        const proto = input.parts[at], off = input.parts[at + 2], len = input.parts[at + 3];
        const addrs = family === 4 ? new AddrSet(input.v4.subarray(off, off + len), NO6) : new AddrSet(NO4, input.v6.subarray(off, off + len));
        addLines(out, addrs, family, `add ${name} `, proto === 0 ? ' -exist' : `,${proto === 1 ? 'tcp' : 'udp'}:${input.parts[at + 1]} -exist`);
      }
      return;
    case 'list':
      out.push(`create ${name} list:set size ${maxelem} -exist`);
      for (const mem of input.lists[input.parts[first * PART + 2]]) out.push(`add ${name} ${mem} -exist`);
      return;
  }
}

const NO4 = new Uint32Array(0);
const NO6 = new BigUint64Array(0);

/** `add NAME <cidr><suffix>` for every CIDR, rendered by the core in one call (millions of lines at CF scale) */
function addLines(out: Lines, addrs: AddrSet, f: Family, prefix: string, suffix: string): void {
  out.pushBytes(ipsetForm(addrs, f).cidrLinesView(f, prefix, suffix));
}
