/**
 * Evaluate a compiled Plan for one packet, rule by rule, exactly as the
 * kernel walks the chains (first match, goto without return, LOG continues).
 * This is what `cellwall explain` reports, so explain shares the compiler's
 * truth instead of re-deriving the meaning.
 */
import { isIP } from 'node:net';
import { AddrSet, type Family } from '../core/index.js';
import { CellwallError, type SourceLoc } from '../errors.js';
import type { Phase } from '../policy/model.js';
import type { Plan, PlanChain, PlanMatch, PlanRule, PlanSet, Step } from './plan.js';

export type PacketProto = 'tcp' | 'udp' | 'icmp' | 'icmpv6';

export interface Packet {
  src: string;
  dst: string;
  proto: PacketProto;
  /** tcp/udp destination port */
  port?: number;
  /** icmp type/code (default: echo request) */
  type?: number;
  code?: number;
  /** part of an ESTABLISHED or RELATED connection (default: a new connection) */
  established?: boolean;
}

/** Dynamic group membership of an address (what `cellwall members add` put in the member sets). */
export interface Membership {
  phase: Phase;
  groups: string[];
}

export interface TraceEntry {
  chain: string;
  /** 1-based position in the chain, as `iptables -L --line-numbers` shows it */
  index: number;
  rule: PlanRule;
}

export interface Evaluation {
  family: Family;
  verdict: 'allow' | 'deny' | 'untouched';
  /** kernel target that decided (RETURN, ACCEPT, REJECT, DROP); RETURN for untouched packets too */
  target: 'RETURN' | 'ACCEPT' | 'REJECT' | 'DROP';
  rejectWith?: 'tcp-reset' | 'port-unreachable';
  /** SPEC §2 step that decided (null: untouched) */
  step: Step | null;
  /** the policy entries behind the decision */
  locs: SourceLoc[];
  /** the decisive rule's description */
  what: string;
  /** LOG prefixes the packet was logged with, in order */
  logged: string[];
  /** every rule that matched, in order */
  trace: TraceEntry[];
}

export function packetFamily(p: Packet): Family {
  const fs = isIP(p.src);
  const fd = isIP(p.dst);
  if (!fs) throw new CellwallError(`--src: not an IP address: ${JSON.stringify(p.src)}`);
  if (!fd) throw new CellwallError(`--dst: not an IP address: ${JSON.stringify(p.dst)}`);
  if (fs !== fd) throw new CellwallError(`--src ${p.src} and --dst ${p.dst} are of different address families`);
  return fs as Family;
}

const NO_GROUPS: Membership = { phase: 'running', groups: [] };

