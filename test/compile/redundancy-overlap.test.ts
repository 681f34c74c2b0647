import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { overlapping } from '../../src/compile/redundancy.js';
import type { AsgRule } from '../../src/policy/model.js';

const v4entry = fc.tuple(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 255 }), fc.boolean())
  .map(([a, b, wide]) => (wide ? `10.${a}.0.0/16` : `10.${a}.${b}.0/24`));
const v4range = fc.tuple(fc.integer({ min: 0, max: 4095 }), fc.integer({ min: 0, max: 300 }))
  .map(([s, len]) => `10.0.${s >> 4}.${(s & 15) * 16}-10.${Math.min(255, (s + len) >> 8)}.${(s + len) & 255}.255`);
const v6entry = fc.tuple(fc.integer({ min: 0, max: 7 }), fc.constantFrom(48, 56, 64)).map(([a, p]) => `2001:db8:${a}::/${p}`);
const setArb = fc.array(fc.oneof(v4entry, v4range, v6entry, fc.constant('0.0.0.0/0'), fc.constant('255.255.255.255')), { maxLength: 6 })
  .map((es) => AddrSet.of(es));

describe('overlapping (redundant-rule pre-filter)', () => {
  it('lists exactly the other rules whose destinations meet each rule', () => {
    fc.assert(fc.property(fc.array(setArb, { maxLength: 10 }), (sets) => {
      const rules = sets.map((destination, index) => ({ destination, index }) as unknown as AsgRule);
      const got = overlapping(rules);
      const want = sets.map((a, i) => sets.flatMap((b, j) => (j !== i && !a.intersect(b).isEmpty() ? [j] : [])));
      expect(got).toEqual(want);
    }), { numRuns: 300 });
  });
});
