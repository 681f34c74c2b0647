/**
 * Rebuild a Plan from the live `table inet cellwall` (the nft backend), read
 * with `nft -j list table inet cellwall`, for `diff --live --backend nft`.
 * The inverse of src/render/nft.ts, as far as the semantic diff needs it:
 *  - chains lose their `-v4`/`-v6` suffix and go to that family's plan; the
 *    base chain's `meta nfproto ipvN jump X-vN` names each family's top chain;
 *  - sets keep their names; their family comes from their type; a
 *    concatenation (addr . inet_proto . inet_service) is a net,port set;
 *  - a positive list:set match was flattened into one rule per member: each
 *    comes back as its own rule (same verdicts, as the rules are adjacent);
 *    a negative one (all members negated in one rule) comes back as a list
 *    set of those members, negated.
 * Descriptions, comments and counters are not rebuilt.
 */
import { AddrSet, type Family } from '../core/index.js';
import { CellwallError } from '../errors.js';
import type { FamilyPlan, Plan, PlanChain, PlanMatch, PlanRule, PlanSet, PlanTarget, SetMatch } from '../compile/plan.js';
import type { PortRange } from '../policy/model.js';
import { NFT_BASE_CHAIN } from '../render/nft.js';
import { elemText } from '../state/nft.js';

type Json = Record<string, unknown>;

/** icmp / icmpv6 type names nft prints, by number (the ones a policy can name; numbers pass through) */
const ICMP_TYPES: Record<string, number> = {
  'echo-reply': 0, 'destination-unreachable': 3, 'source-quench': 4, redirect: 5, 'echo-request': 8,
  'router-advertisement': 9, 'router-solicitation': 10, 'time-exceeded': 11, 'parameter-problem': 12,
  'timestamp-request': 13, 'timestamp-reply': 14, 'info-request': 15, 'info-reply': 16,
  'address-mask-request': 17, 'address-mask-reply': 18,
};
const ICMPV6_TYPES: Record<string, number> = {
  'destination-unreachable': 1, 'packet-too-big': 2, 'time-exceeded': 3, 'parameter-problem': 4,
  'echo-request': 128, 'echo-reply': 129, 'mld-listener-query': 130, 'mld-listener-report': 131,
  'mld-listener-done': 132, 'mld-listener-reduction': 132, 'nd-router-solicit': 133, 'nd-router-advert': 134,
  'nd-neighbor-solicit': 135, 'nd-neighbor-advert': 136, 'nd-redirect': 137, 'router-renumbering': 138,
  'ind-neighbor-solicit': 141, 'ind-neighbor-advert': 142, 'mld2-listener-report': 143,
};
/** icmp codes nft prints by name (port-unreachable etc.) */
const ICMP_CODES: Record<string, number> = {
  'net-unreachable': 0, 'host-unreachable': 1, 'prot-unreachable': 2, 'port-unreachable': 3, 'frag-needed': 4,
  'net-prohibited': 9, 'host-prohibited': 10, 'admin-prohibited': 13, 'no-route': 0, 'addr-unreachable': 3,
};

function num(v: unknown, names: Record<string, number>, where: string): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  if (typeof v === 'string' && v in names) return names[v];
  throw new CellwallError(`${where}: unsupported value ${JSON.stringify(v)}`);
}

function portRanges(v: unknown, where: string): PortRange[] {
  if (typeof v === 'number') return [{ from: v, to: v }];
  const o = v as Json;
  if (o && Array.isArray(o.range)) return [{ from: Number(o.range[0]), to: Number(o.range[1]) }];
  if (o && Array.isArray(o.set)) return (o.set as unknown[]).flatMap((x) => portRanges(x, where));
  throw new CellwallError(`${where}: unsupported port ${JSON.stringify(v)}`);
}

const famOfChain = (name: string): { base: string; family: Family } | null => {
  const m = /^(.+)-v([46])$/.exec(name);
  return m ? { base: m[1], family: Number(m[2]) as Family } : null;
};

interface NftPlanOptions { segment?: string; what?: string }

