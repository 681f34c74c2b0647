/**
 * The plan: what must change to bring the live CW- part and cw- sets to the
 * desired state, at the level of chains, rules, jumps and set entries; and
 * the exact kernel inputs (ipset restore script, iptables-restore --noflush
 * transaction per family) that carry it out.
 */
import { CellwallError } from '../errors.js';
import { sha256 } from '../core/sha256.js';
import type { CellState } from '../state/index.js';
import { quoteWord, type CwJump, type CwRule, type FamilyState, type IpFamily } from '../state/iptables.js';
import type { IpSetState } from '../state/ipset.js';

export interface ChainChange { name: string; added: string[]; removed: string[]; reordered: boolean }

export interface FamilyPlan {
  family: IpFamily;
  create: ChainChange[];
  replace: ChainChange[];
  remove: ChainChange[];
  /** the FORWARD jumps must be rewritten: live ones removed, desired ones inserted first */
  jumps: { remove: CwJump[]; insert: CwJump[] } | null;
}

export interface SetsPlan {
  create: { name: string; members: number; dynamic: boolean }[];
  swap: { name: string; added: string[]; removed: string[] }[];
  destroy: string[];
}

export interface Plan { v4: FamilyPlan; v6: FamilyPlan; sets: SetsPlan; empty: boolean }

/** "desiredChainHash=liveChainHash" pairs learned at verify time (see apply) */
export type Equivalences = Set<string>;

export const chainHash = (rules: CwRule[]): string => sha256(rules.map((r) => r.norm).join('\n'));

function diffRules(want: CwRule[], have: CwRule[]): ChainChange & { same: boolean } {
  const a = want.map((r) => r.norm);
  const b = have.map((r) => r.norm);
  const same = a.length === b.length && a.every((x, i) => x === b[i]);
  const count = new Map<string, number>();
  for (const x of b) count.set(x, (count.get(x) ?? 0) + 1);
  const added: string[] = [];
  for (const x of a) { const c = count.get(x) ?? 0; if (c > 0) count.set(x, c - 1); else added.push(x); }
  const removed: string[] = [];
  for (const [x, c] of count) for (let i = 0; i < c; i++) removed.push(x);
  return { name: '', added, removed, reordered: !same && added.length === 0 && removed.length === 0, same };
}

export function planFamily(family: IpFamily, want: FamilyState, have: FamilyState, eq: Equivalences = new Set()): FamilyPlan {
  const p: FamilyPlan = { family, create: [], replace: [], remove: [], jumps: null };
  for (const [name, rules] of want.chains) {
    const live = have.chains.get(name);
    if (!live) { p.create.push({ name, added: rules.map((r) => r.norm), removed: [], reordered: false }); continue; }
    const d = diffRules(rules, live);
    if (d.same || eq.has(`${chainHash(rules)}=${chainHash(live)}`)) continue;
    p.replace.push({ name, added: d.added, removed: d.removed, reordered: d.reordered });
  }
  for (const [name, rules] of have.chains) {
    if (!want.chains.has(name)) p.remove.push({ name, added: [], removed: rules.map((r) => r.norm), reordered: false });
  }
  // jumps: per host chain, the live jumps must be exactly the desired ones and open the chain
  const hosts = new Set([...want.jumps.map((j) => j.host), ...have.jumps.map((j) => j.host)]);
  let rewrite = false;
  for (const h of hosts) {
    const w = want.jumps.filter((j) => j.host === h);
    const l = have.jumps.filter((j) => j.host === h);
    if (w.length !== l.length || l.some((j, i) => j.top === false || j.norm !== w[i]!.norm)) rewrite = true;
  }
  if (rewrite) p.jumps = { remove: have.jumps, insert: want.jumps };
  return p;
}

export function planSets(want: Map<string, IpSetState>, have: Map<string, IpSetState>): SetsPlan {
  const p: SetsPlan = { create: [], swap: [], destroy: [] };
  for (const [name, s] of want) {
    const live = have.get(name);
    if (!live) { p.create.push({ name, members: s.members.length, dynamic: s.dynamic }); continue; }
    if (s.dynamic) continue; // members are runtime state; never flushed
    const same = live.header === s.header && live.membersNorm.length === s.membersNorm.length && live.membersNorm.every((m, i) => m === s.membersNorm[i]);
    if (same) continue;
    if (typeOf(live) !== typeOf(s)) {
      throw new CellwallError(`set ${name} changes type (${typeOf(live)} -> ${typeOf(s)}): it cannot be swapped atomically; content-addressed set names avoid this, destroy it by hand after removing its users`);
    }
    const liveM = new Set(live.membersNorm);
    const wantM = new Set(s.membersNorm);
    p.swap.push({ name, added: s.membersNorm.filter((m) => !liveM.has(m)), removed: live.membersNorm.filter((m) => !wantM.has(m)) });
  }
  for (const name of have.keys()) if (!want.has(name)) p.destroy.push(name);
  return p;
}

const typeOf = (s: IpSetState): string => `${s.type} ${/family (\S+)/.exec(s.header)?.[1] ?? ''}`.trim();

