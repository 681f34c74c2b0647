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
  const sets = [...plan.families[4].sets, ...plan.families[6].sets];
  const r = new IpsetRenderer();
  r.add(packSets(sets));
  return Buffer.concat(r.payload(ipsetHeader(plan), setRefs(plan, sets.map((s) => s.name))));
}

/** the comment lines the payload starts with */
export function ipsetHeader(plan: Plan): string[] {
  return [
    commentLine(`cellwall ${plan.cellwallVersion} segment ${plan.segment} policy ${plan.policyHash}`),
    commentLine('load with: ipset restore (before iptables-restore / ip6tables-restore)'),
  ];
}

/**
 * Sets packed into a few arrays: a worker thread receives them (as the
 * compiler creates them, in batches) at the cost of a copy of the
 * addresses, not of 10^5 objects.
 */
export interface IpsetBatch {
  names: string[];
  /** per set, META fields: type, family, hashsize, maxelem, first part, parts, own lookups (entries or members), entries */
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

export function packSets(sets: PlanSet[]): IpsetBatch {
  let nParts = 0, n4 = 0, n6 = 0;
  for (const s of sets) {
    const k = s.kind;
    if (k.type === 'net') {
      nParts++;
      if (s.family === 4) n4 += k.addrs.v4.length; else n6 += k.addrs.v6.length;
    } else if (k.type === 'net,port') {
      for (const e of k.byPort) {
        nParts++;
        if (s.family === 4) n4 += e.addrs.v4.length; else n6 += e.addrs.v6.length;
      }
    } else if (k.type === 'list') nParts++;
  }
  const b: IpsetBatch = {
    names: new Array<string>(sets.length),
    meta: new Float64Array(sets.length * META),
    parts: new Float64Array(nParts * PART),
    v4: new Uint32Array(n4),
    v6: new BigUint64Array(n6),
    lists: [],
  };
  let p = 0, o4 = 0, o6 = 0;
  const part = (proto: number, port: number, f: Family, a: AddrSet) => {
    const at = p++ * PART;
    b.parts[at] = proto;
    b.parts[at + 1] = port;
    if (f === 4) {
      b.v4.set(a.v4, o4);
      b.parts[at + 2] = o4;
      b.parts[at + 3] = a.v4.length;
      o4 += a.v4.length;
    } else {
      b.v6.set(a.v6, o6);
      b.parts[at + 2] = o6;
      b.parts[at + 3] = a.v6.length;
      o6 += a.v6.length;
    }
  };
  for (let i = 0; i < sets.length; i++) {
    const s = sets[i], k = s.kind, m = i * META, first = p;
    b.names[i] = s.name;
    if (k.type === 'net') part(0, 0, s.family, k.addrs);
    else if (k.type === 'net,port') for (const e of k.byPort) part(e.proto === 'tcp' ? 1 : 2, e.port, s.family, e.addrs);
    else if (k.type === 'list') {
      b.parts[p++ * PART + 2] = b.lists.length;
      b.lists.push(k.members);
    }
    b.meta[m] = TYPES.indexOf(k.type);
    b.meta[m + 1] = s.family;
    b.meta[m + 2] = s.hashsize;
    b.meta[m + 3] = s.maxelem;
    b.meta[m + 4] = first;
    b.meta[m + 5] = p - first;
    b.meta[m + 6] = k.type === 'list' ? k.members.length : s.entries;
    b.meta[m + 7] = s.entries;
  }
  return b;
}

/**
 * How often each set (by index into `names`) is named by a rule match or as
 * a list member.
 */
export function setRefs(plan: Plan, names: string[]): Float64Array {
  const index = new Map<string, number>();
  names.forEach((n, i) => index.set(n, i));
  const refs = new Float64Array(names.length);
  const ref = (name: string | undefined) => {
    const i = name === undefined ? undefined : index.get(name);
    if (i !== undefined) refs[i]++;
  };
  for (const f of [4, 6] as const) {
    for (const c of plan.families[f].chains) for (const r of c.rules) { ref(r.match.src?.set); ref(r.match.dst?.set); }
    for (const s of plan.families[f].sets) if (s.kind.type === 'list') s.kind.members.forEach(ref);
  }
  return refs;
}

/**
 * Renders sets in the order they come (the compiler's, in batches) and puts
 * the payload together in load order at the end. The bytes live in a few
 * large blocks: text lines are encoded into them, the core's add lines copied
 * straight from WASM memory (no Buffer per set: 10^5 small external
 * allocations cost more in garbage collection than the rendering itself).
 */
export class IpsetRenderer {
  private readonly blocks: Buffer[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private len = 0;
  /** per set: block, start, end of its lines */
  private readonly at: number[] = [];
  private readonly names: string[] = [];
  /** per set: 1 for a list:set, lookups without references */
  private readonly list: number[] = [];
  private readonly own: number[] = [];

  /** blockBytes: the size of a block (tests make it tiny) */
  constructor(private readonly blockBytes = BLOCK) {}

  get count(): number { return this.names.length; }

  add(b: IpsetBatch): void {
    for (let i = 0; i < b.names.length; i++) {
      // a set's lines stay in one block (moved to a new one when they outgrow it)
      this.chunkStart = this.len;
      const m = i * META;
      this.reserve(200 + b.meta[m + 7] * (b.meta[m + 1] === 4 ? 64 : 96));
      this.renderSet(b, i);
      this.at.push(this.blocks.length, this.chunkStart, this.len);
      this.names.push(b.names[i]);
      this.list.push(b.meta[m] === LIST ? 1 : 0);
      this.own.push(b.meta[m + 6]);
    }
  }

  /**
   * The payload: header lines, then every set in load order, as slices of
   * the blocks (nothing copied). `refs[i]`: references to set i (setRefs).
   *
   * Load order: the kernel and the ipset tool find a set by name with a
   * linear scan in creation order: once per `add` line, once per list
   * member, and once per `-m set` match when iptables-restore loads the
   * rules. So the sets looked up most (entries + rule references + list
   * memberships) are created first; list:set sets come last (after their
   * members), also by lookups. At a tenth of CF scale, largest-first cut
   * ipset restore's user CPU from 1.47 s to 0.55 s.
   */
  payload(header: string[], refs: ArrayLike<number>): Buffer[] {
    if (refs.length !== this.names.length) throw new Error(`ipset payload: ${refs.length} reference counts for ${this.names.length} sets`);
    const { names, list, own } = this;
    const lookups = (i: number) => own[i] + refs[i];
    const order = names.map((_, i) => i).sort((a, b) => list[a] - list[b] || lookups(b) - lookups(a) || (names[a] < names[b] ? -1 : names[a] > names[b] ? 1 : 0));
    const blocks = [...this.blocks, this.buf];
    const out: Buffer[] = [Buffer.from(header.map((h) => `${h}\n`).join(''), 'utf8')];
    for (const i of order) out.push(blocks[this.at[i * 3]].subarray(this.at[i * 3 + 1], this.at[i * 3 + 2]));
    return out;
  }

  private chunkStart = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    // a new block; the lines of the set being rendered move along
    const next = Buffer.allocUnsafe(Math.max(this.blockBytes, 2 * (this.len - this.chunkStart + n)));
    this.buf.copy(next, 0, this.chunkStart, this.len);
    if (this.chunkStart > 0) this.blocks.push(this.buf);
    this.buf = next;
    this.len -= this.chunkStart;
    this.chunkStart = 0;
  }

