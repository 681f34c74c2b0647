import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { coveredTwice } from '../../src/compile/redundancy.js';

/** the pairwise definition: the union over pairs of the pair's intersection */
function pairwise(sets: AddrSet[]): AddrSet {
  let acc = AddrSet.empty();
  for (let i = 0; i < sets.length; i++) for (let j = i + 1; j < sets.length; j++) acc = acc.union(sets[i].intersect(sets[j]));
  return acc;
}

const v4entry = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.boolean())
  .map(([a, b, wide]) => (wide ? `10.${a}.0.0/16` : `10.${a}.${b}.0/24`));
const v4range = fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 300 }))
  .map(([s, len]) => `10.0.${s >> 4}.${(s & 15) * 16}-10.${Math.min(255, (s + len) >> 8)}.${(s + len) & 255}.255`);
const v6entry = fc.tuple(fc.integer({ min: 0, max: 15 }), fc.constantFrom(48, 56, 64)).map(([a, p]) => `2001:db8:${a}::/${p}`);
const setArb = fc.array(fc.oneof(v4entry, v4range, v6entry, fc.constant('0.0.0.0/0'), fc.constant('255.255.255.255')), { maxLength: 6 })
  .map((es) => AddrSet.of(es));

describe('coveredTwice (redundant-rule sweep)', () => {
  it('equals the union of pairwise intersections', () => {
    fc.assert(fc.property(fc.array(setArb, { maxLength: 8 }), (sets) => {
      expect(coveredTwice(sets).equals(pairwise(sets))).toBe(true);
    }), { numRuns: 300 });
  });
});
