/**
 * The validated policy model. CONTRACT FILE between src/policy (producer) and
 * src/compile, explain, diff (consumers). See ../shared/SPEC.md §1–2.
 * Every element keeps the SourceLoc of the policy entry that produced it, so
 * compiled rules, warnings and explain traces point back to file:line:col.
 */
import type { AddrSet } from '../core/index.js';
import type { Diagnostic, SourceLoc } from '../errors.js';

export type Phase = 'running' | 'staging';
export type Protocol = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'all';
export type Mode = 'tighten' | 'enforce';

/** inclusive port range, 1..65535 */
export interface PortRange { from: number; to: number }

export interface Network {
  name: string;
  /** resolved: inclusions minus exclusions, both families */
  set: AddrSet;
  loc: SourceLoc;
}

export interface AsgRule {
  /** security group name and 0-based rule index inside it */
  asg: string;
  index: number;
  protocol: Protocol;
  /** resolved destination (addresses, CIDRs, ranges and network names) */
  destination: AddrSet;
  /** the destination as written, for messages */
  destinationText: string;
  /** tcp/udp only; merged and sorted */
  ports?: PortRange[];
  /** icmp/icmpv6 only; -1 = any */
  icmpType?: number;
  icmpCode?: number;
  log: boolean;
  description?: string;
  loc: SourceLoc;
}

export interface SecurityGroup {
  name: string;
  rules: AsgRule[];
  /** file the rules came from when loaded from a CF JSON file */
  loc: SourceLoc;
}

export interface Group {
  name: string;
  /** static: members are the networks; dynamic: filled at run time per phase */
  kind: 'static' | 'dynamic';
  /** static groups only */
  set?: AddrSet;
  loc: SourceLoc;
}

export type Egress = 'open' | 'restricted' | 'closed';

export interface Segment {
  name: string;
  placementTags: string[];
  cells?: { instanceGroup?: string; instances?: number; instanceType?: string };
  containerNetwork: AddrSet;
  egress: Egress;
  /** restricted only: where running apps may go at all */
  egressAllow?: AddrSet;
  loc: SourceLoc;
}

export interface Binding {
  securityGroups: string[];
  /** null = global (applies to every governed source of the phase) */
  groups: string[] | null;
  phases: Phase[];
  loc: SourceLoc;
}

export interface AppRule {
  from: string;
  to: string;
  /** 'all' when not given */
  protocol: Protocol;
  ports?: PortRange[];
  icmpType?: number;
  icmpCode?: number;
  loc: SourceLoc;
}

export interface Policy {
  /** the main policy file as given */
  file: string;
  /** sha256 (hex) of the canonical content, all loaded files included */
  hash: string;
  version: 1;
  mode: Mode;
  defaults: { deny: 'reject' | 'drop'; logDenied: boolean; established: 'accept' | 'none' };
  networks: Map<string, Network>;
  securityGroups: Map<string, SecurityGroup>;
  groups: Map<string, Group>;
  segments: Map<string, Segment>;
  bindings: Binding[];
  policies: { default: 'allow' | 'deny'; rules: AppRule[] };
  /** non-fatal findings (shadowed/redundant rules etc.) */
  warnings: Diagnostic[];
}
