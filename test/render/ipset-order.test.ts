/**
 * The order sets are created in by the ipset payload (render/ipset.ts,
 * loadOrder): the kernel and the ipset tool find sets by name with a linear
 * scan in creation order, so the sets whose lookups cost most come first,
 * except that a list:set must come after its members (the kernel tests load
 * these payloads; here the order itself is checked, against costs counted
 * independently from the plan).
 */
import { describe, expect, it } from 'vitest';
import { generateCfScale } from '../../bench/cfscale.js';
import { compileSegment } from '../../src/compile/index.js';
import { loadPolicyText } from '../../src/policy/index.js';
import { lookupCost, renderIpset } from '../../src/render/ipset.js';

describe('ipset payload: creation order', () => {
  for (const seed of [3, 4]) {
    it(`lists after their members, otherwise costliest first (generated policy ${seed})`, async () => {
      const json = JSON.stringify(generateCfScale(seed, { asgs: 40, rulesPerAsg: 8, maxDestinations: 200, spaces: 15, apps: 40, appRules: 80, globalAsgs: 2 }));
      const { plan } = compileSegment(await loadPolicyText(json, '/tmp/p.json'), 'shared');
      const sets = [...plan.families[4].sets, ...plan.families[6].sets];
      const byName = new Map(sets.map((s) => [s.name, s]));
      // costs from the plan: add lines, list memberships, rule matches
      const memberships = new Map<string, number>(), ruleRefs = new Map<string, number>();
      const count = (m: Map<string, number>, n?: string) => { if (n) m.set(n, (m.get(n) ?? 0) + 1); };
      for (const s of sets) if (s.kind.type === 'list') s.kind.members.forEach((n) => count(memberships, n));
      for (const f of [4, 6] as const) for (const c of plan.families[f].chains) for (const r of c.rules) { count(ruleRefs, r.match.src?.set); count(ruleRefs, r.match.dst?.set); }
      const cost = (name: string) => {
        const s = byName.get(name)!;
        const list = s.kind.type === 'list';
        return lookupCost(list, list ? (s.kind as { members: string[] }).members.length : s.entries, memberships.get(name) ?? 0, ruleRefs.get(name) ?? 0);
      };
      const order = renderIpset(plan).split('\n').filter((l) => l.startsWith('create ')).map((l) => l.split(' ')[1]);
      expect([...order].sort()).toEqual(sets.map((s) => s.name).sort());
      const lists = sets.filter((s) => s.kind.type === 'list');
      expect(lists.length).toBeGreaterThan(10);
      expect(new Set(order.map(cost)).size).toBeGreaterThan(10);
      const at = new Map(order.map((n, i) => [n, i]));
      const before = (a: string, b: string) => cost(a) > cost(b) || (cost(a) === cost(b) && a < b);
      for (const l of lists) {
        const members = (l.kind as { members: string[] }).members;
        const ready = Math.max(...members.map((m) => at.get(m)!));
        // after every member ...
        expect(at.get(l.name)!).toBeGreaterThan(ready);
        // ... and from then on, only sets that go before it came first
        for (let i = ready + 1; i < at.get(l.name)!; i++) expect(before(order[i], l.name), `${order[i]} before list ${l.name}`).toBe(true);
      }
      // sets that are no list: costliest first
      const plain = order.filter((n) => byName.get(n)!.kind.type !== 'list');
      for (let i = 1; i < plain.length; i++) expect(before(plain[i - 1], plain[i]), `${plain[i - 1]} then ${plain[i]}`).toBe(true);
    });
  }
});
