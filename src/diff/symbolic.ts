/**
 * Symbolic evaluation of a compiled Plan: instead of one packet (evaluate.ts),
 * whole regions of packets at once, without sampling.
 *
 * A region is fixed by
 *  - the source's dynamic membership (phase + groups, by NAME, as `cellwall
 *    members` sets it),
 *  - whether the packet is part of an established connection,
 *  - an elementary protocol/port class (every port range, net,port entry and
 *    icmp type/code in the plans splits the (protocol, port) space; inside one
 *    class every rule matches all packets or none),
 *  - a rectangle (source AddrSet x destination AddrSet).
 * Walking the chains in order, each rule splits the remaining rectangles into
 * the part it matches (verdict, or recursion for a goto; LOG continues) and
 * the rest. What is left at the end of a chain is untouched.
 */
import { AddrSet, type Family } from '../core/index.js';
import type { Phase } from '../policy/model.js';
import { groupStem } from '../policy/names.js';
import type { FamilyPlan, Plan, PlanChain, PlanMatch, PlanSet } from '../compile/plan.js';

export type Verdict = 'allow' | 'deny' | 'untouched';

export interface Membership { phase: Phase; groups: string[] }

/** One elementary protocol/port class; `rep` values are a representative packet of the class. */
export interface ProtoClass {
  proto: 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'other';
  /** tcp/udp: inclusive port range */
  from?: number;
  to?: number;
  /** icmp: type/code of the class; undefined = "any other" */
  type?: number;
  code?: number;
  /** icmp representative values (other type / other code) */
  repType?: number;
  repCode?: number;
  label: string;
}

export interface Rect { src: AddrSet; dst: AddrSet }
export interface Piece extends Rect { verdict: Verdict }

const ALL4 = AddrSet.all().family(4);
const ALL6 = AddrSet.all().family(6);
export const allOf = (f: Family): AddrSet => (f === 4 ? ALL4 : ALL6);

/**
 * The common refinement of the (protocol, port) space over some family plans
 * (pass the old and the new plan together so both are evaluated on the same classes).
 */
export function protoClasses(fps: FamilyPlan[], family: Family): ProtoClass[] {
  const cuts: Record<'tcp' | 'udp', Set<number>> = { tcp: new Set([0, 65536]), udp: new Set([0, 65536]) };
  const icmpName = family === 4 ? 'icmp' : 'icmpv6';
  const icmp = new Map<number, Set<number>>();
  for (const fp of fps) {
    for (const c of fp.chains) {
      for (const r of c.rules) {
        const m = r.match;
        if ((m.proto === 'tcp' || m.proto === 'udp') && m.dports) {
          for (const p of m.dports) { cuts[m.proto].add(p.from); cuts[m.proto].add(p.to + 1); }
        }
        if (m.proto === icmpName && m.icmp && m.icmp.type !== -1) {
          let codes = icmp.get(m.icmp.type);
          if (!codes) icmp.set(m.icmp.type, (codes = new Set()));
          if (m.icmp.code !== -1) codes.add(m.icmp.code);
        }
      }
    }
    for (const s of fp.sets) {
      if (s.kind.type !== 'net,port') continue;
      for (const e of s.kind.byPort) { cuts[e.proto].add(e.port); cuts[e.proto].add(e.port + 1); }
    }
  }
  const out: ProtoClass[] = [];
  for (const proto of ['tcp', 'udp'] as const) {
    const b = [...cuts[proto]].sort((x, y) => x - y);
    for (let i = 0; i + 1 < b.length; i++) {
      const from = b[i];
      const to = b[i + 1] - 1;
      out.push({ proto, from, to, label: `${proto} ${from === to ? from : `${from}-${to}`}` });
    }
  }
  const firstFree = (used: Set<number>): number | undefined => {
    for (let v = 0; v < 256; v++) if (!used.has(v)) return v;
    return undefined;
  };
  for (const type of [...icmp.keys()].sort((x, y) => x - y)) {
    const codes = icmp.get(type)!;
    for (const code of [...codes].sort((x, y) => x - y)) out.push({ proto: icmpName, type, code, label: `${icmpName} ${type}/${code}` });
    const other = firstFree(codes);
    if (other !== undefined) out.push({ proto: icmpName, type, repCode: other, label: codes.size ? `${icmpName} ${type}/other codes` : `${icmpName} ${type}` });
  }
  const otherType = firstFree(new Set(icmp.keys()));
  if (otherType !== undefined) out.push({ proto: icmpName, repType: otherType, repCode: 0, label: icmp.size ? `${icmpName} other types` : icmpName });
  out.push({ proto: 'other', label: 'other protocols' });
  return out;
}