export function makePlan(want: CellState, have: CellState, eq?: Equivalences): Plan {
  const v4 = planFamily(4, want.v4, have.v4, eq);
  const v6 = planFamily(6, want.v6, have.v6, eq);
  const sets = planSets(want.sets, have.sets);
  return { v4, v6, sets, empty: familyEmpty(v4) && familyEmpty(v6) && sets.create.length === 0 && sets.swap.length === 0 && sets.destroy.length === 0 };
}

export const familyEmpty = (f: FamilyPlan): boolean => f.create.length === 0 && f.replace.length === 0 && f.remove.length === 0 && f.jumps === null;

export type Origin = { file: string; line: number } | undefined;
export interface Script { text: string; origins: Origin[] }

function script(): { add(line: string, o?: Origin): void; done(): Script } {
  const lines: string[] = [];
  const origins: Origin[] = [];
  return { add(line, o) { lines.push(line); origins.push(o); }, done: () => ({ text: lines.join('\n') + '\n', origins }) };
}

/** step 1: new sets, and changed same-named sets through a temp set + swap */
export function setsScript(want: Map<string, IpSetState>, have: Map<string, IpSetState>, p: SetsPlan): Script {
  const s = script();
  const createLine = (name: string, st: IpSetState, exist: boolean): string =>
    ['create', name, st.type, ...st.options, ...(exist ? ['-exist'] : [])].join(' ');
  for (const c of p.create) {
    const st = want.get(c.name)!;
    s.add(createLine(c.name, st, st.dynamic), st.origin);
    for (const m of st.members) s.add(`add ${c.name} ${m}${st.dynamic ? ' -exist' : ''}`, st.origin);
  }
  for (const sw of p.swap) {
    const st = want.get(sw.name)!;
    const tmp = tempSetName(sw.name);
    if (have.has(tmp)) s.add(`destroy ${tmp}`);
    s.add(createLine(tmp, st, false), st.origin);
    for (const m of st.members) s.add(`add ${tmp} ${m}`, st.origin);
    s.add(`swap ${tmp} ${sw.name}`);
    s.add(`destroy ${tmp}`);
  }
  return s.done();
}

export const tempSetName = (name: string): string => `cw-tmp-${sha256(name).slice(0, 12)}`;

/** step 2: one iptables-restore --noflush transaction for a family, or null when nothing changes */
export function iptablesScript(want: FamilyState, have: FamilyState, p: FamilyPlan): Script | null {
  if (familyEmpty(p)) return null;
  const s = script();
  s.add('*filter');
  const changed = [...p.create, ...p.replace].map((c) => c.name);
  for (const n of changed) s.add(`:${n} - [0:0]`);
  for (const c of p.remove) s.add(`:${c.name} - [0:0]`); // flush before delete
  for (const n of changed) for (const r of want.chains.get(n)!) s.add(`-A ${n} ${r.spec}`, r.origin);
  if (p.jumps) {
    for (const j of p.jumps.remove) s.add(`-D ${j.host} ${j.spec}`);
    const hosts = [...new Set(p.jumps.insert.map((j) => j.host))];
    for (const h of hosts) {
      const list = p.jumps.insert.filter((j) => j.host === h);
      for (let i = list.length - 1; i >= 0; i--) s.add(`-I ${h} 1 ${list[i]!.spec}`, list[i]!.origin);
    }
  }
  for (const c of p.remove) s.add(`-X ${quoteWord(c.name)}`);
  s.add('COMMIT');
  return s.done();
}

/** Human-readable plan. */
export function formatPlan(p: Plan): string {
  if (p.empty) return 'no changes\n';
  const out: string[] = [];
  for (const f of [p.v4, p.v6]) {
    const fam = f.family === 4 ? 'ipv4' : 'ipv6';
    for (const c of f.create) out.push(`${fam}: + chain ${c.name} (${c.added.length} rules)`);
    for (const c of f.replace) {
      out.push(`${fam}: ~ chain ${c.name}${c.reordered ? ' (rules reordered)' : ''}`);
      for (const r of c.removed) out.push(`    - ${r}`);
      for (const r of c.added) out.push(`    + ${r}`);
    }
    for (const c of f.remove) out.push(`${fam}: - chain ${c.name} (${c.removed.length} rules)`);
    if (f.jumps) {
      for (const j of f.jumps.remove) out.push(`${fam}: - jump ${j.host} ${j.norm}`);
      for (const j of f.jumps.insert) out.push(`${fam}: + jump ${j.host} (first) ${j.norm}`);
    }
  }
  for (const c of p.sets.create) out.push(`ipset: + set ${c.name} (${c.members} entries${c.dynamic ? ', dynamic' : ''})`);
  for (const c of p.sets.swap) {
    out.push(`ipset: ~ set ${c.name} (swap: +${c.added.length} -${c.removed.length} entries)`);
    for (const m of c.removed.slice(0, 20)) out.push(`    - ${m}`);
    for (const m of c.added.slice(0, 20)) out.push(`    + ${m}`);
  }
  for (const n of p.sets.destroy) out.push(`ipset: - set ${n}`);
  return out.join('\n') + '\n';
}
