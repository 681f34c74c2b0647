import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mergePorts, parsePorts } from '../../src/policy/cf.js';

/** Cloud Controller's TransportRuleValidator.validate_port, as a reference for the accepted language. */
describe('parsePorts mirrors Cloud Controller', () => {
  const ok = (s: string) => { const r = parsePorts(s); if (!r.ok) throw new Error(`${s}: ${r.reason}`); return r.ranges; };
  const reason = (s: string) => { const r = parsePorts(s); return r.ok ? null : r.reason; };

  it('accepts one port, a comma list with optional spaces, or one range', () => {
    expect(ok('443')).toEqual([{ from: 443, to: 443 }]);
    expect(ok('80, 443')).toEqual([{ from: 80, to: 80 }, { from: 443, to: 443 }]);
    expect(ok('8000-9000')).toEqual([{ from: 8000, to: 9000 }]);
    expect(ok(' 8000 - 9000 ')).toEqual([{ from: 8000, to: 9000 }]);
    expect(ok('1,65535')).toEqual([{ from: 1, to: 1 }, { from: 65535, to: 65535 }]);
    expect(ok('53,54,55')).toEqual([{ from: 53, to: 55 }]);
    expect(ok('80,')).toEqual([{ from: 80, to: 80 }]); // Ruby's split drops trailing empty fields
  });

  it('rejects what Cloud Controller rejects', () => {
    expect(reason('80,8000-9000')).toBe('a list may not hold a range');
    expect(reason('9000-8000')).toContain('not less than');
    expect(reason('80-80')).toContain('not less than');
    expect(reason('0')).toContain('out of range');
    expect(reason('65536')).toContain('out of range');
    expect(reason('1-65536')).toContain('out of range');
    expect(reason('80;443')).toContain('invalid character');
    expect(reason('http')).toContain('invalid character');
    expect(reason('')).toBe('no port given');
    expect(reason(',80')).toContain('invalid list item');
    expect(reason('80 443')).toContain('invalid list item');
    expect(reason('1-2-3')).not.toBeNull();
  });

  it('round-trips any list of valid ports to merged ranges', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 65535 }), { minLength: 1, maxLength: 20 }), (ports) => {
      const ranges = ok(ports.join(', '));
      const covered = new Set(ranges.flatMap((r) => Array.from({ length: r.to - r.from + 1 }, (_, i) => r.from + i)));
      expect(covered).toEqual(new Set(ports));
      for (let i = 1; i < ranges.length; i++) expect(ranges[i].from).toBeGreaterThan(ranges[i - 1].to + 1);
    }));
  });

  it('merges overlapping and adjacent ranges', () => {
    expect(mergePorts([{ from: 10, to: 20 }, { from: 1, to: 5 }, { from: 21, to: 25 }, { from: 3, to: 8 }]))
      .toEqual([{ from: 1, to: 8 }, { from: 10, to: 25 }]);
  });
});
