/**
 * Building Policy objects directly (no loader): small builders for unit tests
 * and a seeded random policy/packet generator for the property test.
 */
import { AddrSet } from '../../src/core/index.js';
import type { SourceLoc } from '../../src/errors.js';
import type { AppRule, AsgRule, Binding, Group, Phase, Policy, PortRange, Protocol, Segment } from '../../src/policy/model.js';
import type { RefPacket } from './reference.js';

let line = 0;
export function loc(path: string, file = '/policies/test.yaml'): SourceLoc {
  line++;
  return { file, line, col: 3, path };
}

export const set = (...entries: string[]): AddrSet => (entries.length ? AddrSet.of(entries) : AddrSet.empty());

export interface AsgSpec {
  protocol: Protocol;
  destination: string[];
  ports?: PortRange[];
  icmpType?: number;
  icmpCode?: number;
  log?: boolean;
  description?: string;
}

export interface PolicySpec {
  mode?: Policy['mode'];
  defaults?: Partial<Policy['defaults']>;
  asgs?: Record<string, AsgSpec[]>;
  groups?: Record<string, string[] | 'dynamic'>;
  segments?: Record<string, { containerNetwork: string[]; egress?: Segment['egress']; egressAllow?: string[] }>;
  bindings?: Array<{ asgs: string[]; groups?: string[]; phases?: Phase[] }>;
  policies?: { default?: 'allow' | 'deny'; rules?: Array<Omit<AppRule, 'loc' | 'protocol'> & { protocol?: Protocol }> };
  file?: string;
}

/** Locations are numbered from 1 in construction order, so the same spec gives the same locations. */
export function makePolicy(s: PolicySpec): Policy {
  line = 0;
  const file = s.file ?? '/policies/test.yaml';
  const securityGroups = new Map(Object.entries(s.asgs ?? {}).map(([name, rules]) => [name, {
    name,
    loc: loc(`security_groups.${name}`, file),
    rules: rules.map((r, index): AsgRule => ({
      asg: name, index, protocol: r.protocol, destination: set(...r.destination), destinationText: r.destination.join(','),
      ...(r.ports ? { ports: r.ports } : {}),
      ...(r.icmpType !== undefined ? { icmpType: r.icmpType, icmpCode: r.icmpCode ?? -1 } : {}),
      log: r.log ?? false, ...(r.description !== undefined ? { description: r.description } : {}),
      loc: loc(`security_groups.${name}[${index}]`, file),
    })),
  }]));
  const groups = new Map(Object.entries(s.groups ?? {}).map(([name, g]): [string, Group] => [name, g === 'dynamic'
    ? { name, kind: 'dynamic', loc: loc(`groups.${name}`, file) }
    : { name, kind: 'static', set: set(...g), loc: loc(`groups.${name}`, file) }]));
  const segments = new Map(Object.entries(s.segments ?? { shared: { containerNetwork: ['10.255.0.0/16'] } }).map(([name, g]): [string, Segment] => [name, {
    name, placementTags: [], containerNetwork: set(...g.containerNetwork), egress: g.egress ?? 'open',
    ...(g.egressAllow ? { egressAllow: set(...g.egressAllow) } : {}), loc: loc(`segments.${name}`, file),
  }]));
  const bindings: Binding[] = (s.bindings ?? []).map((b, i) => ({
    securityGroups: b.asgs, groups: b.groups ?? null, phases: b.phases ?? ['running', 'staging'], loc: loc(`bindings[${i}]`, file),
  }));
  return {
    file, hash: 'f'.repeat(64), version: 1, mode: s.mode ?? 'tighten',
    defaults: { deny: 'reject', logDenied: false, established: 'accept', ...(s.defaults ?? {}) },
    networks: new Map(), securityGroups, groups, segments, bindings,
    policies: {
      default: s.policies?.default ?? 'deny',
      rules: (s.policies?.rules ?? []).map((r, i) => ({ ...r, protocol: r.protocol ?? 'all', loc: loc(`policies.rules[${i}]`, file) })),
    },
    warnings: [],
  };
}

// ---- random policies ----

/** mulberry32 (bench/data/geoip.ts): same seed, same sequence */
import { mulberry32 as rng } from '../../bench/data/geoip.js';
export { rng };

/** A small address universe so that random sets overlap: 10.0.0.0/24 in /28 blocks and fd00::/120 in /124 blocks. */
const V4_BLOCKS = Array.from({ length: 16 }, (_, i) => `10.0.0.${i * 16}/28`);
const V6_BLOCKS = Array.from({ length: 16 }, (_, i) => `fd00::${(i * 16).toString(16)}/124`);
const PORTS = [22, 53, 80, 443, 1000, 1001, 5432, 8080];