/** The class a packet falls in (most specific first for icmp). */
export function findClass(classes: ProtoClass[], proto: string, port?: number, type = proto === 'icmpv6' ? 128 : 8, code = 0): ProtoClass | undefined {
  if (proto === 'tcp' || proto === 'udp') return classes.find((c) => c.proto === proto && port !== undefined && c.from! <= port && port <= c.to!);
  const ic = classes.filter((c) => c.proto === proto);
  return ic.find((c) => c.type === type && c.code === code)
    ?? ic.find((c) => c.type === type && c.code === undefined)
    ?? ic.find((c) => c.type === undefined);
}

interface Ctx {
  fp: FamilyPlan;
  family: Family;
  chains: Map<string, PlanChain>;
  sets: Map<string, PlanSet>;
  members: Membership;
  established: boolean;
  cls: ProtoClass;
  /** set contents for this region, per direction and set name */
  memo: Map<string, AddrSet>;
}

function ruleApplies(m: PlanMatch, c: Ctx): boolean {
  const k = c.cls;
  if (m.ctstate && !c.established) return false;
  if (m.proto && m.proto !== k.proto) return false;
  if (m.dports) {
    if (k.from === undefined) return false;
    if (!m.dports.some((r) => r.from <= k.from! && k.to! <= r.to)) return false;
  }
  if (m.icmp && m.icmp.type !== -1) {
    const type = k.type ?? k.repType;
    const code = k.code ?? k.repCode;
    if (m.icmp.type !== type) return false;
    if (m.icmp.code !== -1 && m.icmp.code !== code) return false;
  }
  return true;
}

function setAddrs(name: string, dir: 'src' | 'dst', c: Ctx): AddrSet {
  const key = `${dir}\u0000${name}`;
  let a = c.memo.get(key);
  if (!a) c.memo.set(key, (a = setAddrsUncached(name, dir, c)));
  return a;
}

function setAddrsUncached(name: string, dir: 'src' | 'dst', c: Ctx): AddrSet {
  const s = c.sets.get(name);
  if (!s) throw new Error(`plan: unknown set ${name}`);
  const k = s.kind;
  switch (k.type) {
    case 'net':
      return k.addrs.family(c.family);
    case 'net,port': {
      const cls = c.cls;
      if ((cls.proto !== 'tcp' && cls.proto !== 'udp') || cls.from !== cls.to) return AddrSet.empty();
      let u = AddrSet.empty();
      for (const e of k.byPort) if (e.proto === cls.proto && e.port === cls.from) u = u.union(e.addrs.family(c.family));
      return u;
    }
    case 'list': {
      let u = AddrSet.empty();
      for (const m of k.members) u = u.union(setAddrs(m, dir, c));
      return u;
    }
    case 'dynamic':
      // by name stem: a plan parsed back from payloads only knows the stem in the set name
      return dir === 'src' && c.members.phase === k.phase && c.members.groups.some((g) => groupStem(g) === groupStem(k.group)) ? allOf(c.family) : AddrSet.empty();
  }
}

/** The (src, dst) region a rule's address matches cover, or null for "any". */
function matchSets(m: PlanMatch, c: Ctx): { src: AddrSet | null; dst: AddrSet | null } {
  const one = (sm: PlanMatch['src'], dir: 'src' | 'dst'): AddrSet | null => {
    if (!sm) return null;
    const a = setAddrs(sm.set, dir, c);
    return sm.negate ? allOf(c.family).difference(a) : a;
  };
  return { src: one(m.src, 'src'), dst: one(m.dst, 'dst') };
}