/** `nft -j list table inet cellwall` output -> Plan */
export function planFromNftJson(json: string, opts: NftPlanOptions = {}): Plan {
  const what = opts.what ?? 'live nft table';
  let items: Json[];
  try {
    items = (JSON.parse(json) as { nftables?: Json[] }).nftables ?? [];
  } catch (e) {
    throw new CellwallError(`${what}: nft -j output is not JSON: ${(e as Error).message}`);
  }
  const sets = { 4: [] as PlanSet[], 6: [] as PlanSet[] };
  const chainOrder: string[] = [];
  const rulesOf = new Map<string, Json[][]>();
  for (const it of items) {
    if (it.set) planSetOf(it.set as Json, sets, what);
    else if (it.chain) {
      const name = (it.chain as Json).name as string;
      chainOrder.push(name);
      rulesOf.set(name, []);
    } else if (it.rule) {
      const r = it.rule as Json;
      const list = rulesOf.get(r.chain as string) ?? rulesOf.set(r.chain as string, []).get(r.chain as string)!;
      list.push((r.expr as Json[]) ?? []);
    }
  }
  // the base chain's jumps name each family's top chain
  const tops: Partial<Record<Family, string>> = {};
  for (const expr of rulesOf.get(NFT_BASE_CHAIN) ?? []) {
    const jump = expr.find((e) => e.jump || e.goto) as Json | undefined;
    const target = jump ? (((jump.jump ?? jump.goto) as Json).target as string) : undefined;
    const fc = target ? famOfChain(target) : null;
    if (!fc) continue;
    if (tops[fc.family] && tops[fc.family] !== fc.base) {
      throw new CellwallError(`${what}: IPv${fc.family}: ${NFT_BASE_CHAIN} jumps to several cellwall chains (${tops[fc.family]}, ${fc.base}); diff one segment at a time`);
    }
    tops[fc.family] = fc.base;
  }
  let enforce = false;
  const fam = (family: Family): FamilyPlan => {
    const chains: PlanChain[] = [];
    const byName = new Map([...sets[4], ...sets[6]].map((s) => [s.name, s]));
    const extra: PlanSet[] = [];
    for (const name of chainOrder) {
      const fc = famOfChain(name);
      if (!fc || fc.family !== family) continue;
      const where = `${what}: chain ${name}`;
      const rules = (rulesOf.get(name) ?? []).map((expr) => {
        const r = ruleOf(expr, family, byName, extra, where);
        if (r.kernel === 'accept') enforce = true;
        return r.rule;
      });
      chains.push({ name: fc.base, role: fc.base === tops[family] ? 'top' : 'phase', rules });
    }
    const top = tops[family] ?? '';
    if (!top && chains.length) throw new CellwallError(`${what}: IPv${family}: no jump from chain ${NFT_BASE_CHAIN} into a cellwall chain`);
    // the top chain first, as compile orders them
    chains.sort((a, b) => Number(b.role === 'top') - Number(a.role === 'top'));
    return { family, top, chains, sets: [...sets[family], ...extra] };
  };
  const families = { 4: fam(4), 6: fam(6) };
  return {
    segment: opts.segment ?? '(live)', mode: enforce ? 'enforce' : 'tighten', policyFile: what, policyHash: '', cellwallVersion: '',
    jumpComment: '', families,
    stats: { asgRulesBound: 0, asgRulesShadowed: 0, setsShared: 0, chainsMerged: 0, cidrsIn: 0, cidrsOut: 0 },
  };
}

