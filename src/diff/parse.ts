/**
 * Rebuild a Plan from payload text: an `ipset restore` payload or `ipset save`
 * output, and `iptables-restore` payloads or `iptables-save` output (the CW-
 * chains and the FORWARD jump into them). Only what the semantic diff needs is
 * rebuilt (matches, targets, set contents); descriptions and source locations
 * are not. Built on the state parsers of src/state.
 */
import { AddrSet, type Family } from '../core/index.js';
import { CellwallError } from '../errors.js';
import type { FamilyPlan, Plan, PlanChain, PlanMatch, PlanRule, PlanSet, PlanTarget, SetMatch } from '../compile/plan.js';
import type { PortRange } from '../policy/model.js';
import { cwSets, isDynamicSet, parseIpset, type IpSetState } from '../state/ipset.js';
import { cwPartOf, parseSave, ruleTarget, tokenize, type FamilyState } from '../state/iptables.js';

export interface PayloadTexts {
  ipset: string;
  v4: string;
  v6: string;
}

export function planFromPayloads(t: PayloadTexts, segment = '(payloads)', what = 'payloads'): Plan {
  const sets = cwSets(parseIpset(t.ipset, `${what}: ipset`).sets);
  // a payload inserts its FORWARD jump (-I FORWARD 1): read it like an appended rule
  const asSave = (text: string): string => text.replace(/^-I\s+(\S+)(?:\s+\d+)?\s/gm, '-A $1 ');
  const fam = (text: string, f: Family): FamilyPlan => familyFromState(cwPartOf(parseSave(asSave(text)).get('filter'), f), f, sets, what);
  const families = { 4: fam(t.v4, 4), 6: fam(t.v6, 6) };
  const enforce = [families[4], families[6]].some((fp) => fp.chains.some((c) => c.rules.some((r) => (r as ParsedRule).kernel === 'ACCEPT')));
  return {
    segment, mode: enforce ? 'enforce' : 'tighten', policyFile: what, policyHash: '', cellwallVersion: '',
    jumpComment: '', families,
    stats: { asgRulesBound: 0, asgRulesShadowed: 0, setsShared: 0, chainsMerged: 0, cidrsIn: 0, cidrsOut: 0 },
  };
}

interface ParsedRule extends PlanRule { kernel?: string }

function familyFromState(st: FamilyState, family: Family, sets: Map<string, IpSetState>, what: string): FamilyPlan {
  const tops = [...new Set(st.jumps.filter((j) => j.host === 'FORWARD').map((j) => ruleTarget(j.spec)!))];
  if (tops.length > 1) throw new CellwallError(`${what}: IPv${family}: FORWARD jumps to several cellwall chains (${tops.join(', ')}); diff one segment at a time`);
  const top = tops[0] ?? '';
  const chains: PlanChain[] = [...st.chains].map(([name, rules]) => ({
    name, role: name === top ? 'top' : 'phase',
    rules: rules.map((r) => parseRule(r.spec, `${what}: IPv${family} chain ${name}`)),
  }));
  if (!top && chains.length) throw new CellwallError(`${what}: IPv${family}: no FORWARD jump into a CW- chain`);
  const planSets: PlanSet[] = [...sets.values()].map((s) => planSet(s, family));
  return { family, top, chains, sets: planSets };
}

function planSet(s: IpSetState, family: Family): PlanSet {
  const base = { name: s.name, family, entries: s.members.length, hashsize: 0, maxelem: 0, what: s.name, locs: [] };
  const dyn = /^cw-d-(.+)-([rs])[46]$/.exec(s.name);
  if (isDynamicSet(s.name) && dyn) return { ...base, kind: { type: 'dynamic', group: dyn[1], phase: dyn[2] === 'r' ? 'running' : 'staging' } };
  const first = s.members.map((m) => m.split(/\s+/)[0]);
  if (s.type === 'list:set') return { ...base, kind: { type: 'list', members: first } };
  if (s.type === 'hash:net,port') {
    const byKey = new Map<string, { proto: 'tcp' | 'udp'; port: number; entries: string[] }>();
    for (const m of first) {
      const [addr, pp] = m.split(',');
      const [proto, port] = pp.includes(':') ? pp.split(':') : ['tcp', pp];
      if (proto !== 'tcp' && proto !== 'udp') throw new CellwallError(`ipset ${s.name}: unsupported member ${m}`);
      const key = `${proto}:${port}`;
      let e = byKey.get(key);
      if (!e) byKey.set(key, (e = { proto, port: Number(port), entries: [] }));
      e.entries.push(addr);
    }
    return { ...base, kind: { type: 'net,port', byPort: [...byKey.values()].map((e) => ({ proto: e.proto, port: e.port, addrs: AddrSet.of(e.entries) })) } };
  }
  if (s.type === 'hash:net' || s.type === 'hash:ip') return { ...base, kind: { type: 'net', addrs: first.length ? AddrSet.of(first) : AddrSet.empty() } };
  throw new CellwallError(`ipset ${s.name}: unsupported set type ${s.type}`);
}

