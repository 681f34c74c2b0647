/**
 * Redundant ASG rules: a rule whose every (destination, protocol, port/type)
 * is already allowed by the other rules of the same security group.
 *
 * No pairwise O(n²) set work: rules are grouped by their protocol/port class
 * ("signature"); for each signature the rules that cover it (protocol all,
 * same protocol with a superset of ports, ICMP any type...) are listed once,
 * and one sweep computes the addresses they allow at least twice: a rule is
 * redundant iff its destination lies inside that set.
 */

import type { Diagnostic } from '../errors.js';
import { AddrSet } from '../core/index.js';
import type { AsgRule, Policy, PortRange, Protocol } from '../policy/model.js';
import { locText, portsText, unionAll } from './util.js';

function signature(r: RuleShape): string {
  if (r.protocol === 'tcp' || r.protocol === 'udp') return `${r.protocol}|${portsText(r.ports ?? [])}`;
  if (r.protocol === 'icmp' || r.protocol === 'icmpv6') return `${r.protocol}|${r.icmpType ?? -1}|${r.icmpCode ?? -1}`;
  return 'all';
}

function portsCover(outer: PortRange[], inner: PortRange[]): boolean {
  return inner.every((i) => outer.some((o) => o.from <= i.from && i.to <= o.to));
}

/** does rule s allow every protocol/port that rule r does (destinations aside)? */
export function classCovers(s: RuleShape, r: RuleShape): boolean {
  if (s.protocol === 'all') return true;
  if (s.protocol !== r.protocol) return false;
  if (s.protocol === 'tcp' || s.protocol === 'udp') {
    const full = [{ from: 1, to: 65535 }];
    return portsCover(s.ports ?? full, r.ports ?? full);
  }
  const st = s.icmpType ?? -1;
  const rt = r.icmpType ?? -1;
  if (st === -1) return true;
  if (st !== rt) return false;
  const sc = s.icmpCode ?? -1;
  return sc === -1 || sc === (r.icmpCode ?? -1);
}

const cache = new WeakMap<Policy, Diagnostic[]>();

/** Policy-level (segment independent), so computed once per Policy object. */
export function redundantAsgRules(policy: Policy): Diagnostic[] {
  let out = cache.get(policy);
  if (!out) cache.set(policy, (out = redundantDiagnostics(policy, findAllRedundant(policy))));
  return out;
}

/** What findRedundant() needs of a rule: class and destination, nothing to print. */
export type RuleShape = Pick<AsgRule, 'protocol' | 'ports' | 'icmpType' | 'icmpCode' | 'destination'>;

/** A redundant rule (index in its security group) and up to 3 rules that allow what it does. */
export interface Redundant { rule: number; by: number[] }

/** findRedundant() of every security group with two rules or more, in policy order */
function findAllRedundant(policy: Policy): Redundant[][] {
  return [...policy.securityGroups.values()].map((sg) => (sg.rules.length < 2 ? [] : findRedundant(sg.rules)));
}

/** The warnings for findRedundant()'s answers, one list per security group in policy order. */
export function redundantDiagnostics(policy: Policy, found: Redundant[][]): Diagnostic[] {
  const out: Diagnostic[] = [];
  let g = 0;
  for (const sg of policy.securityGroups.values()) {
    for (const { rule, by } of found[g++] ?? []) {
      const r = sg.rules[rule]!;
      out.push({
        severity: 'warning',
        loc: r.loc,
        message: `redundant rule ${r.index} of security group ${sg.name} (${r.protocol} ${r.destinationText}): everything it allows is already allowed by ${by.map((i) => `rule ${sg.rules[i]!.index} (${locText(sg.rules[i]!.loc, policy.file)})`).join(', ')}`,
      });
    }
  }
  return out;
}

/** Record warnings computed elsewhere (the compile worker) as the policy's. */
export function provideRedundant(policy: Policy, found: Redundant[][]): void {
  cache.set(policy, redundantDiagnostics(policy, found));
}

/**
 * findAllRedundant()'s input packed into a few arrays (no object per rule):
 * the compile worker thread finds the redundant rules while the main thread
 * compiles.
 */