/** `members`: the source's dynamic groups; `dstMembers`: the destination's (an app container of a dynamic group) */
export function evaluatePlan(plan: Plan, pkt: Packet, members: Membership = NO_GROUPS, dstMembers: Membership = NO_GROUPS): Evaluation {
  const family = packetFamily(pkt);
  if ((pkt.proto === 'icmp' && family === 6) || (pkt.proto === 'icmpv6' && family === 4)) {
    throw new CellwallError(`--proto ${pkt.proto} does not exist for IPv${family} (use ${family === 6 ? 'icmpv6' : 'icmp'})`);
  }
  const fp = plan.families[family];
  const chains = new Map<string, PlanChain>(fp.chains.map((c) => [c.name, c]));
  const sets = new Map<string, PlanSet>(fp.sets.map((s) => [s.name, s]));
  const ctx: MatchCtx = {
    pkt, members, dstMembers, sets,
    srcSet: AddrSet.of([pkt.src]),
    dstSet: AddrSet.of([pkt.dst]),
    type: pkt.type ?? (pkt.proto === 'icmpv6' ? 128 : 8),
    code: pkt.code ?? 0,
  };
  const trace: TraceEntry[] = [];
  const logged: string[] = [];
  let chain = chains.get(fp.top)!;
  /** the rule that sent the packet to the current chain (decides the step of a deny) */
  let via: PlanRule | undefined;
  for (let hops = 0; hops < 64; hops++) {
    let next: PlanChain | undefined;
    for (let i = 0; i < chain.rules.length; i++) {
      const r = chain.rules[i];
      if (!matches(r.match, ctx)) continue;
      trace.push({ chain: chain.name, index: i + 1, rule: r });
      const t = r.target;
      if (t.kind === 'log') {
        logged.push(t.prefix);
        continue;
      }
      if (t.kind === 'goto') {
        next = chains.get(t.chain);
        if (!next) throw new Error(`plan: goto to unknown chain ${t.chain}`);
        via = r;
        break;
      }
      if (t.kind === 'allow' && chain.role === 'top' && !chain.rules.slice(i + 1).some((x) => matches(x.match, ctx))) {
        // an allow in the top chain (tighten: established RETURN) for a source no
        // classification rule takes: the same RETURN, but the packet is not governed
        return { family, verdict: 'untouched', target: 'RETURN', step: null, locs: [], what: 'source not governed', logged, trace };
      }
      const decided = chain.role === 'deny' && via ? via : r;
      const base = { family, step: decided.step, locs: decided.locs, what: decided.what, logged, trace };
      if (t.kind === 'allow') return { ...base, verdict: 'allow', target: plan.mode === 'enforce' ? 'ACCEPT' : 'RETURN' };
      if (t.kind === 'reject') return { ...base, verdict: 'deny', target: 'REJECT', rejectWith: t.with };
      return { ...base, verdict: 'deny', target: 'DROP' };
    }
    if (!next) {
      // fell off a chain: back to FORWARD, untouched
      return { family, verdict: 'untouched', target: 'RETURN', step: null, locs: [], what: chain.role === 'top' ? 'source not governed' : `fell through ${chain.name}`, logged, trace };
    }
    chain = next;
  }
  throw new Error('plan: chain loop');
}

interface MatchCtx {
  pkt: Packet;
  members: Membership;
  dstMembers: Membership;
  sets: Map<string, PlanSet>;
  srcSet: AddrSet;
  dstSet: AddrSet;
  type: number;
  code: number;
}

function matches(m: PlanMatch, c: MatchCtx): boolean {
  const p = c.pkt;
  if (m.ctstate && !p.established) return false;
  if (m.proto && m.proto !== p.proto) return false;
  if (m.dports) {
    const port = p.port;
    if (port === undefined || !m.dports.some((r) => r.from <= port && port <= r.to)) return false;
  }
  if (m.icmp && m.icmp.type !== -1) {
    if (m.icmp.type !== c.type) return false;
    if (m.icmp.code !== -1 && m.icmp.code !== c.code) return false;
  }
  if (m.src && inSet(m.src.set, 'src', c) === !!m.src.negate) return false;
  if (m.dst && inSet(m.dst.set, 'dst', c) === !!m.dst.negate) return false;
  return true;
}

function inSet(name: string, dir: 'src' | 'dst', c: MatchCtx): boolean {
  const s = c.sets.get(name);
  if (!s) throw new Error(`plan: unknown set ${name}`);
  const addr = dir === 'src' ? c.srcSet : c.dstSet;
  const k = s.kind;
  switch (k.type) {
    case 'net':
      return k.addrs.contains(addr);
    case 'net,port': {
      const port = c.pkt.port;
      if ((c.pkt.proto !== 'tcp' && c.pkt.proto !== 'udp') || port === undefined) return false;
      return k.byPort.some((e) => e.proto === c.pkt.proto && e.port === port && e.addrs.contains(addr));
    }
    case 'list':
      return k.members.some((m) => inSet(m, dir, c));
    case 'dynamic': {
      // membership as explain was told (--member, --dst-member)
      const m = dir === 'src' ? c.members : c.dstMembers;
      return m.phase === k.phase && m.groups.includes(k.group);
    }
  }
}
