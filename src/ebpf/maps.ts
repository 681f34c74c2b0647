/**
 * Plan -> contents of the classifier's maps (program.ts).
 *
 * The verdict depends on the source, the destination, the protocol and the
 * port (or icmp type/code). The address spaces are partitioned into classes:
 * two addresses are in the same source (destination) class when every set the
 * Plan matches sources (destinations) against holds both or neither, so the
 * Plan cannot tell them apart. Classes are disjoint, so the LPM tries hold
 * disjoint prefixes and the longest match is the only match. The port axis is
 * cut at every bound a rule or a net,port set uses. The verdict of each
 * (source class, destination class, protocol, port interval) is then taken
 * from evaluatePlan on a representative packet: the eBPF verdicts are the
 * reference evaluator's by construction, for a new connection (the program is
 * stateless, see docs/ebpf.md).
 *
 * Dynamic member sets: members known at build time (opts.members) get a
 * source class of their own (a /32 or /128, longer than any class prefix
 * holding it); any other address is evaluated as a member of no dynamic group.
 */
import { AddrSet, type Family } from '../core/index.js';
import { evaluatePlan, type Membership, type PacketProto } from '../compile/evaluate.js';
import type { Phase } from '../policy/model.js';
import type { FamilyPlan, Plan, PlanMatch, PlanSet } from '../compile/plan.js';
import { ESTABLISHED_KEY, KEY_SIZE, MAP_NAMES, VERDICT, VERDICT_PORT_BIT } from './program.js';

export const PROTO_NUM = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58 } as const;
/** a protocol no rule names (stands for every other protocol in evaluation) */
const OTHER = 'other' as PacketProto;
const MAX_CLASS = 0xffff;

export interface MapEntry { key: Buffer; value: Buffer }
export interface MapContents {
  /** map name -> entries */
  maps: Record<string, MapEntry[]>;
  stats: { srcClasses: number; dstClasses: number; verdicts: number; evaluations: number };
}

/** inclusive [start, end] over `bits`-bit numbers -> minimal prefixes [base, length] */
export function rangePrefixes(start: bigint, end: bigint, bits: number): Array<[bigint, number]> {
  if (bits <= 48) return numPrefixes(Number(start), Number(end), bits).map(([b, l]) => [BigInt(b), l]);
  const out: Array<[bigint, number]> = [];
  let s = start;
  while (s <= end) {
    // grow the block while aligned and inside the range
    let len = bits, size = 1n;
    const room = end - s + 1n;
    while (len > 0) {
      const next = size << 1n;
      if ((s & (next - 1n)) !== 0n || next > room) break;
      size = next;
      len--;
    }
    out.push([s, len]);
    s += size;
  }
  return out;
}

/** rangePrefixes on plain numbers (exact up to 2^53: IPv4 addresses, ports) */
function numPrefixes(start: number, end: number, bits: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let s = start;
  while (s <= end) {
    let len = bits, size = 1;
    while (len > 0 && s % (size * 2) === 0 && s + size * 2 - 1 <= end) {
      size *= 2;
      len--;
    }
    out.push([s, len]);
    s += size;
  }
  return out;
}

/** LPM keys (u32 prefix length, address bytes) of the minimal prefixes covering [s, e] */
function addrKeys(f: Family, s: Pos, e: Pos): Buffer[] {
  if (f === 4) {
    return numPrefixes(Number(s), Number(e), 32).map(([base, len]) => {
      const k = Buffer.allocUnsafe(KEY_SIZE.addr4);
      k.writeUInt32LE(len, 0);
      k.writeUInt32BE(base, 4);
      return k;
    });
  }
  return rangePrefixes(BigInt(s), BigInt(e), 128).map(([base, len]) => {
    const k = Buffer.allocUnsafe(KEY_SIZE.addr6);
    k.writeUInt32LE(len, 0);
    k.writeBigUInt64BE(base >> 64n, 4);
    k.writeBigUInt64BE(base & 0xffffffffffffffffn, 12);
    return k;
  });
}

function ranges(a: AddrSet, f: Family): Array<[bigint, bigint]> {
  const out: Array<[bigint, bigint]> = [];
  if (f === 4) for (let i = 0; i < a.v4.length; i += 2) out.push([BigInt(a.v4[i]), BigInt(a.v4[i + 1])]);
  else for (let i = 0; i < a.v6.length; i += 4) out.push([(a.v6[i] << 64n) | a.v6[i + 1], (a.v6[i + 2] << 64n) | a.v6[i + 3]]);
  return out;
}

function addrText(v: bigint, f: Family): string {
  if (f === 4) return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 0xffn)).join('.');
  const g: string[] = [];
  for (let i = 7; i >= 0; i--) g.push(((v >> BigInt(i * 16)) & 0xffffn).toString(16));
  return g.join(':');
}

