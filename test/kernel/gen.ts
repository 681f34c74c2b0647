/**
 * Seeded random policies and probes for the differential test, shaped to the
 * default topology (netns.ts DEFAULT_SIDES): destinations and ports that the
 * topology can actually reach and serve, sources that play the different
 * kinds of governed source (plain container, dynamic member running and
 * staging, static group member) and one source cellwall does not govern.
 */
import type { ExplainQuery } from './cli.js';
import { DEFAULT_SIDES, PORTS, type Proto, type SideSpec } from './netns.js';

/** mulberry32 (bench/data/geoip.ts): same seed, same sequence */
import { mulberry32 as rng } from '../../bench/data/geoip.js';
export { rng };

export class Rand {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = rng(seed);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** a non-empty random subset, in the original order */
  subset<T>(xs: readonly T[]): T[] {
    for (;;) {
      const s = xs.filter(() => this.chance(0.5));
      if (s.length) return s;
    }
  }
}

const V4_DESTS = [
  '10.0.0.10', '10.0.0.0/24', '10.0.0.11/32', '10.0.0.0/8', '203.0.113.0/24', '203.0.113.10',
  '203.0.113.8-203.0.113.10', '203.0.113.11-203.0.113.200', '198.51.100.0/24', '0.0.0.0/0', '192.0.0.0/3',
  '198.51.100.10,203.0.113.11', '10.0.0.11,203.0.113.0/25',
];
const V6_DESTS = [
  '2001:db8::/64', '2001:db8::11', 'fd00:10::/64', 'fd00:10::10', '::/0', '2001:db8::10-2001:db8::11', '2000::/3',
];
const NAMES = ['vpc', 'internet'];
const PORT_SPECS = ['53', '80', '443', '80,443', '5432', '3000-6000', '22,53,8080', '1-65535', '6379', '80, 8080'];

export type Mode = 'tighten' | 'enforce';

function genRule(r: Rand): Record<string, unknown> {
  const protocol = r.pick(['tcp', 'udp', 'icmp', 'icmpv6', 'all', 'tcp', 'udp'] as const);
  const destination =
    protocol === 'icmp' ? r.pick(V4_DESTS)
    : protocol === 'icmpv6' ? r.pick(V6_DESTS)
    : r.pick([...V4_DESTS, ...V6_DESTS, ...NAMES, ...NAMES]);
  const rule: Record<string, unknown> = { protocol, destination };
  if (protocol === 'tcp' || protocol === 'udp') rule.ports = r.pick(PORT_SPECS);
  if (protocol === 'icmp' || protocol === 'icmpv6') {
    const echo = protocol === 'icmp' ? 8 : 128;
    rule.type = r.pick([echo, echo, -1, protocol === 'icmp' ? 0 : 129]);
    rule.code = r.pick([-1, 0]);
  }
  if (r.chance(0.2)) rule.log = true;
  return rule;
}

/**
 * The differential test's topology: the default one with the containers on a
 * /24 (10.255.0.0/24, fd00:255::/64) and a second container namespace `peer`
 * (10.255.1.0/24, fd00:255:0:1::/64), so that app-to-app traffic is forwarded.
 */
export const DIFF_SIDES: SideSpec[] = [
  {
    role: 'app',
    nets: [
      { gw: '10.255.0.1/24', hosts: ['10.255.0.2', '10.255.0.3', '10.255.0.4', '10.255.0.5'] },
      { gw: 'fd00:255::1/64', hosts: ['fd00:255::2', 'fd00:255::3', 'fd00:255::4', 'fd00:255::5'] },
    ],
  },
  {
    role: 'peer',
    nets: [
      { gw: '10.255.1.1/24', hosts: ['10.255.1.2', '10.255.1.3'] },
      { gw: 'fd00:255:0:1::1/64', hosts: ['fd00:255:0:1::2', 'fd00:255:0:1::3'] },
    ],
  },
  ...DEFAULT_SIDES.filter((s) => s.role !== 'app'),
];

const APP_GROUPS = ['space-a', 'ops', 'web'] as const;

function genAppRule(r: Rand): Record<string, unknown> {
  const rule: Record<string, unknown> = { from: r.pick(APP_GROUPS), to: r.pick(['web', 'web', 'ops', 'space-a'] as const) };
  const protocol = r.pick([undefined, 'tcp', 'udp', 'tcp'] as const);
  if (protocol) {
    rule.protocol = protocol;
    rule.ports = r.pick(PORT_SPECS);
  }
  return rule;
}

