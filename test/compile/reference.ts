/**
 * Independent reference evaluator of SPEC §2 at the policy-model level: no
 * chains, no sets, no buckets. Used to cross-check explain (which evaluates
 * the compiled Plan) on random policies and packets.
 *
 * Source classification (documented in the README/explain help):
 *  - the source is staging iff it is in some dynamic group's staging member
 *    set; otherwise running when it is in a static group's networks, the
 *    container network or a dynamic group's running member set; otherwise
 *    the packet is untouched;
 *  - the source's groups: static groups whose networks hold it, plus the
 *    dynamic groups whose member set for its phase holds it.
 */
import { AddrSet } from '../../src/core/index.js';
import type { AppRule, AsgRule, Phase, Policy, PortRange } from '../../src/policy/model.js';

export interface RefPacket {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | 'icmp' | 'icmpv6';
  port?: number;
  type?: number;
  code?: number;
  established?: boolean;
}

export interface RefResult {
  verdict: 'allow' | 'deny' | 'untouched';
  target: 'RETURN' | 'ACCEPT' | 'REJECT' | 'DROP';
  step: number | null;
  /** an ASG rule with log: true allowed it */
  loggedAllow: boolean;
  /** denied with log_denied */
  loggedDeny: boolean;
}

function inPorts(ports: PortRange[] | undefined, port: number | undefined): boolean {
  if (!ports) return true;
  return port !== undefined && ports.some((p) => p.from <= port && port <= p.to);
}

function protoMatch(r: { protocol: string; ports?: PortRange[]; icmpType?: number; icmpCode?: number }, p: RefPacket): boolean {
  if (r.protocol === 'all') return true;
  if (r.protocol !== p.proto) return false;
  if (r.protocol === 'tcp' || r.protocol === 'udp') return inPorts(r.ports, p.port);
  const type = p.type ?? (p.proto === 'icmpv6' ? 128 : 8);
  const code = p.code ?? 0;
  const rt = r.icmpType ?? -1;
  if (rt === -1) return true;
  if (rt !== type) return false;
  const rc = r.icmpCode ?? -1;
  return rc === -1 || rc === code;
}

export function referenceEvaluate(policy: Policy, segmentName: string, p: RefPacket, membership: { phase: Phase; groups: string[] }): RefResult {
  const seg = policy.segments.get(segmentName)!;
  const src = AddrSet.of([p.src]);
  const dst = AddrSet.of([p.dst]);
  const allowTarget = policy.mode === 'enforce' ? 'ACCEPT' : 'RETURN';
  const denyTarget = policy.defaults.deny === 'drop' ? 'DROP' : 'REJECT';
  const allow = (step: number, loggedAllow = false): RefResult => ({ verdict: 'allow', target: allowTarget, step, loggedAllow, loggedDeny: false });
  const deny = (step: number): RefResult => ({ verdict: 'deny', target: denyTarget, step, loggedAllow: false, loggedDeny: policy.defaults.logDenied });

  const staticGroups = [...policy.groups.values()].filter((g) => g.kind === 'static' && g.set!.contains(src)).map((g) => g.name);
  const dynMembers = membership.groups.filter((g) => policy.groups.get(g)?.kind === 'dynamic');
  let phase: Phase;
  if (membership.phase === 'staging' && dynMembers.length) phase = 'staging';
  else if (staticGroups.length || seg.containerNetwork.contains(src) || (membership.phase === 'running' && dynMembers.length)) phase = 'running';
  else return { verdict: 'untouched', target: 'RETURN', step: null, loggedAllow: false, loggedDeny: false };
  const groups = new Set([...staticGroups, ...(membership.phase === phase ? dynMembers : [])]);

  // 1
  if (policy.defaults.established === 'accept' && p.established) return allow(1);
  // 2 (destinations are never dynamic members here: only the source's membership is given)
  const dstGroups = new Set([...policy.groups.values()].filter((g) => g.kind === 'static' && g.set!.contains(dst)).map((g) => g.name));
  if (dstGroups.size || seg.containerNetwork.contains(dst)) {
    const ok = policy.policies.rules.some((r: AppRule) => groups.has(r.from) && dstGroups.has(r.to) && protoMatch(r, p));
    if (ok) return allow(2);
    return policy.policies.default === 'allow' ? allow(2) : deny(2);
  }
  // 3
  if (phase === 'running') {
    if (seg.egress === 'closed') return deny(3);
    if (seg.egress === 'restricted' && !(seg.egressAllow ?? AddrSet.empty()).contains(dst)) return deny(3);
  }
  // 4
  const bound = new Set<string>();
  for (const b of policy.bindings) {
    if (!b.phases.includes(phase)) continue;
    if (b.groups === null || b.groups.some((g) => groups.has(g))) b.securityGroups.forEach((s) => bound.add(s));
  }
  const matching: AsgRule[] = [];
  for (const name of bound) {
    for (const r of policy.securityGroups.get(name)?.rules ?? []) {
      if (r.destination.contains(dst) && protoMatch(r, p)) matching.push(r);
    }
  }
  if (matching.length) return allow(4, matching.some((r) => r.log));
  // 5
  return deny(5);
}