function lpmKey(prefixlen: number, data: Buffer): Buffer {
  const k = Buffer.alloc(4 + data.length);
  k.writeUInt32LE(prefixlen, 0);
  data.copy(k, 4);
  return k;
}

/** a class id as the map value: its two big-endian bytes first (copied into the verdict key as they are) */
function classValue(id: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt16BE(id, 0);
  return v;
}

function u32(n: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt32LE(n, 0);
  return v;
}

interface Leaf { addrs: AddrSet; proto?: 'tcp' | 'udp'; port?: number }

/** every address set the plan matches `dir` against, lists expanded; net,port entries as separate leaves */
function leaves(fp: FamilyPlan, dir: 'src' | 'dst'): Leaf[] {
  const sets = new Map<string, PlanSet>(fp.sets.map((s) => [s.name, s]));
  const out: Leaf[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const s = sets.get(name);
    if (!s) throw new Error(`ebpf maps: unknown set ${name}`);
    const k = s.kind;
    if (k.type === 'net') out.push({ addrs: k.addrs });
    else if (k.type === 'net,port') for (const e of k.byPort) out.push({ addrs: e.addrs, proto: e.proto, port: e.port });
    else if (k.type === 'list') k.members.forEach(visit);
    // dynamic: filled at run time, empty for the eBPF maps (see the file comment)
  };
  for (const c of fp.chains) for (const r of c.rules) { const m = r.match[dir]; if (m) visit(m.set); }
  return out;
}

/** an address: a number for IPv4 (exact up to 2^53), a bigint for IPv6 */
type Pos = number | bigint;
type Ranges = Array<[Pos, Pos]>;

/**
 * Split the family's whole address space by every leaf: one sweep over the
 * sorted range bounds; each elementary interval's class is the set of leaves
 * covering it. Returns the classes (disjoint, non-empty, each a sorted list of
 * ranges) in order of their first address.
 */
interface AddrClass { ranges: Ranges; /** content hashes of the leaves covering it */ leaves: string[] }

function partition(f: Family, ls: Leaf[]): AddrClass[] {
  const done = new Set<string>();
  const hashes: string[] = [];
  const sets: AddrSet[] = [];
  for (const l of ls) {
    const a = l.addrs.family(f);
    const h = a.hash();
    if (done.has(h) || a.isEmpty()) continue;
    done.add(h);
    hashes.push(h);
    sets.push(a);
  }
  // events: a leaf starts (+(id + 1)) or ends (-(id + 1)) at a position, sorted by position
  let at: (i: number) => Pos, ev: (i: number) => number, n: number;
  const max: Pos = f === 4 ? 0xffffffff : (1n << 128n) - 1n;
  if (f === 4) {
    n = 0;
    for (const a of sets) n += a.v4.length; // two bounds per range at most
    const pos = new Float64Array(n), id = new Int32Array(n);
    let k = 0;
    sets.forEach((a, i) => {
      for (let j = 0; j < a.v4.length; j += 2) {
        pos[k] = a.v4[j]; id[k++] = i + 1;
        if (a.v4[j + 1] < 0xffffffff) { pos[k] = a.v4[j + 1] + 1; id[k++] = -(i + 1); }
      }
    });
    n = k;
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((x, y) => pos[x] - pos[y]);
    at = (i) => pos[order[i]];
    ev = (i) => id[order[i]];
  } else {
    const events: Array<[bigint, number]> = [];
    sets.forEach((a, i) => {
      for (const [s, e] of ranges(a, 6)) {
        events.push([s, i + 1]);
        if (e < (max as bigint)) events.push([e + 1n, -(i + 1)]);
      }
    });
    events.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    n = events.length;
    at = (i) => events[i][0];
    ev = (i) => events[i][1];
  }
  const classes = new Map<string, AddrClass>();
  /** leaves covering the current interval, sorted */
  const active: number[] = [];
  const emit = (s: Pos, e: Pos) => {
    const sig = active.join(',');
    let k = classes.get(sig);
    if (!k) classes.set(sig, (k = { ranges: [], leaves: active.map((i) => hashes[i]) }));
    const c = k.ranges;
    const last = c[c.length - 1];
    if (last && (f === 4 ? (last[1] as number) + 1 === s : (last[1] as bigint) + 1n === s)) last[1] = e;
    else c.push([s, e]);
  };
  let cur: Pos = f === 4 ? 0 : 0n;
  for (let i = 0; i < n;) {
    const p = at(i);
    if (p > cur) { emit(cur, f === 4 ? (p as number) - 1 : (p as bigint) - 1n); cur = p; }
    for (; i < n && at(i) === p; i++) {
      const x = ev(i);
      if (x > 0) {
        let lo = 0, hi = active.length;
        while (lo < hi) { const mid = (lo + hi) >> 1; if (active[mid] < x - 1) lo = mid + 1; else hi = mid; }
        active.splice(lo, 0, x - 1);
      } else active.splice(active.indexOf(-x - 1), 1);
    }
  }
  emit(cur, max);
  return [...classes.values()];
}