function planSetOf(s: Json, sets: Record<Family, PlanSet[]>, what: string): void {
  const name = s.name as string;
  const type = s.type;
  const types = Array.isArray(type) ? (type as string[]) : [type as string];
  const family: Family = types[0] === 'ipv6_addr' ? 6 : 4;
  if (types[0] !== 'ipv4_addr' && types[0] !== 'ipv6_addr') throw new CellwallError(`${what}: set ${name}: unsupported type ${JSON.stringify(type)}`);
  const elems = ((s.elem as unknown[]) ?? []).map(elemText);
  const base = { name, family, entries: elems.length, hashsize: 0, maxelem: 0, what: name, locs: [] };
  const dyn = /^cw-d-(.+)-([rs])[46]$/.exec(name);
  if (dyn) {
    sets[family].push({ ...base, kind: { type: 'dynamic', group: dyn[1], phase: dyn[2] === 'r' ? 'running' : 'staging' } });
    return;
  }
  if (types.length === 1) {
    sets[family].push({ ...base, kind: { type: 'net', addrs: elems.length ? AddrSet.of(elems) : AddrSet.empty() } });
    return;
  }
  if (types.length !== 3 || types[1] !== 'inet_proto' || types[2] !== 'inet_service') {
    throw new CellwallError(`${what}: set ${name}: unsupported type ${types.join(' . ')}`);
  }
  const byKey = new Map<string, { proto: 'tcp' | 'udp'; port: number; entries: string[] }>();
  for (const e of elems) {
    const [addr, proto, port] = e.split(' . ');
    if (proto !== 'tcp' && proto !== 'udp') throw new CellwallError(`${what}: set ${name}: unsupported element ${e}`);
    const [from, to] = port.split('-').map(Number);
    for (let p = from; p <= (to ?? from); p++) {
      const key = `${proto}:${p}`;
      let x = byKey.get(key);
      if (!x) byKey.set(key, (x = { proto, port: p, entries: [] }));
      x.entries.push(addr);
    }
  }
  sets[family].push({ ...base, kind: { type: 'net,port', byPort: [...byKey.values()].map((x) => ({ proto: x.proto, port: x.port, addrs: AddrSet.of(x.entries) })) } });
}

/** the key of a set lookup: `saddr`/`daddr`, or `daddr-port` for `ip daddr . meta l4proto . th dport` */
function lookupKey(left: Json): 'saddr' | 'daddr' | 'daddr-port' | null {
  const p = left.payload as Json | undefined;
  if (p && (p.protocol === 'ip' || p.protocol === 'ip6') && (p.field === 'saddr' || p.field === 'daddr')) return p.field as 'saddr' | 'daddr';
  const c = left.concat as Json[] | undefined;
  if (c && c.length === 3 && (c[0].payload as Json | undefined)?.field === 'daddr') return 'daddr-port';
  return null;
}

