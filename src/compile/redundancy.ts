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
import type { AsgRule, Policy, PortRange } from '../policy/model.js';
import { locText, portsText, unionAll } from './util.js';

function signature(r: AsgRule): string {
  if (r.protocol === 'tcp' || r.protocol === 'udp') return `${r.protocol}|${portsText(r.ports ?? [])}`;
  if (r.protocol === 'icmp' || r.protocol === 'icmpv6') return `${r.protocol}|${r.icmpType ?? -1}|${r.icmpCode ?? -1}`;
  return 'all';
}

function portsCover(outer: PortRange[], inner: PortRange[]): boolean {
  return inner.every((i) => outer.some((o) => o.from <= i.from && i.to <= o.to));
}

/** does rule s allow every protocol/port that rule r does (destinations aside)? */
export function classCovers(s: AsgRule, r: AsgRule): boolean {
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
  if (!out) cache.set(policy, (out = computeRedundant(policy)));
  return out;
}

function computeRedundant(policy: Policy): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const sg of policy.securityGroups.values()) {
    const rules = sg.rules;
    if (rules.length < 2) continue;
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
      let cands: AsgRule[] | undefined;
      for (const ri of group) {
        const r = rules[ri]!;
        if (r.destination.isEmpty()) continue;
        // redundant iff the other rules covering its class, where they meet it, hold all of its destination
        const others = over[ri]!.filter((i) => classCovers(rules[i]!, r)).map((i) => rules[i]!.destination);
        if (!others.length || !unionAll(others).contains(r.destination)) continue;
        cands ??= rules.filter((s) => classCovers(s, rules[group[0]!]!));
        // of two identical rules, report only the later one
        const i = cands.indexOf(r);
        const later = cands.slice(i + 1).some((c) => signature(c) === signature(r) && c.destination.equals(r.destination));
        if (later && !unionAll(cands.slice(0, i).map((c) => c.destination)).contains(r.destination)) continue;
        const by = cands.filter((c) => c !== r && !c.destination.intersect(r.destination).isEmpty()).slice(0, 3);
        out.push({
          severity: 'warning',
          loc: r.loc,
          message: `redundant rule ${r.index} of security group ${sg.name} (${r.protocol} ${r.destinationText}): everything it allows is already allowed by ${by.map((c) => `rule ${c.index} (${locText(c.loc, policy.file)})`).join(', ')}`,
        });
      }
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
export function overlapping(rules: AsgRule[]): number[][] {
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
