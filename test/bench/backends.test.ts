/** Input generators of the backends benchmark (bench/suites/backends.ts); no timings asserted. */
import { describe, expect, it } from 'vitest';
import { parseIPv4 } from '../../bench/data/geoip.js';
import { key4, MISS_NET, prefixesWithLengths, udpFrame } from '../../bench/suites/backends.js';

describe('backends bench inputs', () => {
  it('draws distinct prefixes with exactly the requested lengths, none overlapping the miss range', () => {
    const lens = [9, 16, 24, 32];
    const ps = prefixesWithLengths(5000, lens, 3);
    expect(ps.length).toBe(5000);
    expect(new Set(ps.map(([a, l]) => `${a}/${l}`)).size).toBe(5000);
    expect(new Set(ps.map(([, l]) => l))).toEqual(new Set(lens));
    for (const [a, l] of ps) {
      expect(l === 32 || (a & ((1 << (32 - l)) - 1)) === 0).toBe(true); // no host bits
      const top = Math.min(l, 15);
      expect(a >>> (32 - top)).not.toBe(MISS_NET >>> (32 - top));
    }
    expect(prefixesWithLengths(100, [24], 1)).toEqual(prefixesWithLengths(100, [24], 1));
  });

  it('builds LPM keys (length little-endian, address big-endian) and an IPv4/UDP frame to the destination', () => {
    expect(key4(parseIPv4('192.0.2.0'), 24).toString('hex')).toBe('18000000c0000200');
    const f = udpFrame(parseIPv4('198.18.1.2'));
    expect(f.readUInt16BE(12)).toBe(0x0800);
    expect(f[14 + 9]).toBe(17);
    expect([...f.subarray(30, 34)]).toEqual([198, 18, 1, 2]);
    expect(f.readUInt16BE(36)).toBe(53);
  });
});