export function randomPolicy(seed: number): { policy: Policy; dynamic: string[]; spec: PolicySpec } {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const chance = (p: number) => r() < p;
  const randSet = (): string[] => {
    const out: string[] = [];
    const n = 1 + Math.floor(r() * 3);
    for (let i = 0; i < n; i++) {
      const v6 = chance(0.35);
      const blocks = v6 ? V6_BLOCKS : V4_BLOCKS;
      const b = pick(blocks);
      if (chance(0.3)) out.push(b.replace(/\/\d+$/, '').replace(/\.(\d+)$/, (_, x) => `.${Number(x) + 1 + Math.floor(r() * 10)}`));
      else if (chance(0.1)) out.push(v6 ? '::/0' : '0.0.0.0/0');
      else out.push(b);
    }
    return out;
  };
  const randPorts = (): PortRange[] => {
    const k = r();
    if (k < 0.5) return [{ from: pick(PORTS), to: 0 }].map((p) => ({ from: p.from, to: p.from }));
    if (k < 0.7) {
      const ps = [...new Set([pick(PORTS), pick(PORTS), pick(PORTS)])].sort((a, b) => a - b);
      return ps.map((p) => ({ from: p, to: p }));
    }
    if (k < 0.85) return [{ from: 1000, to: 1001 }];
    if (k < 0.95) return [{ from: 1, to: 1024 }];
    // more than 15 multiport slots
    return Array.from({ length: 20 }, (_, i) => ({ from: 2000 + i * 2, to: 2000 + i * 2 })).concat([{ from: 5432, to: 5432 }]);
  };
  const randProtoFields = (): Pick<AsgSpec, 'protocol' | 'ports' | 'icmpType' | 'icmpCode'> => {
    const protocol = pick(['tcp', 'udp', 'icmp', 'icmpv6', 'all'] as const);
    if (protocol === 'tcp' || protocol === 'udp') return { protocol, ports: randPorts() };
    if (protocol === 'icmp' || protocol === 'icmpv6') {
      const icmpType = pick([-1, 0, 3, 8, 128]);
      return { protocol, icmpType, icmpCode: icmpType === -1 ? -1 : pick([-1, 0, 1]) };
    }
    return { protocol };
  };
  const groupNames = ['g-a', 'g-b', 'Space.C', 'g-d'].slice(0, 1 + Math.floor(r() * 4));
  const groups: Record<string, string[] | 'dynamic'> = {};
  for (const g of groupNames) groups[g] = chance(0.5) ? 'dynamic' : randSet();
  const asgs: Record<string, AsgSpec[]> = {};
  const asgNames = ['asg1', 'asg2', 'asg3', 'asg4'].slice(0, 1 + Math.floor(r() * 4));
  for (const a of asgNames) {
    asgs[a] = Array.from({ length: 1 + Math.floor(r() * 4) }, () => ({ ...randProtoFields(), destination: randSet(), log: chance(0.25) }));
  }
  const bindings = Array.from({ length: 1 + Math.floor(r() * 3) }, () => ({
    asgs: asgNames.filter(() => chance(0.5)),
    ...(chance(0.5) ? { groups: groupNames.filter(() => chance(0.5)) } : {}),
    phases: pick([['running'], ['staging'], ['running', 'staging']] as Phase[][]),
  }));
  const egress = pick(['open', 'restricted', 'closed'] as const);
  const spec: PolicySpec = {
    mode: pick(['tighten', 'enforce'] as const),
    defaults: { deny: pick(['reject', 'drop'] as const), logDenied: chance(0.5), established: pick(['accept', 'none'] as const) },
    asgs,
    groups,
    segments: { seg: { containerNetwork: randSet(), egress, ...(egress === 'restricted' ? { egressAllow: chance(0.9) ? randSet() : [] } : {}) } },
    bindings,
    policies: {
      default: pick(['allow', 'deny'] as const),
      rules: Array.from({ length: Math.floor(r() * 4) }, () => {
        const pf = randProtoFields();
        return { from: pick(groupNames), to: pick(groupNames), ...pf };
      }),
    },
  };
  return { policy: makePolicy(spec), dynamic: groupNames.filter((g) => groups[g] === 'dynamic'), spec };
}

/** addresses inside the entries a policy spec names, so random packets hit its sets often */
export function specAddresses(spec: PolicySpec): string[] {
  const entries: string[] = [];
  for (const g of Object.values(spec.groups ?? {})) if (g !== 'dynamic') entries.push(...g);
  for (const s of Object.values(spec.segments ?? {})) entries.push(...s.containerNetwork, ...(s.egressAllow ?? []));
  for (const rules of Object.values(spec.asgs ?? {})) for (const r of rules) entries.push(...r.destination);
  return entries.map((e) => {
    if (e === '0.0.0.0/0') return '203.0.113.5';
    if (e === '::/0') return '2001:db8::5';
    if (!e.includes('/')) return e;
    const base = e.replace(/\/\d+$/, '');
    return base.includes(':') ? base.replace(/0$/, '3') : base.replace(/\.(\d+)$/, (_, x) => `.${Number(x) + 3}`);
  });
}

export function randomPacket(seed: number, dynamic: string[], hints: string[] = []): { packet: RefPacket; phase: Phase; groups: string[] } {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const v6 = r() < 0.35;
  const famHints = hints.filter((h) => h.includes(':') === v6);
  const addr = () => (famHints.length && r() < 0.7 ? pick(famHints) : v6 ? `fd00::${Math.floor(r() * 300).toString(16)}` : `10.0.0.${Math.floor(r() * 256)}`);
  const proto = pick(v6 ? (['tcp', 'udp', 'icmpv6'] as const) : (['tcp', 'udp', 'icmp'] as const));
  const packet: RefPacket = { src: addr(), dst: r() < 0.1 ? (v6 ? '2001:db8::1' : '192.0.2.1') : addr(), proto, established: r() < 0.15 };
  if (proto === 'tcp' || proto === 'udp') packet.port = pick([...PORTS, 2004, 2039, 2040, 999, 1024, 65535]);
  else {
    packet.type = pick([0, 3, 8, 128]);
    packet.code = pick([0, 1]);
  }
  const phase = pick(['running', 'staging'] as const);
  const groups = dynamic.filter(() => r() < 0.4);
  return { packet, phase, groups };
}