export interface RedundancyInput {
  /** per security group in policy order: its first rule (in meta) and its rule count */
  groups: Uint32Array;
  /** per rule, RULE fields: protocol, icmp type, icmp code (-2: absent), first port range, port ranges (-1: absent), v4 start, v4 length, v6 start, v6 length */
  rules: Float64Array;
  /** port ranges as from, to pairs */
  ports: Uint32Array;
  v4: Uint32Array;
  v6: BigUint64Array;
}

const RULE = 9;
const PROTOCOLS: Protocol[] = ['tcp', 'udp', 'icmp', 'icmpv6', 'all'];

export function packRedundancy(policy: Policy): RedundancyInput {
  const sgs = [...policy.securityGroups.values()];
  let nRules = 0, nPorts = 0, n4 = 0, n6 = 0;
  for (const sg of sgs) {
    if (sg.rules.length < 2) continue;
    for (const r of sg.rules) {
      nRules++;
      nPorts += r.ports?.length ?? 0;
      n4 += r.destination.v4.length;
      n6 += r.destination.v6.length;
    }
  }
  const input: RedundancyInput = {
    groups: new Uint32Array(sgs.length * 2), rules: new Float64Array(nRules * RULE), ports: new Uint32Array(nPorts * 2),
    v4: new Uint32Array(n4), v6: new BigUint64Array(n6),
  };
  let k = 0, p = 0, o4 = 0, o6 = 0;
  sgs.forEach((sg, g) => {
    input.groups[g * 2] = k;
    if (sg.rules.length < 2) return;
    input.groups[g * 2 + 1] = sg.rules.length;
    for (const r of sg.rules) {
      const m = k++ * RULE;
      const d = r.destination;
      input.rules[m] = PROTOCOLS.indexOf(r.protocol);
      input.rules[m + 1] = r.icmpType ?? -2;
      input.rules[m + 2] = r.icmpCode ?? -2;
      input.rules[m + 3] = p;
      input.rules[m + 4] = r.ports ? r.ports.length : -1;
      for (const pr of r.ports ?? []) { input.ports[p * 2] = pr.from; input.ports[p * 2 + 1] = pr.to; p++; }
      input.v4.set(d.v4, o4);
      input.rules[m + 5] = o4;
      input.rules[m + 6] = d.v4.length;
      o4 += d.v4.length;
      input.v6.set(d.v6, o6);
      input.rules[m + 7] = o6;
      input.rules[m + 8] = d.v6.length;
      o6 += d.v6.length;
    }
  });
  return input;
}

/** findRedundant() of every packed security group, one answer per group in policy order */
export function findPackedRedundant(input: RedundancyInput): Redundant[][] {
  const out: Redundant[][] = [];
  for (let g = 0; g < input.groups.length / 2; g++) {
    const first = input.groups[g * 2]!, count = input.groups[g * 2 + 1]!;
    const rules: RuleShape[] = [];
    for (let k = first; k < first + count; k++) {
      const m = k * RULE;
      const f = input.rules;
      const nPorts = f[m + 4]!;
      const ports: PortRange[] = [];
      for (let q = f[m + 3]!; q < f[m + 3]! + nPorts; q++) ports.push({ from: input.ports[q * 2]!, to: input.ports[q * 2 + 1]! });
      rules.push({
        protocol: PROTOCOLS[f[m]!]!,
        ...(f[m + 1] !== -2 ? { icmpType: f[m + 1]! } : {}),
        ...(f[m + 2] !== -2 ? { icmpCode: f[m + 2]! } : {}),
        ...(nPorts >= 0 ? { ports } : {}),
        destination: new AddrSet(input.v4.subarray(f[m + 5]!, f[m + 5]! + f[m + 6]!), input.v6.subarray(f[m + 7]!, f[m + 7]! + f[m + 8]!)),
      });
    }
    out.push(count < 2 ? [] : findRedundant(rules));
  }
  return out;
}

