/**
 * Semantic diff of two compiled Plans of one segment: which traffic changes
 * verdict (allow / deny / untouched), per source class and phase, as
 * destination CIDRs x protocol/ports. Exact (interval arithmetic on AddrSets,
 * elementary port classes), never sampled.
 *
 * Source classes are matched by meaning: the dynamic membership by group name
 * and phase, source addresses by content (never by content-addressed chain or
 * set names). Each combination of dynamic groups (each group alone when there
 * are more than MAX_COMBINED_GROUPS) is checked in each phase, plus a source in
 * no dynamic group.
 */
import { AddrSet, type Family } from '../core/index.js';
import type { Plan } from '../compile/plan.js';
import { groupStem } from '../policy/names.js';
import { dynamicGroups, evaluateRegion, protoClasses, type Membership, type Piece, type ProtoClass, type Verdict } from './symbolic.js';

export interface SemanticChange {
  family: Family;
  /** `running`/`staging` member of dynamic group G, or `no dynamic group` */
  source: string;
  /** source addresses (CIDRs) the change applies to */
  src: string[];
  /** false: new connections; true: packets of ESTABLISHED/RELATED connections (replies) */
  established: boolean;
  /** protocol/port classes, merged, e.g. `tcp 443`, `tcp 8000-8080`, `icmp 8/0` */
  services: string[];
  dst: string[];
  from: Verdict;
  to: Verdict;
}

const VERDICTS: Verdict[] = ['allow', 'deny', 'untouched'];
/** up to this many dynamic groups, sources in several groups at once are checked too (2^n - 1 combinations) */
export const MAX_COMBINED_GROUPS = 3;

export function memberships(a: Plan, b: Plan): Membership[] {
  const groups = [...new Set([...dynamicGroups(a), ...dynamicGroups(b)])].sort();
  const out: Membership[] = [{ phase: 'running', groups: [] }];
  // every combination of dynamic groups while that stays small, else each group alone
  const combos: string[][] = groups.length <= MAX_COMBINED_GROUPS
    ? Array.from({ length: (1 << groups.length) - 1 }, (_, i) => groups.filter((_, b) => ((i + 1) >> b) & 1))
    : groups.map((g) => [g]);
  for (const gs of combos) for (const phase of ['running', 'staging'] as const) out.push({ phase, groups: gs });
  return out;
}

export function membershipLabel(m: Membership): string {
  return m.groups.length ? `${m.phase} member of ${m.groups.map(groupStem).sort().join('+')}` : 'no dynamic group';
}

/** Refine the source regions of both sides into disjoint atoms (each region is a union of atoms). */
function srcAtoms(regions: AddrSet[]): AddrSet[] {
  let atoms: AddrSet[] = [];
  for (const r of regions) {
    if (r.isEmpty()) continue;
    const next: AddrSet[] = [];
    let left = r;
    for (const a of atoms) {
      const i = a.intersect(r);
      const o = a.difference(r);
      if (!i.isEmpty()) next.push(i);
      if (!o.isEmpty()) next.push(o);
      left = left.difference(a);
    }
    if (!left.isEmpty()) next.push(left);
    atoms = next;
  }
  return atoms;
}

function byVerdict(pieces: Piece[], atom: AddrSet): Record<Verdict, AddrSet> {
  const r: Record<Verdict, AddrSet> = { allow: AddrSet.empty(), deny: AddrSet.empty(), untouched: AddrSet.empty() };
  for (const p of pieces) if (p.src.contains(atom)) r[p.verdict] = r[p.verdict].union(p.dst);
  return r;
}

interface RawChange { key: string; cls: ProtoClass; change: Omit<SemanticChange, 'services'> }

/** Differences between two plans of the same segment; empty when they mean the same. */
export function diffPlans(oldPlan: Plan, newPlan: Plan): SemanticChange[] {
  const raw: RawChange[] = [];
  for (const family of [4, 6] as const) {
    const classes = protoClasses([oldPlan.families[family], newPlan.families[family]], family);
    for (const m of memberships(oldPlan, newPlan)) {
      for (const established of [false, true]) {
        for (const cls of classes) {
          const a = evaluateRegion(oldPlan, family, m, established, cls);
          const b = evaluateRegion(newPlan, family, m, established, cls);
          for (const atom of srcAtoms([...a, ...b].map((p) => p.src))) {
            const va = byVerdict(a, atom);
            const vb = byVerdict(b, atom);
            for (const from of VERDICTS) {
              for (const to of VERDICTS) {
                if (from === to) continue;
                const d = va[from].intersect(vb[to]);
                if (d.isEmpty()) continue;
                const src = atom.toCidrs(family);
                const dst = d.toCidrs(family);
                const source = membershipLabel(m);
                raw.push({
                  key: JSON.stringify([family, source, established, src, dst, from, to]),
                  cls,
                  change: { family, source, src, established, dst, from, to },
                });
              }
            }
          }
        }
      }
    }
  }
  // merge the same change over several protocol/port classes, adjacent port classes into one range
  const merged = new Map<string, { change: RawChange['change']; classes: ProtoClass[] }>();
  for (const r of raw) {
    const cur = merged.get(r.key);
    if (cur) cur.classes.push(r.cls);
    else merged.set(r.key, { change: r.change, classes: [r.cls] });
  }
  // then the same change from several source atoms into one source range
  const bySrc = new Map<string, { change: SemanticChange; src: AddrSet }>();
  for (const { change, classes } of merged.values()) {
    const c = { ...change, services: serviceLabels(classes) };
    const key = JSON.stringify([c.family, c.source, c.established, c.services, c.dst, c.from, c.to]);
    const cur = bySrc.get(key);
    if (cur) cur.src = cur.src.union(AddrSet.of(c.src));
    else bySrc.set(key, { change: c, src: AddrSet.of(c.src) });
  }
  return [...bySrc.values()].map(({ change, src }) => ({ ...change, src: src.toCidrs(change.family) }));
}

function serviceLabels(classes: ProtoClass[]): string[] {
  const out: string[] = [];
  for (const proto of ['tcp', 'udp'] as const) {
    const ranges: Array<[number, number]> = [];
    for (const c of classes) {
      if (c.proto !== proto) continue;
      const last = ranges[ranges.length - 1];
      if (last && last[1] + 1 === c.from) last[1] = c.to!;
      else ranges.push([c.from!, c.to!]);
    }
    if (ranges.length === 1 && ranges[0][0] === 0 && ranges[0][1] === 65535) out.push(`${proto} all ports`);
    else if (ranges.length) out.push(`${proto} ${ranges.map(([f, t]) => (f === t ? `${f}` : `${f}-${t}`)).join(',')}`);
  }
  for (const c of classes) if (c.proto !== 'tcp' && c.proto !== 'udp') out.push(c.label);
  return out;
}

export function formatChange(c: SemanticChange): string {
  const est = c.established ? ' (established/related)' : '';
  const src = c.src.length > 4 ? `${c.src.slice(0, 4).join(',')},+${c.src.length - 4}` : c.src.join(',');
  const dst = c.dst.length > 8 ? `${c.dst.slice(0, 8).join(',')},+${c.dst.length - 8} more` : c.dst.join(',');
  return `IPv${c.family} ${c.source} [src ${src}]${est}: ${c.services.join('; ')} to ${dst}: ${c.from} -> ${c.to}`;
}