type Proto = 'tcp' | 'udp' | 'icmp' | 'icmpv6';

/**
 * The 16-bit port axis of `proto` cut into intervals on which no rule can tell
 * ports apart for destinations of class `d`: only rules whose destination set
 * may hold the class (or that have none, or a negated one) and net,port
 * entries covering the class cut it. Source-side net,port entries always cut.
 */
function portIntervals(fp: FamilyPlan, f: Family, proto: Proto, srcLeaves: Leaf[], d: AddrClass, setHashes: (name: string) => string[]): Array<[number, number]> {
  const inClass = new Set(d.leaves);
  const cuts = new Set<number>([0, 0x10000]);
  const cut = (from: number, to: number) => { cuts.add(from); cuts.add(to + 1); };
  for (const c of fp.chains) {
    for (const r of c.rules) {
      const m = r.match;
      if (m.proto !== undefined && m.proto !== proto) continue; // (net,port set matches carry no proto)
      if (m.dst && !m.dst.negate && !setHashes(m.dst.set).some((h) => inClass.has(h))) continue;
      for (const x of m.dports ?? []) cut(x.from, x.to);
      if (m.icmp && m.icmp.type !== -1) {
        if (m.icmp.code === -1) cut(m.icmp.type << 8, (m.icmp.type << 8) | 0xff);
        else cut((m.icmp.type << 8) | m.icmp.code, (m.icmp.type << 8) | m.icmp.code);
      }
      if (m.dst && !m.dst.negate) {
        for (const l of portLeaves(fp, m.dst.set)) if (l.proto === proto && inClass.has(l.addrs.family(f).hash())) cut(l.port!, l.port!);
      } else if (m.dst) for (const l of portLeaves(fp, m.dst.set)) if (l.proto === proto) cut(l.port!, l.port!);
    }
  }
  for (const l of srcLeaves) if (l.proto === proto && l.port !== undefined) cut(l.port, l.port);
  const xs = [...cuts].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (let i = 0; i + 1 < xs.length; i++) out.push([xs[i], xs[i + 1] - 1]);
  return out;
}

const portLeavesCache = new WeakMap<FamilyPlan, Map<string, Leaf[]>>();
/** the net,port entries of a set (lists expanded) */
function portLeaves(fp: FamilyPlan, name: string): Leaf[] {
  let cache = portLeavesCache.get(fp);
  if (!cache) portLeavesCache.set(fp, (cache = new Map()));
  let hit = cache.get(name);
  if (!hit) {
    const s = fp.sets.find((x) => x.name === name);
    const k = s?.kind;
    hit = !k ? [] : k.type === 'net,port' ? k.byPort.map((e) => ({ addrs: e.addrs, proto: e.proto, port: e.port }))
      : k.type === 'list' ? k.members.flatMap((m) => portLeaves(fp, m)) : [];
    cache.set(name, hit);
  }
  return hit;
}

/** content hashes (family f) of the address sets a set name stands for, lists expanded */
function setHasher(fp: FamilyPlan, f: Family): (name: string) => string[] {
  const sets = new Map<string, PlanSet>(fp.sets.map((s) => [s.name, s]));
  const memo = new Map<string, string[]>();
  const get = (name: string): string[] => {
    let hit = memo.get(name);
    if (hit) return hit;
    const k = sets.get(name)?.kind;
    hit = !k ? [] : k.type === 'net' ? [k.addrs.family(f).hash()]
      : k.type === 'net,port' ? k.byPort.map((e) => e.addrs.family(f).hash())
      : k.type === 'list' ? k.members.flatMap(get) : [];
    memo.set(name, hit);
    return hit;
  };
  return get;
}

/**
 * The plan with every address set of family `f` replaced by the class
 * representatives it holds. A class lies wholly inside or outside each set,
 * so evaluating a representative against the small sets gives the same
 * verdict as against the real ones, without scanning big sets per packet.
 */
function projectedPlan(plan: Plan, f: Family, reps: Array<{ rep: string; leaves: string[] }>): Plan {
  const byLeaf = new Map<string, string[]>();
  for (const r of reps) for (const h of r.leaves) { let l = byLeaf.get(h); if (!l) byLeaf.set(h, (l = [])); l.push(r.rep); }
  const project = (a: AddrSet): AddrSet => {
    const l = byLeaf.get(a.family(f).hash());
    return l ? AddrSet.of([...new Set(l)]) : AddrSet.empty();
  };
  const fp = plan.families[f];
  const sets = fp.sets.map((s): PlanSet => {
    const k = s.kind;
    if (k.type === 'net') return { ...s, kind: { type: 'net', addrs: project(k.addrs) } };
    if (k.type === 'net,port') return { ...s, kind: { type: 'net,port', byPort: k.byPort.map((e) => ({ ...e, addrs: project(e.addrs) })) } };
    return s;
  });
  return { ...plan, families: { ...plan.families, [f]: { ...fp, sets } } };
}