/** The redundant rules of one security group. */
export function findRedundant(rules: RuleShape[]): Redundant[] {
  const out: Redundant[] = [];
  const over = overlapping(rules);
  // only a rule that meets another one can be redundant
  const bySig = new Map<string, number[]>();
  for (let i = 0; i < rules.length; i++) {
    if (over[i]!.length === 0) continue;
    const k = signature(rules[i]!);
    const g = bySig.get(k);
    if (g) g.push(i);
    else bySig.set(k, [i]);
  }
  for (const group of bySig.values()) {
    let cands: number[] | undefined;
    for (const ri of group) {
      const r = rules[ri]!;
      if (r.destination.isEmpty()) continue;
      // redundant iff the other rules covering its class, where they meet it, hold all of its destination
      const others = over[ri]!.filter((i) => classCovers(rules[i]!, r)).map((i) => rules[i]!.destination);
      if (!others.length || !unionAll(others).contains(r.destination)) continue;
      cands ??= rules.map((_, i) => i).filter((i) => classCovers(rules[i]!, rules[group[0]!]!));
      // of two identical rules, report only the later one
      const at = cands.indexOf(ri);
      const later = cands.slice(at + 1).some((c) => signature(rules[c]!) === signature(r) && rules[c]!.destination.equals(r.destination));
      if (later && !unionAll(cands.slice(0, at).map((c) => rules[c]!.destination)).contains(r.destination)) continue;
      const by = cands.filter((c) => c !== ri && !rules[c]!.destination.intersect(r.destination).isEmpty()).slice(0, 3);
      out.push({ rule: ri, by });
    }
  }
  return out;
}

/**
 * For each rule (by its index in the group), the other rules whose destinations
 * share an address with it. IPv4: one sort of every range, then a sweep keeping
 * the ranges still open; IPv6 (rare): every pair of rules that have any is
 * checked with the core.
 */
export function overlapping(rules: Array<Pick<AsgRule, 'destination'>>): number[][] {
  // most rules meet no other: a set only for those that do
  const sets: Array<Set<number> | undefined> = new Array(rules.length);
  const meet = (a: number, b: number) => {
    (sets[a] ??= new Set()).add(b);
    (sets[b] ??= new Set()).add(a);
  };
  let n = 0;
  for (const r of rules) n += r.destination.v4.length >> 1;
  if (n >= MAX_RANGES) throw new Error('redundancy: too many ranges in one security group');
  // scratch arrays shared by every call (one security group after another)
  if (scratch.keys.length < n) {
    const size = Math.max(n, scratch.keys.length * 2);
    scratch = { keys: new Float64Array(size), owner: new Uint32Array(size), ends: new Float64Array(size), open: new Uint32Array(size) };
  }
  const keys = scratch.keys.subarray(0, n);
  const { owner, ends, open } = scratch;
  let k = 0;
  for (let ri = 0; ri < rules.length; ri++) {
    const a = rules[ri]!.destination.v4;
    for (let i = 0; i < a.length; i += 2, k++) {
      keys[k] = a[i]! * MAX_RANGES + k;
      owner[k] = ri;
      ends[k] = a[i + 1]!;
    }
  }
  keys.sort();
  // ranges still open at the current start (indices), a stack without allocation
  let nOpen = 0;
  for (let i = 0; i < n; i++) {
    // key = start * 2^21 + index, split without a floating-point remainder
    const start = Math.floor(keys[i]! / MAX_RANGES);
    const j = keys[i]! - start * MAX_RANGES;
    if (nOpen) {
      let m = 0;
      for (let x = 0; x < nOpen; x++) {
        const o = open[x]!;
        if (ends[o]! >= start) open[m++] = o;
      }
      nOpen = m;
      for (let x = 0; x < nOpen; x++) {
        const o = open[x]!;
        if (owner[o] !== owner[j]) meet(owner[o]!, owner[j]!);
      }
    }
    open[nOpen++] = j;
  }
  const with6 = rules.map((r, i) => (r.destination.v6.length ? i : -1)).filter((i) => i >= 0);
  for (let x = 0; x < with6.length; x++) {
    for (let y = x + 1; y < with6.length; y++) {
      const a = with6[x]!, b = with6[y]!;
      if (sets[a]?.has(b)) continue;
      if (!rules[a]!.destination.family(6).intersect(rules[b]!.destination.family(6)).isEmpty()) meet(a, b);
    }
  }
  const out: number[][] = new Array(rules.length);
  for (let i = 0; i < rules.length; i++) {
    const s = sets[i];
    out[i] = s ? [...s].sort((x, y) => x - y) : [];
  }
  return out;
}

let scratch = { keys: new Float64Array(1024), owner: new Uint32Array(1024), ends: new Float64Array(1024), open: new Uint32Array(1024) };

/** ranges per sort: a key is start * 2^21 + index, exact in a double (2^32 * 2^21 = 2^53) */
const MAX_RANGES = 1 << 21;