  private push(line: string): void {
    // UTF-8 takes at most 3 bytes per UTF-16 unit
    this.reserve(line.length * 3 + 1);
    this.len += this.buf.write(line, this.len, 'utf8');
    this.buf[this.len++] = 10;
  }

  /** lines already rendered, each ending in a newline */
  private pushBytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  private renderSet(b: IpsetBatch, i: number): void {
    const name = b.names[i];
    const m = i * META;
    const type = TYPES[b.meta[m]];
    const family = b.meta[m + 1] as Family;
    const hashsize = b.meta[m + 2], maxelem = b.meta[m + 3];
    const first = b.meta[m + 4], nParts = b.meta[m + 5];
    switch (type) {
      case 'dynamic':
        this.push(`create ${name} ${DYNAMIC_SET.type} family ${familyWord(family)} hashsize ${DYNAMIC_SET.hashsize} maxelem ${DYNAMIC_SET.maxelem} -exist`);
        return;
      case 'net':
      case 'net,port':
        this.push(`create ${name} hash:${type} family ${familyWord(family)} hashsize ${hashsize} maxelem ${maxelem} -exist`);
        for (let p = first; p < first + nParts; p++) {
          const at = p * PART;
          const proto = b.parts[at], off = b.parts[at + 2], len = b.parts[at + 3];
          const addrs = family === 4 ? new AddrSet(b.v4.subarray(off, off + len), NO6) : new AddrSet(NO4, b.v6.subarray(off, off + len));
          // `add NAME <cidr><suffix>` for every CIDR, rendered by the core in one call (millions of lines at CF scale)
          this.pushBytes(ipsetForm(addrs, family).cidrLinesView(family, `add ${name} `,
            proto === 0 ? ' -exist' : `,${proto === 1 ? 'tcp' : 'udp'}:${b.parts[at + 1]} -exist`));
        }
        return;
      case 'list':
        this.push(`create ${name} list:set size ${maxelem} -exist`);
        for (const mem of b.lists[b.parts[first * PART + 2]]) this.push(`add ${name} ${mem} -exist`);
        return;
    }
  }
}

/** bytes per block of the payload (a set larger than this gets a block of its own) */
const BLOCK = 32 << 20;

function familyWord(f: Family): string {
  return f === 4 ? 'inet' : 'inet6';
}

const NO4 = new Uint32Array(0);
const NO6 = new BigUint64Array(0);