/** a dynamic-group member known when the maps are built (what `cellwall members add` recorded) */
export interface MapMember { addr: string; phase: Phase; groups: string[] }

/** one cell of a verdict row: the verdict of every other protocol, and the port runs of tcp, udp, icmp (null: all `other`) */
interface RowCell { other: number; runs: Array<Array<[number, number, number]> | null> }
/** a governed source as the row computers see it: its class's leaves, a representative address, its membership */
interface RowSource { leaves: string[]; rep: string; members?: Membership }

/** everything about one family the row computers share */
interface FamilyCtx {
  plan: Plan;
  f: Family;
  fp: FamilyPlan;
  srcLeaves: Leaf[];
  dsts: AddrClass[];
  rep: (a: AddrClass) => string;
  srcs: AddrClass[];
  stats: MapContents['stats'];
}

type RowComputer = (c: FamilyCtx) => (src: RowSource) => RowCell[];

const PROTOS = (f: Family) => ['tcp', 'udp', f === 4 ? 'icmp' : 'icmpv6'] as const;

/**
 * The reference row computer: evaluatePlan on a representative packet per
 * (destination class, protocol, port interval), the port axis cut by
 * portIntervals. O(sources x destination classes x intervals x plan size).
 */
const evaluatedRows: RowComputer = (c) => {
  const { plan, f, fp, srcLeaves, dsts, srcs, rep, stats } = c;
  const evalPlan = projectedPlan(plan, f, [...srcs, ...dsts].map((x) => ({ rep: rep(x), leaves: x.leaves })));
  const hasher = setHasher(fp, f);
  const protoList = PROTOS(f);
  const dstProtos = dsts.map((d) => protoList.map((p) => ({ p, iv: portIntervals(fp, f, p, srcLeaves, d, hasher) })));
  return (src) => dsts.map((d, di) => {
    const dstAddr = rep(d);
    const verdict = (proto: PacketProto, port?: number): number => {
      stats.evaluations++;
      const icmp = proto === 'icmp' || proto === 'icmpv6';
      const ev = evaluatePlan(evalPlan, {
        src: src.rep, dst: dstAddr, proto,
        ...(icmp ? { type: (port ?? 0) >> 8, code: (port ?? 0) & 0xff } : proto === OTHER ? {} : { port }),
      }, src.members);
      return VERDICT[ev.verdict];
    };
    const other = verdict(OTHER);
    const runs = dstProtos[di].map(({ p, iv }) => {
      // merge adjacent intervals with the same verdict
      const r: Array<[number, number, number]> = [];
      for (const [from, to] of iv) {
        const v = verdict(p, from);
        const last = r[r.length - 1];
        if (last && last[2] === v) last[1] = to;
        else r.push([from, to, v]);
      }
      return r.length === 1 && r[0][2] === other ? null : r;
    });
    return { other, runs };
  });
};

// ---- symbolic rows: interval lists over one line holding every (protocol, port) point ----

/** tcp ports, udp ports, icmp type.code, then one point for every other protocol */
const AXIS = { tcp: 0, udp: 0x10000, icmp: 0x20000, other: 0x30000 } as const;
/** sorted disjoint inclusive intervals, flattened: [lo0, hi0, lo1, hi1, ...] */
type IV = number[];
const FULL: IV = [0, AXIS.other];
const NONE: IV = [];

function ivAnd(a: IV, b: IV): IV {
  if (!a.length || !b.length) return NONE;
  if (b === FULL) return a;
  if (a === FULL) return b;
  const out: number[] = [];
  for (let i = 0, j = 0; i < a.length && j < b.length;) {
    const lo = Math.max(a[i], b[j]), hi = Math.min(a[i + 1], b[j + 1]);
    if (lo <= hi) out.push(lo, hi);
    if (a[i + 1] < b[j + 1]) i += 2;
    else j += 2;
  }
  return out;
}

/** any flattened list of inclusive intervals (unsorted, overlapping) as an IV */
function ivOf(xs: number[]): IV {
  const pairs: Array<[number, number]> = [];
  for (let i = 0; i < xs.length; i += 2) pairs.push([xs[i], xs[i + 1]]);
  pairs.sort((x, y) => x[0] - y[0]);
  const out: number[] = [];
  for (const [lo, hi] of pairs) {
    const n = out.length;
    if (n && lo <= out[n - 1] + 1) out[n - 1] = Math.max(out[n - 1], hi);
    else out.push(lo, hi);
  }
  return out;
}

function ivOr(a: IV, b: IV): IV {
  if (!a.length) return b;
  if (!b.length) return a;
  return ivOf([...a, ...b]);
}

