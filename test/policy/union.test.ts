/**
 * unionAll (JS sort + merge for IPv4, tree of core unions for IPv6) against a
 * left fold of the core's pairwise union: same ranges, whatever the inputs'
 * overlaps, adjacency and order.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { unionAll } from '../../src/policy/addresses.js';

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