/** Split rectangles into the part inside (S x D) and the rest. */
function split(rects: Rect[], s: AddrSet | null, d: AddrSet | null): { hit: Rect[]; rest: Rect[] } {
  const hit: Rect[] = [];
  const rest: Rect[] = [];
  for (const r of rects) {
    const srcIn = s ? r.src.intersect(s) : r.src;
    const srcOut = s ? r.src.difference(s) : AddrSet.empty();
    if (!srcOut.isEmpty()) rest.push({ src: srcOut, dst: r.dst });
    if (srcIn.isEmpty()) continue;
    const dstIn = d ? r.dst.intersect(d) : r.dst;
    const dstOut = d ? r.dst.difference(d) : AddrSet.empty();
    if (!dstOut.isEmpty()) rest.push({ src: srcIn, dst: dstOut });
    if (!dstIn.isEmpty()) hit.push({ src: srcIn, dst: dstIn });
  }
  return { hit, rest };
}

function walk(chain: PlanChain, rects: Rect[], c: Ctx, out: Piece[], depth: number): void {
  if (depth > 64) throw new Error('plan: chain loop');
  let remaining = rects;
  for (let i = 0; i < chain.rules.length && remaining.length; i++) {
    const r = chain.rules[i];
    if (r.target.kind === 'log' || !ruleApplies(r.match, c)) continue;
    const { src, dst } = matchSets(r.match, c);
    const { hit, rest } = split(remaining, src, dst);
    remaining = rest;
    if (!hit.length) continue;
    const t = r.target;
    if (t.kind === 'goto') {
      const next = c.chains.get(t.chain);
      if (!next) throw new Error(`plan: goto to unknown chain ${t.chain}`);
      walk(next, hit, c, out, depth + 1);
    } else if (t.kind === 'allow' && chain.role === 'top') {
      // an allow in the top chain for a source no later classification rule takes is "untouched" (as evaluate.ts)
      let left = hit;
      for (const x of chain.rules.slice(i + 1)) {
        if (!ruleApplies(x.match, c)) continue;
        const ms = matchSets(x.match, c);
        const sp = split(left, ms.src, ms.dst);
        for (const h of sp.hit) out.push({ ...h, verdict: 'allow' });
        left = sp.rest;
      }
      for (const h of left) out.push({ ...h, verdict: 'untouched' });
    } else {
      const verdict: Verdict = t.kind === 'allow' ? 'allow' : 'deny';
      for (const h of hit) out.push({ ...h, verdict });
    }
  }
  for (const h of remaining) out.push({ ...h, verdict: 'untouched' });
}

/** Every packet region of one (family, membership, established, class), with its verdict; the pieces are disjoint. */
export function evaluateRegion(plan: Plan, family: Family, members: Membership, established: boolean, cls: ProtoClass): Piece[] {
  const fp = plan.families[family];
  const c: Ctx = {
    fp, family, members, established, cls, memo: new Map(),
    chains: new Map(fp.chains.map((x) => [x.name, x])),
    sets: new Map(fp.sets.map((x) => [x.name, x])),
  };
  const out: Piece[] = [];
  const top = c.chains.get(fp.top);
  const all = [{ src: allOf(family), dst: allOf(family) }];
  if (!top) return all.map((r) => ({ ...r, verdict: 'untouched' as const }));
  walk(top, all, c, out, 0);
  return out;
}

/** Dynamic groups whose member sets a plan references (name stems, as in the member set names). */
export function dynamicGroups(plan: Plan): string[] {
  const g = new Set<string>();
  for (const f of [4, 6] as const) for (const s of plan.families[f].sets) if (s.kind.type === 'dynamic') g.add(groupStem(s.kind.group));
  return [...g].sort();
}