/** a random policy with one segment `seg` */
export function genPolicy(r: Rand, mode: Mode): Record<string, unknown> {
  const sgNames = Array.from({ length: r.int(2, 4) }, (_, i) => `sg${i}`);
  const securityGroups = Object.fromEntries(sgNames.map((n) => [n, Array.from({ length: r.int(1, 3) }, () => genRule(r))]));
  const egress = r.pick(['open', 'restricted', 'closed'] as const);
  const segment: Record<string, unknown> = { container_network: 'overlay', egress };
  if (egress === 'restricted') segment.egress_allow = r.pick([['vpc'], ['203.0.113.0/25'], ['vpc', '2001:db8::/64']]);
  const bindings = sgNames.map((n) => {
    const b: Record<string, unknown> = { security_groups: [n], phase: r.subset(['running', 'staging']) };
    if (r.chance(0.5)) b.groups = r.subset(['space-a', 'ops']);
    return b;
  });
  return {
    version: 1,
    mode,
    defaults: { deny: r.pick(['reject', 'drop']), log_denied: r.chance(0.5), established: 'accept' },
    networks: {
      vpc: ['10.0.0.0/8', 'fd00:10::/64'],
      overlay: ['10.255.0.0/16', 'fd00:255::/48'],
      internet: ['0.0.0.0/0', '::/0', '!vpc', '!fc00::/7'],
    },
    security_groups: securityGroups,
    groups: {
      'space-a': { members: 'dynamic' },
      ops: { networks: ['10.255.0.4/32', 'fd00:255::4/128'] },
      web: { networks: ['10.255.1.2/32', 'fd00:255:0:1::2/128'] },
    },
    segments: { seg: segment },
    bindings,
    policies: {
      default: r.pick(['deny', 'deny', 'allow']),
      rules: Array.from({ length: r.int(0, 3) }, () => genAppRule(r)),
    },
  };
}

/** who a probe source is, and how explain is told so */
export interface Source {
  addr: string;
  /** explain --phase / --member */
  phase: 'running' | 'staging';
  member?: string;
  what: string;
  /** where its probes may go */
  dsts: readonly string[];
}

const APP4 = ['10.255.0.2', '10.255.0.4', '10.255.0.3', '10.255.0.5'];
const APP6 = ['fd00:255::2', 'fd00:255::4', 'fd00:255::3', 'fd00:255::5'];

/** destinations in a dynamic group's member set (the test adds them), told to explain with --dst-member / --dst-phase */
export const DST_MEMBERS: Record<string, { group: string; phase: 'running' | 'staging' }> = Object.fromEntries(
  ['10.255.0.', 'fd00:255::'].flatMap((p) => [[`${p}3`, { group: 'space-a', phase: 'running' }], [`${p}5`, { group: 'space-a', phase: 'staging' }]]),
);
const PEER4 = ['10.255.1.2', '10.255.1.3'];
const PEER6 = ['fd00:255:0:1::2', 'fd00:255:0:1::3'];
const VPC4 = ['10.0.0.10'];
const VPC6 = ['fd00:10::10'];
const INET4 = ['203.0.113.10', '203.0.113.11', '198.51.100.10'];
const INET6 = ['2001:db8::10', '2001:db8::11'];

/**
 * Governed sources. Destinations inside the container network are addresses
 * of static groups, of no group, or members of space-a (DST_MEMBERS).
 */
export const SOURCES: Source[] = [
  ...([
    ['10.255.0.', [...PEER4, ...VPC4, ...INET4]],
    ['fd00:255::', [...PEER6, ...VPC6, ...INET6]],
  ] as const).flatMap(([p, dsts]): Source[] => [
    { addr: `${p}2`, phase: 'running', what: 'container', dsts },
    { addr: `${p}3`, phase: 'running', member: 'space-a', what: 'space-a running', dsts },
    { addr: `${p}4`, phase: 'running', what: 'static group ops', dsts },
    { addr: `${p}5`, phase: 'staging', member: 'space-a', what: 'space-a staging', dsts },
  ]),
  { addr: '10.255.1.2', phase: 'running', what: 'static group web', dsts: [...APP4, ...INET4] },
  { addr: '10.255.1.3', phase: 'running', what: 'peer container', dsts: [...APP4, ...VPC4] },
  { addr: 'fd00:255:0:1::2', phase: 'running', what: 'static group web', dsts: [...APP6, ...INET6] },
];

/** not governed by cellwall: the VPC itself (to the internet; its own addresses are local) */
export const UNGOVERNED: Source[] = [
  { addr: '10.0.0.11', phase: 'running', what: 'vpc host (not governed)', dsts: INET4 },
  { addr: 'fd00:10::11', phase: 'running', what: 'vpc host (not governed)', dsts: INET6 },
];

export interface ProbeSpec { src: Source; dst: string; proto: Proto; port?: number }

/** what explain is asked for a probe (segment `seg`): its source's and destination's dynamic membership included */
export function probeQuery(p: ProbeSpec): ExplainQuery {
  const v6 = p.dst.includes(':');
  const dm = DST_MEMBERS[p.dst];
  return {
    segment: 'seg', src: p.src.addr, dst: p.dst, proto: p.proto === 'icmp' ? (v6 ? 'icmpv6' : 'icmp') : p.proto,
    port: p.port, phase: p.src.phase, member: p.src.member,
    ...(dm ? { dstMember: dm.group, dstPhase: dm.phase } : {}),
  };
}

/** n probes; the first ones come from the ungoverned sources */
export function genProbes(r: Rand, n: number): ProbeSpec[] {
  const out: ProbeSpec[] = [];
  for (let i = 0; i < n; i++) {
    const src = i < UNGOVERNED.length ? UNGOVERNED[i] : r.pick(SOURCES);
    const proto = r.pick(['tcp', 'tcp', 'udp', 'icmp'] as const);
    out.push({ src, dst: r.pick(src.dsts), proto, port: proto === 'icmp' ? undefined : r.pick(PORTS) });
  }
  return out;
}