function ivNot(a: IV): IV {
  const out: number[] = [];
  let next = 0;
  for (let i = 0; i < a.length; i += 2) {
    if (a[i] > next) out.push(next, a[i] - 1);
    next = a[i + 1] + 1;
  }
  if (next <= AXIS.other) out.push(next, AXIS.other);
  return out;
}

const ivMinus = (a: IV, b: IV): IV => (b.length ? ivAnd(a, ivNot(b)) : a);
const points = (xs: number[]): IV => ivOf(xs.flatMap((x) => [x, x]));

/**
 * The symbolic row computer: for one source, each rule's match becomes an
 * interval list over the (protocol, port) line (its source side fixed), and
 * the chains are walked ONCE over all destination classes together (chains in
 * topological order, each holding per destination class the part of the line
 * still undecided in it); a rule with a destination set only visits the
 * classes inside that set. The result is exact (no representative packets),
 * so its runs are the maximal runs the evaluated rows merge to. Sources whose
 * rules all reduce to the same lists share one row.
 */
const symbolicRows: RowComputer = (c) => {
  const { f, fp, dsts, stats } = c;
  const sets = new Map<string, PlanSet>(fp.sets.map((x) => [x.name, x]));
  const chains = new Map(fp.chains.map((x) => [x.name, x]));
  const icmpName = f === 4 ? 'icmp' : 'icmpv6';
  const defaultType = f === 4 ? 8 : 128;
  const axisOf = (proto: 'tcp' | 'udp' | 'icmp' | 'icmpv6') => (proto === 'tcp' ? AXIS.tcp : proto === 'udp' ? AXIS.udp : proto === icmpName ? AXIS.icmp : -1);
  const dstLeafSets = dsts.map((d) => new Set(d.leaves));
  const classesByLeaf = new Map<string, number[]>();
  dsts.forEach((d, i) => d.leaves.forEach((h) => { let l = classesByLeaf.get(h); if (!l) classesByLeaf.set(h, (l = [])); l.push(i); }));
  const all = dsts.map((_, i) => i);

  /** chains in topological order of their gotos (top first) */
  const order: string[] = [];
  {
    const state = new Map<string, 1 | 2>();
    const visit = (name: string) => {
      if (state.get(name) === 2) return;
      if (state.get(name) === 1) throw new Error(`ebpf maps: chain loop at ${name}`);
      state.set(name, 1);
      const ch = chains.get(name);
      if (!ch) throw new Error(`plan: goto to unknown chain ${name}`);
      for (const r of ch.rules) if (r.target.kind === 'goto') visit(r.target.chain);
      state.set(name, 2);
      order.push(name);
    };
    visit(fp.top);
    order.reverse();
  }

  /** each set's content hashes, computed once: net -> its hash, net,port -> (point, hash) per entry */
  type SetInfo = { type: 'net'; h: string } | { type: 'net,port'; byHash: Map<string, number[]> } | { type: 'list'; members: string[] } | { type: 'dynamic'; group: string; phase: Phase };
  const infoMemo = new Map<string, SetInfo>();
  const infoOf = (name: string): SetInfo => {
    let hit = infoMemo.get(name);
    if (hit) return hit;
    const k = sets.get(name)?.kind;
    if (!k) throw new Error(`plan: unknown set ${name}`);
    if (k.type === 'net,port') {
      const byHash = new Map<string, number[]>();
      for (const e of k.byPort) {
        const h = e.addrs.family(f).hash();
        let l = byHash.get(h);
        if (!l) byHash.set(h, (l = []));
        l.push(AXIS[e.proto] + e.port);
      }
      hit = { type: 'net,port', byHash };
    } else {
      hit = k.type === 'net' ? { type: 'net', h: k.addrs.family(f).hash() }
        : k.type === 'list' ? { type: 'list', members: k.members } : { type: 'dynamic', group: k.group, phase: k.phase };
    }
    infoMemo.set(name, hit);
    return hit;
  };
  /** the (protocol, port) points a set holds for an address class with these leaves (net,port: its entries; others: all or none) */
  const setLine = (name: string, leafSet: Set<string>, dir: 'src' | 'dst', members?: Membership): IV => {
    const k = infoOf(name);
    switch (k.type) {
      case 'net': return leafSet.has(k.h) ? FULL : NONE;
      case 'net,port': {
        const xs: number[] = [];
        for (const h of leafSet) for (const x of k.byHash.get(h) ?? []) xs.push(x);
        return points(xs);
      }
      case 'list': return k.members.reduce((acc, m) => ivOr(acc, setLine(m, leafSet, dir, members)), NONE);
      case 'dynamic': return dir === 'src' && !!members && members.phase === k.phase && members.groups.includes(k.group) ? FULL : NONE;
    }
  };
  /** destination classes a (non-negated) destination set may hold */
  const touchedMemo = new Map<string, number[]>();
  const touched = (name: string): number[] => {
    let hit = touchedMemo.get(name);
    if (hit) return hit;
    const k = sets.get(name)?.kind;
    const acc = new Set<number>();
    const add = (h: string) => { for (const i of classesByLeaf.get(h) ?? []) acc.add(i); };
    if (k?.type === 'net') add(k.addrs.family(f).hash());
    else if (k?.type === 'net,port') for (const e of k.byPort) add(e.addrs.family(f).hash());
    else if (k?.type === 'list') for (const m of k.members) for (const i of touched(m)) acc.add(i);
    hit = [...acc].sort((a, b) => a - b);
    touchedMemo.set(name, hit);
    return hit;
  };
  /** the rule's match on the line, destination aside, for a source */
  const sourceLine = (m: PlanMatch, leafSet: Set<string>, members?: Membership): IV => {
    if (m.ctstate) return NONE; // a new connection (established traffic: ESTABLISHED_KEY)
    let a = FULL;
    if (m.proto) {
      const ax = axisOf(m.proto);
      a = ax < 0 ? NONE : [ax, ax + 0xffff];
    }
    if (m.dports) a = ivAnd(a, ivOf(m.dports.flatMap((r) => [AXIS.tcp + r.from, AXIS.tcp + r.to, AXIS.udp + r.from, AXIS.udp + r.to])));
    if (m.icmp && m.icmp.type !== -1) {
      const t = m.icmp.type << 8;
      const icmp = m.icmp.code === -1 ? [AXIS.icmp + t, AXIS.icmp + t + 0xff] : [AXIS.icmp + t + m.icmp.code, AXIS.icmp + t + m.icmp.code];
      // evaluatePlan compares other protocols' (absent) type and code with the echo-request defaults
      const rest = m.icmp.type === defaultType && m.icmp.code <= 0 ? ivNot([AXIS.icmp, AXIS.icmp + 0xffff]) : NONE;
      a = ivAnd(a, ivOr(icmp, rest));
    }
    if (m.src && a.length) {
      const s = setLine(m.src.set, leafSet, 'src', members);
      a = ivAnd(a, m.src.negate ? ivNot(s) : s);
    }
    return a;
  };
  /** the destination side of a match for a destination class (memoised: it does not depend on the source) */
  const dstMemo = new Map<string, Map<number, IV>>();
  const dstLine = (m: PlanMatch, d: number): IV => {
    if (!m.dst) return FULL;
    let byClass = dstMemo.get(m.dst.set);
    if (!byClass) dstMemo.set(m.dst.set, (byClass = new Map()));
    let inSet = byClass.get(d);
    if (!inSet) byClass.set(d, (inSet = setLine(m.dst.set, dstLeafSets[d], 'dst')));
    return m.dst.negate ? ivNot(inSet) : inSet;
  };

  const rows = new Map<string, RowCell[]>();
  return (src) => {
    const leafSet = new Set(src.leaves);
    const lines = new Map(fp.chains.map((ch) => [ch.name, ch.rules.map((r) => sourceLine(r.match, leafSet, src.members))]));
    const sig = order.map((n) => lines.get(n)!.map((l) => l.join(',')).join(';')).join('|');
    const shared = rows.get(sig);
    if (shared) return shared;
    stats.evaluations += dsts.length;
    /** per destination class: [lo, hi, verdict] pieces of the line */
    const out: Array<Array<[number, number, number]>> = dsts.map(() => []);
    const emit = (d: number, iv: IV, v: number) => { for (let i = 0; i < iv.length; i += 2) out[d].push([iv[i], iv[i + 1], v]); };
    const inbox = new Map<string, Map<number, IV>>([[fp.top, new Map(all.map((d) => [d, FULL]))]]);
    for (const name of order) {
      const pending = inbox.get(name);
      if (!pending) continue;
      const ch = chains.get(name)!;
      const ruleLines = lines.get(name)!;
      ch.rules.forEach((r, i) => {
        const a = ruleLines[i];
        if (!a.length || !pending.size) return;
        const m = r.match;
        const visit = m.dst && !m.dst.negate ? touched(m.dst.set) : [...pending.keys()];
        for (const d of visit) {
          const p = pending.get(d);
          if (!p) continue;
          let hit = ivAnd(p, a);
          if (hit.length && m.dst) hit = ivAnd(hit, dstLine(m, d));
          if (!hit.length) continue;
          const t = r.target;
          if (t.kind === 'log') continue;
          if (t.kind === 'goto') {
            let box = inbox.get(t.chain);
            if (!box) inbox.set(t.chain, (box = new Map()));
            box.set(d, ivOr(box.get(d) ?? NONE, hit));
          } else if (t.kind === 'allow' && ch.role === 'top') {
            // an allow in the top chain for a packet no later rule there matches: not governed (as evaluatePlan says)
            let later = NONE;
            for (let j = i + 1; j < ch.rules.length; j++) later = ivOr(later, ivAnd(ruleLines[j], dstLine(ch.rules[j].match, d)));
            emit(d, ivAnd(hit, later), VERDICT.allow);
            emit(d, ivMinus(hit, later), VERDICT.untouched);
          } else emit(d, hit, t.kind === 'allow' ? VERDICT.allow : VERDICT.deny);
          const rest = ivMinus(p, hit);
          if (rest.length) pending.set(d, rest);
          else pending.delete(d);
        }
      });
      for (const [d, p] of pending) emit(d, p, VERDICT.untouched); // fell off the chain
      inbox.delete(name);
    }
    const row = out.map((pieces): RowCell => {
      pieces.sort((x, y) => x[0] - y[0]);
      let covered = 0;
      for (const [lo, hi] of pieces) covered += hi - lo + 1;
      if (covered !== AXIS.other + 1) throw new Error('ebpf maps: verdict pieces do not cover the line');
      const other = pieces[pieces.length - 1][2];
      const runs = [AXIS.tcp, AXIS.udp, AXIS.icmp].map((base) => {
        const r: Array<[number, number, number]> = [];
        for (const [lo, hi, v] of pieces) {
          const from = Math.max(lo, base) - base, to = Math.min(hi, base + 0xffff) - base;
          if (from > to) continue;
          const last = r[r.length - 1];
          if (last && last[2] === v) last[1] = to;
          else r.push([from, to, v]);
        }
        return r.length === 1 && r[0][2] === other ? null : r;
      });
      return { other, runs };
    });
    rows.set(sig, row);
    return row;
  };
};

