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
import { AddrSet } from '../core/index.js';
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
    const bySig = new Map<string, AsgRule[]>();
    for (const r of rules) {
      const k = signature(r);
      bySig.set(k, [...(bySig.get(k) ?? []), r]);
    }
    for (const group of bySig.values()) {
      const cands = rules.filter((s) => classCovers(s, group[0]));
      if (cands.length < 2) continue;
      // addresses allowed by at least two of the candidates: a candidate lies
      // entirely inside it iff the others cover it (it covers itself)
      const twice = coveredTwice(cands.map((c) => c.destination));
      if (twice.isEmpty()) continue;
      for (const r of group) {
        if (r.destination.isEmpty() || !twice.contains(r.destination)) continue;
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

/** addresses in at least two of the sets; IPv4 with one sorted sweep, IPv6 (rare) pairwise */
export function coveredTwice(sets: AddrSet[]): AddrSet {
  let v6acc: AddrSet | undefined;
  let v6twice = AddrSet.empty();
  for (const s of sets) {
    if (s.v6.length === 0) continue;
    const f6 = s.family(6);
    if (v6acc) {
      const both = v6acc.intersect(f6);
      if (!both.isEmpty()) v6twice = v6twice.union(both);
      v6acc = v6acc.union(f6);
    } else v6acc = f6;
  }
  return new AddrSet(twice4(sets), v6twice.v6);
}

/**
 * Each set's v4 ranges are disjoint, so the number of sets holding an address
 * is the number of ranges over it: sweep starts (+1) and ends (-1) in order.
 * Event keys: address * 2 + (0 for an end at address-1, 1 for a start), so that
 * at equal positions ends come first; exact in a double (2^33 < 2^53).
 */
function twice4(sets: AddrSet[]): Uint32Array {
  let n = 0;
  for (const s of sets) n += s.v4.length;
  if (n === 0) return new Uint32Array(0);
  const ev = new Float64Array(n);
  let k = 0;
  for (const s of sets) {
    const a = s.v4;
    for (let i = 0; i < a.length; i += 2) {
      ev[k++] = a[i] * 2 + 1;
      ev[k++] = (a[i + 1] + 1) * 2;
    }
  }
  ev.sort();
  const out: number[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < n; i++) {
    const e = ev[i];
    const pos = Math.floor(e / 2);
    if (e % 2 === 1) {
      if (++depth === 2) start = pos;
    } else if (depth-- === 2) {
      // the range [start, pos - 1] was covered twice; merge with an adjacent previous one
      const m = out.length;
      if (m && out[m - 1] + 1 >= start) out[m - 1] = pos - 1;
      else out.push(start, pos - 1);
    }
  }
  return Uint32Array.from(out);
}