function ruleOf(expr: Json[], family: Family, sets: Map<string, PlanSet>, extra: PlanSet[], where: string): { rule: PlanRule; kernel?: string } {
  const match: PlanMatch = {};
  const neg: Record<'src' | 'dst', string[]> = { src: [], dst: [] };
  let target: PlanTarget | undefined;
  let kernel: string | undefined;
  const text = JSON.stringify(expr);
  const fail = (what: string): never => { throw new CellwallError(`${where}: unsupported ${what}: ${text}`); };
  for (const e of expr) {
    if (e.match) {
      const m = e.match as { op: string; left: Json; right: unknown };
      const left = m.left;
      const key = lookupKey(left);
      if (key && typeof m.right === 'string' && m.right.startsWith('@')) {
        const set = m.right.slice(1);
        if (!sets.has(set)) fail(`reference to unknown set ${set}`);
        const dir = key === 'saddr' ? 'src' : 'dst';
        if (m.op === '!=') neg[dir].push(set);
        else if (m.op === '==' || m.op === 'in') {
          if (match[dir]) fail(`second positive ${dir} set match`);
          match[dir] = { set };
        } else fail(`operator ${m.op}`);
        continue;
      }
      const meta = left.meta as Json | undefined;
      const payload = left.payload as Json | undefined;
      const ct = left.ct as Json | undefined;
      if (meta?.key === 'l4proto' && m.op === '==') {
        const p = m.right;
        if (p === 'tcp' || p === 'udp') match.proto = p;
        else if (p === 'icmp' || p === 1) match.proto = 'icmp';
        else if (p === 'ipv6-icmp' || p === 'icmpv6' || p === 58) match.proto = 'icmpv6';
        else fail(`protocol ${JSON.stringify(p)}`);
      } else if (meta?.key === 'nfproto') {
        // the base chain's family split: not a match of a cellwall chain
      } else if (payload && (payload.protocol === 'tcp' || payload.protocol === 'udp') && payload.field === 'dport' && (m.op === '==' || m.op === 'in')) {
        match.proto = payload.protocol;
        match.dports = portRanges(m.right, where);
      } else if (payload && (payload.protocol === 'icmp' || payload.protocol === 'icmpv6') && m.op === '==') {
        match.proto = family === 4 ? 'icmp' : 'icmpv6';
        const icmp = match.icmp ?? { type: -1, code: -1 };
        if (payload.field === 'type') icmp.type = num(m.right, family === 4 ? ICMP_TYPES : ICMPV6_TYPES, where);
        else if (payload.field === 'code') icmp.code = num(m.right, ICMP_CODES, where);
        else fail(`icmp field ${String(payload.field)}`);
        match.icmp = icmp;
      } else if (ct?.key === 'state') {
        const st = (Array.isArray(m.right) ? m.right : [m.right]).map(String).sort().join(',');
        if (st !== 'established,related') fail(`ct state ${st}`);
        match.ctstate = 'ESTABLISHED,RELATED';
      } else fail('match');
    } else if ('counter' in e || 'limit' in e) {
      // counters and the log rate limit do not change a verdict
    } else if (e.log) {
      target = { kind: 'log', prefix: String((e.log as Json).prefix ?? '') };
      kernel = 'log';
    } else if ('accept' in e || 'return' in e) {
      target = { kind: 'allow' };
      kernel = 'accept' in e ? 'accept' : 'return';
    } else if ('drop' in e) {
      target = { kind: 'drop' };
    } else if (e.reject !== undefined) {
      const r = (e.reject ?? {}) as Json;
      target = { kind: 'reject', with: r.type === 'tcp reset' ? 'tcp-reset' : 'port-unreachable' };
    } else if (e.goto) {
      const t = famOfChain(((e.goto as Json).target as string) ?? '');
      if (!t) fail('goto target');
      target = { kind: 'goto', chain: t!.base };
    } else if (e.jump) {
      fail('jump into a chain (cellwall uses goto)');
    } else fail('statement');
  }
  for (const dir of ['src', 'dst'] as const) {
    if (!neg[dir].length) continue;
    if (match[dir]) fail(`positive and negative ${dir} set matches in one rule`);
    let set = neg[dir][0];
    if (neg[dir].length > 1) {
      // a negated list:set: every member negated in one rule
      set = `nft-neg-${dir}-${neg[dir].join('+')}`;
      if (!extra.some((s) => s.name === set)) {
        extra.push({ name: set, family, kind: { type: 'list', members: neg[dir] }, entries: neg[dir].length, hashsize: 0, maxelem: 0, what: set, locs: [] });
        sets.set(set, extra[extra.length - 1]);
      }
    }
    match[dir] = { set, negate: true } satisfies SetMatch;
  }
  if (!target) fail('rule without a verdict');
  return { rule: { match, target: target!, step: 0, what: text, locs: [] }, ...(kernel ? { kernel } : {}) };
}

/** one line per set element (`NAME ELEMENT`) of the sets a plan fills: the text part of `diff --live --backend nft --text` */
export function nftSetLines(plan: Plan): string[] {
  const out: string[] = [];
  for (const f of [4, 6] as const) {
    const fp = plan.families[f];
    const byName = new Map(fp.sets.map((s) => [s.name, s]));
    // only the sets rules use: a live table may still hold an older policy's sets
    const used = new Set<string>();
    const use = (name: string): void => {
      if (used.has(name)) return;
      used.add(name);
      const s = byName.get(name);
      if (s?.kind.type === 'list') s.kind.members.forEach(use);
    };
    for (const c of fp.chains) for (const r of c.rules) for (const m of [r.match.src, r.match.dst]) if (m) use(m.set);
    for (const s of fp.sets) {
      if (!used.has(s.name)) continue;
      const k = s.kind;
      if (k.type === 'net') for (const c of k.addrs.toCidrs(f)) out.push(`${s.name} ${c}`);
      else if (k.type === 'net,port') for (const e of k.byPort) for (const c of e.addrs.toCidrs(f)) out.push(`${s.name} ${c} . ${e.proto} . ${e.port}`);
    }
  }
  return out.sort();
}