/**
 * The map contents for a plan: classes in cw_src4/cw_dst4/cw_src6/cw_dst6 and
 * the verdicts in cw_verdict (VERDICT: 0 untouched, 1 deny, 2 allow), plus
 * ESTABLISHED_KEY when the policy accepts established traffic. Deterministic:
 * the same plan gives byte-identical contents. Verdict rows are computed
 * symbolically (see symbolicRows); planMapsByEvaluation is the reference
 * (one evaluatePlan per cell) and gives the same maps.
 */
export function planMaps(plan: Plan, opts: { members?: MapMember[] } = {}): MapContents {
  return buildMaps(plan, opts, symbolicRows);
}

/** planMaps with every verdict taken from evaluatePlan on a representative packet (slow; the reference for tests) */
export function planMapsByEvaluation(plan: Plan, opts: { members?: MapMember[] } = {}): MapContents {
  return buildMaps(plan, opts, evaluatedRows);
}

function buildMaps(plan: Plan, opts: { members?: MapMember[] }, computer: RowComputer): MapContents {
  const maps: Record<string, MapEntry[]> = {
    [MAP_NAMES.src4]: [], [MAP_NAMES.dst4]: [], [MAP_NAMES.src6]: [], [MAP_NAMES.dst6]: [], [MAP_NAMES.verdict]: [],
  };
  const stats = { srcClasses: 0, dstClasses: 0, verdicts: 0, evaluations: 0 };
  let nextSrc = 1, nextDst = 0;
  for (const f of [4, 6] as const) {
    const fp = plan.families[f];
    const srcLeaves = leaves(fp, 'src'), dstLeaves = leaves(fp, 'dst');
    const srcs = partition(f, srcLeaves), dsts = partition(f, dstLeaves);
    const rep = (a: AddrClass) => addrText(BigInt(a.ranges[0][0]), f);
    const dstIds = dsts.map(() => nextDst++);
    if (nextDst > MAX_CLASS + 1) throw new Error(`ebpf maps: more than ${MAX_CLASS + 1} destination classes`);
    const dstMap = maps[f === 4 ? MAP_NAMES.dst4 : MAP_NAMES.dst6];
    dsts.forEach((d, i) => {
      const value = classValue(dstIds[i]); // shared by the class's entries (never written after)
      for (const [s, e] of d.ranges) for (const key of addrKeys(f, s, e)) dstMap.push({ key, value });
    });
    const rowOf = computer({ plan, f, fp, srcLeaves, dsts, srcs, rep, stats });
    const protoList = PROTOS(f);
    /** one source class: its verdict row for every destination class, then its prefixes */
    const addSource = (srcRanges: Ranges, src: RowSource) => {
      const verdicts: MapEntry[] = [];
      let governed = 0;
      const sc = nextSrc;
      rowOf(src).forEach(({ other, runs }, di) => {
        const head = Buffer.alloc(8);
        head.writeUInt16BE(sc, 0);
        head.writeUInt16BE(dstIds[di], 2);
        governed += other;
        verdicts.push({ key: lpmKey(32, head), value: u32(other) });
        runs.forEach((r, pi) => {
          if (!r) return; // the 32-bit entry already says it
          for (const [from, to, v] of r) {
            governed += v;
            for (const [base, len] of numPrefixes(from, to, 16)) {
              const data = Buffer.from(head);
              data[4] = PROTO_NUM[protoList[pi]];
              data.writeUInt16BE(Number(base), 6);
              verdicts.push({ key: lpmKey(VERDICT_PORT_BIT + len, data), value: u32(v) });
            }
          }
        });
      });
      // a class untouched everywhere needs no entries: not in cw_src* means not governed
      if (governed === 0) return;
      nextSrc++;
      if (sc > MAX_CLASS) throw new Error(`ebpf maps: more than ${MAX_CLASS} source classes`);
      stats.srcClasses++;
      const value = classValue(sc);
      for (const [s, e] of srcRanges) for (const key of addrKeys(f, s, e)) maps[f === 4 ? MAP_NAMES.src4 : MAP_NAMES.src6].push({ key, value });
      maps[MAP_NAMES.verdict].push(...verdicts);
    };
    for (const src of srcs) addSource(src.ranges, { leaves: src.leaves, rep: rep(src) });
    // dynamic members: a class of their own address (the longer prefix wins), evaluated with their membership
    // through the class holding the address (same static sets, so same verdicts)
    for (const m of opts.members ?? []) {
      const r = ranges(AddrSet.of([m.addr]).family(f), f)[0];
      if (!r) continue;
      const home = srcs.find((c) => c.ranges.some(([s, e]) => BigInt(s) <= r[0] && r[0] <= BigInt(e)))!;
      addSource([r], { leaves: home.leaves, rep: rep(home), members: { phase: m.phase, groups: m.groups } });
    }
    stats.dstClasses += dsts.length;
  }
  // defaults.established: accept (the plan short-circuits ESTABLISHED,RELATED): read by the conntrack program
  if ([4, 6].some((f) => plan.families[f as 4 | 6].chains.some((c) => c.rules.some((r) => r.match.ctstate && r.target.kind === 'allow')))) {
    maps[MAP_NAMES.verdict].push({ key: lpmKey(32, ESTABLISHED_KEY), value: u32(VERDICT.allow) });
  }
  // a member's /32 (/128) may repeat a class prefix: the member's entry (pushed later) wins
  for (const n of [MAP_NAMES.src4, MAP_NAMES.src6]) {
    const last = new Map<string, MapEntry>();
    for (const e of maps[n]) last.set(e.key.toString('hex'), e);
    if (last.size !== maps[n].length) maps[n] = maps[n].filter((e) => last.get(e.key.toString('hex')) === e);
  }
  stats.verdicts = maps[MAP_NAMES.verdict].length;
  for (const [name, es] of Object.entries(maps)) {
    const want = name === MAP_NAMES.verdict ? KEY_SIZE.verdict : name.endsWith('4') ? KEY_SIZE.addr4 : KEY_SIZE.addr6;
    for (const e of es) if (e.key.length !== want) throw new Error(`ebpf maps: ${name} key of ${e.key.length} bytes`);
  }
  return { maps, stats };
}

