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
import type { FamilyPlan, Plan, PlanSet } from '../compile/plan.js';
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
  const out: Array<[bigint, number]> = [];
  let s = start;
  while (s <= end) {
    let len = bits;
    // grow the block while aligned and inside the range
    while (len > 0) {
      const size = 1n << BigInt(bits - len + 1);
      if (s % size !== 0n || s + size - 1n > end) break;
      len--;
    }
    out.push([s, len]);
    s += 1n << BigInt(bits - len);
  }
  return out;
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

function bigBytes(v: bigint, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = n - 1; i >= 0; i--) { b[i] = Number(v & 0xffn); v >>= 8n; }
  return b;
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

type Ranges = Array<[bigint, bigint]>;

/**
 * Split the family's whole address space by every leaf: one sweep over the
 * sorted range bounds; each elementary interval's class is the set of leaves
 * covering it. Returns the classes (disjoint, non-empty, each a sorted list of
 * ranges) in order of their first address.
 */
interface AddrClass { ranges: Ranges; /** content hashes of the leaves covering it */ leaves: string[] }

function partition(f: Family, ls: Leaf[]): AddrClass[] {
  const max = f === 4 ? 0xffffffffn : (1n << 128n) - 1n;
  const events: Array<[bigint, number, 1 | -1]> = [];
  const done = new Set<string>();
  const hashes: string[] = [];
  let id = 0;
  for (const l of ls) {
    const a = l.addrs.family(f);
    const h = a.hash();
    if (done.has(h) || a.isEmpty()) continue;
    done.add(h);
    hashes.push(h);
    for (const [s, e] of ranges(a, f)) {
      events.push([s, id, 1]);
      if (e < max) events.push([e + 1n, id, -1]);
    }
    id++;
  }
  events.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const classes = new Map<string, AddrClass>();
  const active = new Set<number>();
  const emit = (s: bigint, e: bigint) => {
    const ids = [...active].sort((x, y) => x - y);
    const sig = ids.join(',');
    let k = classes.get(sig);
    if (!k) classes.set(sig, (k = { ranges: [], leaves: ids.map((i) => hashes[i]) }));
    const c = k.ranges;
    const last = c[c.length - 1];
    if (last && last[1] + 1n === s) last[1] = e;
    else c.push([s, e]);
  };
  let cur = 0n;
  for (let i = 0; i < events.length;) {
    const pos = events[i][0];
    if (pos > cur) { emit(cur, pos - 1n); cur = pos; }
    for (; i < events.length && events[i][0] === pos; i++) {
      if (events[i][2] === 1) active.add(events[i][1]);
      else active.delete(events[i][1]);
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

/**
 * The map contents for a plan: classes in cw_src4/cw_dst4/cw_src6/cw_dst6 and
 * the verdicts in cw_verdict (VERDICT: 0 untouched, 1 deny, 2 allow). Deterministic: the same
 * plan gives byte-identical contents.
 */
/** a dynamic-group member known when the maps are built (what `cellwall members add` recorded) */
export interface MapMember { addr: string; phase: Phase; groups: string[] }

export function planMaps(plan: Plan, opts: { members?: MapMember[] } = {}): MapContents {
  const maps: Record<string, MapEntry[]> = {
    [MAP_NAMES.src4]: [], [MAP_NAMES.dst4]: [], [MAP_NAMES.src6]: [], [MAP_NAMES.dst6]: [], [MAP_NAMES.verdict]: [],
  };
  const stats = { srcClasses: 0, dstClasses: 0, verdicts: 0, evaluations: 0 };
  let nextSrc = 1, nextDst = 0;
  for (const f of [4, 6] as const) {
    const fp = plan.families[f];
    const srcLeaves = leaves(fp, 'src'), dstLeaves = leaves(fp, 'dst');
    const srcs = partition(f, srcLeaves), dsts = partition(f, dstLeaves);
    const bits = f === 4 ? 32 : 128;
    const rep = (a: AddrClass) => addrText(a.ranges[0][0], f);
    const evalPlan = projectedPlan(plan, f, [...srcs, ...dsts].map((c) => ({ rep: rep(c), leaves: c.leaves })));
    const dstIds = dsts.map(() => nextDst++);
    if (nextDst > MAX_CLASS + 1) throw new Error(`ebpf maps: more than ${MAX_CLASS + 1} destination classes`);
    dsts.forEach((d, i) => {
      for (const [s, e] of d.ranges) {
        for (const [base, len] of rangePrefixes(s, e, bits)) {
          maps[f === 4 ? MAP_NAMES.dst4 : MAP_NAMES.dst6].push({ key: lpmKey(len, bigBytes(base, bits / 8)), value: classValue(dstIds[i]) });
        }
      }
    });
    const hasher = setHasher(fp, f);
    const protoList = ['tcp', 'udp', f === 4 ? 'icmp' : 'icmpv6'] as const;
    const dstProtos = dsts.map((d) => protoList.map((p) => ({ p, iv: portIntervals(fp, f, p, srcLeaves, d, hasher) })));
    /** one source class: its verdict row for every destination class, then its prefixes */
    const addSource = (srcRanges: Ranges, srcAddr: string, members?: Membership) => {
      const verdicts: MapEntry[] = [];
      let governed = 0;
      const sc = nextSrc;
      dsts.forEach((d, di) => {
        const dc = dstIds[di];
        const dstAddr = rep(d);
        const verdict = (proto: PacketProto, port?: number): number => {
          stats.evaluations++;
          const icmp = proto === 'icmp' || proto === 'icmpv6';
          const ev = evaluatePlan(evalPlan, {
            src: srcAddr, dst: dstAddr, proto,
            ...(icmp ? { type: (port ?? 0) >> 8, code: (port ?? 0) & 0xff } : proto === OTHER ? {} : { port }),
          }, members);
          return VERDICT[ev.verdict];
        };
        const head = Buffer.alloc(8);
        head.writeUInt16BE(sc, 0);
        head.writeUInt16BE(dc, 2);
        const other = verdict(OTHER);
        governed += other;
        verdicts.push({ key: lpmKey(32, head), value: u32(other) });
        for (const { p, iv } of dstProtos[di]) {
          // merge adjacent intervals with the same verdict
          const runs: Array<[number, number, number]> = [];
          for (const [from, to] of iv) {
            const v = verdict(p, from);
            const last = runs[runs.length - 1];
            if (last && last[2] === v) last[1] = to;
            else runs.push([from, to, v]);
          }
          if (runs.length === 1 && runs[0][2] === other) continue; // the 32-bit entry already says it
          for (const [from, to, v] of runs) {
            governed += v;
            for (const [base, len] of rangePrefixes(BigInt(from), BigInt(to), 16)) {
              const data = Buffer.from(head);
              data[4] = PROTO_NUM[p];
              data.writeUInt16BE(Number(base), 6);
              verdicts.push({ key: lpmKey(VERDICT_PORT_BIT + len, data), value: u32(v) });
            }
          }
        }
      });
      // a class untouched everywhere needs no entries: not in cw_src* means not governed
      if (governed === 0) return;
      nextSrc++;
      if (sc > MAX_CLASS) throw new Error(`ebpf maps: more than ${MAX_CLASS} source classes`);
      stats.srcClasses++;
      for (const [s, e] of srcRanges) {
        for (const [base, len] of rangePrefixes(s, e, bits)) {
          maps[f === 4 ? MAP_NAMES.src4 : MAP_NAMES.src6].push({ key: lpmKey(len, bigBytes(base, bits / 8)), value: classValue(sc) });
        }
      }
      maps[MAP_NAMES.verdict].push(...verdicts);
    };
    for (const src of srcs) addSource(src.ranges, rep(src));
    // dynamic members: a class of their own address (the longer prefix wins), evaluated with their membership
    // through the representative of the class holding the address (same static sets, so same verdicts)
    for (const m of opts.members ?? []) {
      const r = ranges(AddrSet.of([m.addr]).family(f), f)[0];
      if (!r) continue;
      const home = srcs.find((c) => c.ranges.some(([s, e]) => s <= r[0] && r[0] <= e))!;
      addSource([r], rep(home), { phase: m.phase, groups: m.groups });
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
    for (const e of es) lines.push(`map update pinned ${pinDir}/${name} key hex ${hex(e.key)} value hex ${hex(e.value)}`);
  }
  return lines.join('\n') + '\n';
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
