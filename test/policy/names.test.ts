import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dynamicSetName, groupStem } from '../../src/policy/names.js';

describe('dynamicSetName', () => {
  it('uses the sanitised group name as stem when it fits', () => {
    expect(dynamicSetName('space-sandbox', 'running', 4)).toBe('cw-d-space-sandbox-r4');
    expect(dynamicSetName('Space.A', 'staging', 6)).toBe('cw-d-space-a-s6');
    expect(dynamicSetName('a b/c$(x)`y`', 'running', 6)).toBe('cw-d-a-b-c--x--y--r6');
    expect(groupStem('x'.repeat(22))).toBe('x'.repeat(22));
  });

  it('shortens long names to 13 chars + "-" + 8 hex of sha256(name)', () => {
    const guid = '1081ceac-f5c4-47a8-95e8-88e1e302efb5';
    const stem = groupStem(guid);
    expect(stem).toMatch(/^1081ceac-f5c4-[0-9a-f]{8}$/);
    expect(stem).toHaveLength(22);
    expect(groupStem('1081ceac-f5c4-47a8-95e8-000000000000')).not.toBe(stem);
    expect(dynamicSetName(guid, 'running', 4)).toHaveLength(30);
  });

  it('always gives a valid ipset name of at most 31 chars, distinct per phase and family', () => {
    fc.assert(fc.property(fc.string({ minLength: 1, maxLength: 80, unit: 'binary' }), (name) => {
      const names = (['running', 'staging'] as const).flatMap((ph) => ([4, 6] as const).map((f) => dynamicSetName(name, ph, f)));
      for (const n of names) {
        expect(n.length).toBeLessThanOrEqual(31);
        expect(n).toMatch(/^cw-d-[a-z0-9-]+-[rs][46]$/);
      }
      expect(new Set(names).size).toBe(4);
    }));
  });
});
