/**
 * unionAll (JS sort + merge for IPv4, tree of core unions for IPv6) against a
 * left fold of the core's pairwise union: same ranges, whatever the inputs'
 * overlaps, adjacency and order.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { unionAll } from '../../src/policy/addresses.js';
import { loadPolicyText } from '../../src/policy/index.js';

// small v4 universe near 0 and the top of the space, so overlaps and adjacency are frequent
const v4 = fc.tuple(fc.constantFrom(0, 0xffffff00), fc.nat(255), fc.nat(16))
  .map(([base, a, w]) => `${ip4(base + a)}-${ip4(Math.min(base + a + w, 0xffffffff))}`);
const v6 = fc.tuple(fc.nat(255), fc.nat(8)).map(([a, w]) => `2001:db8::${a.toString(16)}-2001:db8::${(a + w).toString(16)}`);
const set = fc.array(fc.oneof({ weight: 4, arbitrary: v4 }, { weight: 1, arbitrary: v6 }), { maxLength: 5 }).map((es) => AddrSet.of(es));

function ip4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

describe('unionAll', () => {
  it('equals the pairwise core union', () => {
    fc.assert(fc.property(fc.array(set, { maxLength: 12 }), (sets) => {
      const want = sets.reduce((a, b) => a.union(b), AddrSet.empty());
      const got = unionAll(sets);
      expect(Array.from(got.v4)).toEqual(Array.from(want.v4));
      expect(Array.from(got.v6)).toEqual(Array.from(want.v6));
    }), { numRuns: 300 });
  });

  it('merges ranges that touch at the end of the space', () => {
    const got = unionAll([AddrSet.of(['255.255.255.255']), AddrSet.of(['0.0.0.0-255.255.255.254']), AddrSet.of(['10.0.0.0/8'])]);
    expect(got.toCidrs()).toEqual(['0.0.0.0/0']);
  });
});

describe('ASG destinations of literal entries (parsed in one call per rule)', () => {
  const policy = (dest: string, strict = true) =>
    `version: 1\nstrict: ${strict}\nnetworks:\n  n: [10.9.0.0/16]\nsecurity_groups:\n  a:\n    - { protocol: tcp, ports: "443", destination: "${dest}" }\n`;
  const dest = async (d: string, strict = true) => (await loadPolicyText(policy(d, strict), 'p.yaml')).securityGroups.get('a')!.rules[0].destination;

  it('give the union of the entries, as the per-entry path does', async () => {
    const entries = ['198.51.100.7', '198.51.100.0/25', '198.51.100.128-198.51.100.130', '2001:db8::/48', '203.0.113.0/24'];
    expect((await dest(entries.join(','))).equals(AddrSet.of(entries))).toBe(true);
    // with a network name the whole list takes the per-entry path
    expect((await dest(`${entries.join(',')},n`)).equals(AddrSet.of([...entries, '10.9.0.0/16']))).toBe(true);
  });

  it('follow strict: false (host bits masked) and keep exact messages for bad items', async () => {
    expect((await dest('10.0.0.1/8,192.0.2.1', false)).equals(AddrSet.of(['10.0.0.0/8', '192.0.2.1']))).toBe(true);
    await expect(loadPolicyText(policy('192.0.2.1,10.0.0.1/8'), 'p.yaml')).rejects.toThrow(/host bits/);
    await expect(loadPolicyText(policy('192.0.2.1#x'), 'p.yaml')).rejects.toThrow(/192.0.2.1#x/);
  });
});