const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(' ');

/** `bpftool batch file` input filling the maps pinned under `pinDir` (one pinned file per map name) */
export function bpftoolBatch(c: MapContents, pinDir: string): string {
  const lines: string[] = [];
  for (const [name, es] of Object.entries(c.maps)) {
    for (const e of es) lines.push(batchLine(`${pinDir}/${name}`, e.key, e.value));
  }
  return lines.join('\n') + '\n';
}

/** one `bpftool batch` line: set `key` to `value` in the map pinned at `path`, or delete `key` when value is null */
export function batchLine(path: string, key: Buffer, value: Buffer | null): string {
  return value ? `map update pinned ${path} key hex ${hex(key)} value hex ${hex(value)}` : `map delete pinned ${path} key hex ${hex(key)}`;
}

/** the map contents as JSON (what `compile --backend ebpf` writes as maps.json) */
export function mapsJson(c: MapContents): string {
  const maps = Object.fromEntries(Object.entries(c.maps).map(([n, es]) => [n, es.map((e) => ({ key: e.key.toString('hex'), value: e.value.toString('hex') }))]));
  return JSON.stringify({ format: 'cellwall-ebpf-maps/1', stats: c.stats, maps }, null, 1) + '\n';
}

/** maps.json (mapsJson output) back to map contents, e.g. to fill the maps from a `compile --out` directory */
export function parseMapsJson(text: string): MapContents {
  const j = JSON.parse(text) as { format?: string; stats: MapContents['stats']; maps: Record<string, Array<{ key: string; value: string }>> };
  if (j.format !== 'cellwall-ebpf-maps/1') throw new Error(`maps.json: unknown format ${JSON.stringify(j.format)}`);
  const maps = Object.fromEntries(Object.entries(j.maps).map(([n, es]) => [n, es.map((e) => ({ key: Buffer.from(e.key, 'hex'), value: Buffer.from(e.value, 'hex') }))]));
  return { maps, stats: j.stats };
}
