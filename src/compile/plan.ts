/**
 * The backend-neutral Plan: what the compiler decided, before any text.
 *
 * A Plan is per segment and holds, per address family, named sets and named
 * chains of rules. Renderers (iptables, ipset, later nft/eBPF) turn it into
 * payloads; explain evaluates it rule by rule; a later parser of live
 * `iptables-save` output rebuilds one to compare.
 *
 * Chain semantics (same as iptables user chains):
 *  - packets enter `top` from the platform's FORWARD chain through one jump;
 *  - rules are evaluated in order; the first rule whose every match holds
 *    applies its target;
 *  - `goto` continues in another chain WITHOUT remembering where it came from,
 *    so an `allow` (RETURN in tighten mode) anywhere below `top` returns
 *    straight to FORWARD. Every chain reached by goto ends in a terminal rule.
 *  - falling off the end of `top` means "not governed": the packet is untouched.
 *
 * The layout the compiler emits (per family):
 *   top:   (established accept: ESTABLISHED,RELATED -> allow first; in tighten
 *           for any source, as allowed and untouched are the same RETURN there;
 *           in enforce for static/container-network sources only)
 *          staging sources  -> goto phase chain S
 *          running sources  -> goto phase chain R      (else: untouched)
 *   R / S: 1 ESTABLISHED,RELATED              -> allow
 *          2 destination is app-to-app space  -> goto A2A chain (one for both phases)
 *          3 (running) restricted/closed      -> goto deny
 *          4 bound ASG rules (log rules first)-> [log] allow
 *          5                                  -> goto deny
 *   A2A:   policies rules (source: the group's members in either phase) -> allow;
 *          then policies.default
 *   deny:  [rate-limited LOG] REJECT (tcp-reset for tcp) | DROP
 */
import type { AddrSet, Family } from '../core/index.js';
import type { SourceLoc } from '../errors.js';
import type { Mode, Phase, PortRange } from '../policy/model.js';

/** ipset type and sizing of the dynamic member sets (`cellwall members` must create them the same way). */
export const DYNAMIC_SET = { type: 'hash:net', hashsize: 1024, maxelem: 65536 } as const;

/** The step of SPEC §2 a rule implements (0 = classification of the source). */
export type Step = 0 | 1 | 2 | 3 | 4 | 5;

export type PlanSetKind =
  /** addresses (hash:net) */
  | { type: 'net'; addrs: AddrSet }
  /** address x (protocol, port) pairs (hash:net,port); matched on dst,dst */
  | { type: 'net,port'; byPort: Array<{ proto: 'tcp' | 'udp'; port: number; addrs: AddrSet }> }
  /** a list of other sets (list:set); matches when any member matches */
  | { type: 'list'; members: string[] }
  /** a dynamic group's member set, filled at run time; created empty, never flushed */
  | { type: 'dynamic'; group: string; phase: Phase };

export interface PlanSet {
  /** ipset name, at most 31 characters; content-addressed except dynamic sets */
  name: string;
  family: Family;
  kind: PlanSetKind;
  /** number of entries the set holds after restore (0 for dynamic) */
  entries: number;
  hashsize: number;
  maxelem: number;
  /** short human description, e.g. `dst of security_groups.dns[0]` */
  what: string;
  /** policy entries whose content is in the set */
  locs: SourceLoc[];
}

export interface SetMatch {
  set: string;
  /** true: the packet must NOT be in the set */
  negate?: boolean;
}

export interface PlanMatch {
  /** source address in the set */
  src?: SetMatch;
  /** destination address in the set (for a net,port set: destination address and protocol:port) */
  dst?: SetMatch;
  proto?: 'tcp' | 'udp' | 'icmp' | 'icmpv6';
  /** destination ports (tcp/udp only), at most 15 port slots (a range takes 2) */
  dports?: PortRange[];
  /** icmp/icmpv6 type and code; -1 = any */
  icmp?: { type: number; code: number };
  /** connection tracking state */
  ctstate?: 'ESTABLISHED,RELATED';
}

export type PlanTarget =
  /** RETURN in tighten mode, ACCEPT in enforce mode */
  | { kind: 'allow' }
  /** continue in another chain, without return */
  | { kind: 'goto'; chain: string }
  /** rate-limited log, then continue with the next rule */
  | { kind: 'log'; prefix: string }
  | { kind: 'reject'; with: 'tcp-reset' | 'port-unreachable' }
  | { kind: 'drop' };

/** Which verdict of SPEC §2 a rule stands for, for traces. */
export interface PlanRule {
  match: PlanMatch;
  target: PlanTarget;
  step: Step;
  /** short description for the rule comment, e.g. `asg dns tcp` */
  what: string;
  /** policy entries this rule comes from (first one is shown in the comment) */
  locs: SourceLoc[];
}

export interface PlanChain {
  /** at most 28 characters, starts with `CW-` */
  name: string;
  role: 'top' | 'phase' | 'a2a' | 'deny';
  /** phase chains and A2A chains: the phase they serve */
  phase?: Phase;
  rules: PlanRule[];
}

export interface FamilyPlan {
  family: Family;
  /** the chain FORWARD jumps to */
  top: string;
  /** in rendering order: top first, callees after */
  chains: PlanChain[];
  sets: PlanSet[];
}

export interface PlanStats {
  /** ASG rules bound in this segment (any phase) */
  asgRulesBound: number;
  /** ASG rules that could not apply in this segment (shadowed by steps 2/3, empty in both families) */
  asgRulesShadowed: number;
  /** destination sets that were identical to another one and shared */
  setsShared: number;
  /** chains identical to another one and merged */
  chainsMerged: number;
  /** destination CIDRs before aggregation (sum over rules of each rule's own minimal cover) and after */
  cidrsIn: number;
  cidrsOut: number;
}

export interface Plan {
  segment: string;
  mode: Mode;
  policyFile: string;
  policyHash: string;
  cellwallVersion: string;
  /** the comment on the FORWARD jump */
  jumpComment: string;
  families: { 4: FamilyPlan; 6: FamilyPlan };
  stats: PlanStats;
}

export function findChain(fp: FamilyPlan, name: string): PlanChain {
  const c = fp.chains.find((x) => x.name === name);
  if (!c) throw new Error(`plan: no chain ${name}`);
  return c;
}