function ports(text: string): PortRange[] {
  return text.split(',').map((p) => {
    const [a, b] = p.split(':');
    return { from: Number(a), to: Number(b ?? a) };
  });
}

/** One rule (text after `-A CHAIN`) in Plan terms. */
export function parseRule(spec: string, where: string): ParsedRule {
  const t = tokenize(spec);
  const match: PlanMatch = {};
  let target: PlanTarget | undefined;
  let kernel: string | undefined;
  let negate = false;
  for (let i = 0; i < t.length; i++) {
    const w = t[i];
    const next = () => {
      const v = t[++i];
      if (v === undefined) throw new CellwallError(`${where}: rule ends after ${w}: ${spec}`);
      return v;
    };
    switch (w) {
      case '!': negate = true; continue;
      case '-m': next(); break;
      case '-p': case '--protocol': {
        const p = next();
        match.proto = p === 'ipv6-icmp' || p === 'icmp6' ? 'icmpv6' : (p as PlanMatch['proto']);
        break;
      }
      case '--match-set': {
        const set = next();
        const dirs = next();
        const sm: SetMatch = negate ? { set, negate: true } : { set };
        if (dirs.startsWith('src')) match.src = sm;
        else match.dst = sm;
        break;
      }
      case '--dport': case '--dports': case '--destination-port': case '--destination-ports': match.dports = ports(next()); break;
      case '--icmp-type': case '--icmpv6-type': {
        const [ty, code] = next().split('/');
        match.icmp = { type: ty === 'any' ? -1 : Number(ty), code: code === undefined ? -1 : Number(code) };
        break;
      }
      case '--ctstate': case '--state': {
        const s = next().split(',').sort().join(',');
        if (s !== 'ESTABLISHED,RELATED') throw new CellwallError(`${where}: unsupported ctstate ${s}: ${spec}`);
        match.ctstate = 'ESTABLISHED,RELATED';
        break;
      }
      case '--comment': case '--limit': case '--limit-burst': case '--log-level': next(); break;
      case '--log-prefix': if (target?.kind === 'log') target.prefix = next(); else next(); break;
      case '--reject-with': {
        const v = next();
        if (target?.kind === 'reject') target.with = v === 'tcp-reset' ? 'tcp-reset' : 'port-unreachable';
        break;
      }
      case '-g': case '--goto': target = { kind: 'goto', chain: next() }; break;
      case '-j': case '--jump': {
        const j = next();
        kernel = j;
        if (j === 'RETURN' || j === 'ACCEPT') target = { kind: 'allow' };
        else if (j === 'REJECT') target = { kind: 'reject', with: 'port-unreachable' };
        else if (j === 'DROP') target = { kind: 'drop' };
        else if (j === 'LOG') target = { kind: 'log', prefix: '' };
        else if (j.startsWith('CW-')) throw new CellwallError(`${where}: -j into a cellwall chain (cellwall uses -g): ${spec}`);
        else throw new CellwallError(`${where}: unsupported target ${j}: ${spec}`);
        break;
      }
      default:
        if (w.startsWith('-')) throw new CellwallError(`${where}: unsupported match ${w}: ${spec}`);
    }
    negate = false;
  }
  if (!target) throw new CellwallError(`${where}: rule without a target: ${spec}`);
  return { match, target, step: 0, what: spec, locs: [], ...(kernel ? { kernel } : {}) };
}
