import { describe, expect, it } from 'vitest';
import {
  expandGeoipLines, formatIPv4, formatIPv6, mulberry32, parseIPv4, parseIPv6, rangeToPrefixes, shuffle,
} from '../../bench/data/geoip.js';

/** Brute-force check that prefixes are exactly the maximal aligned blocks inside [s, e], in order. */
function checkCover(s: bigint, e: bigint, bits: number, prefixes: Array<[bigint, number]>): void {
  let next = s;
  for (const [net, len] of prefixes) {
    const size = 1n << BigInt(bits - len);
    expect(net).toBe(next); // contiguous, disjoint, in order
    expect(net % size).toBe(0n); // aligned
    expect(net + size - 1n <= e).toBe(true); // inside the range
    if (len > 0) { // maximal: the parent block is not inside the range
      const parentSize = size * 2n;
      const parent = net - (net % parentSize);
      expect(parent >= s && parent + parentSize - 1n <= e).toBe(false);
    }
    next = net + size;
  }
  expect(next).toBe(e + 1n); // covers exactly up to e
}

describe('bench/data/geoip expansion', () => {
  it('expands every small v4 range to its exact minimal cover (exhaustive over 0..64)', () => {
    for (let s = 0n; s <= 64n; s++) {
      for (let e = s; e <= 64n; e++) checkCover(s, e, 32, rangeToPrefixes(s, e, 32));
    }
  });

  it('handles full-space and edge ranges', () => {
    expect(rangeToPrefixes(0n, 0xffffffffn, 32)).toEqual([[0n, 0]]);
    const top = (1n << 128n) - 1n;
    expect(rangeToPrefixes(0n, top, 128)).toEqual([[0n, 0]]);
    expect(rangeToPrefixes(top, top, 128)).toEqual([[top, 128]]);
    const rnd = mulberry32(7);
    for (let i = 0; i < 300; i++) {
      const a = BigInt(Math.floor(rnd() * 2 ** 32)) << 96n | BigInt(Math.floor(rnd() * 2 ** 20));
      const b = a + BigInt(Math.floor(rnd() * 2 ** 40));
      checkCover(a, b, 128, rangeToPrefixes(a, b, 128));
    }
  });

  it('parses tor-geoipdb lines of both families', () => {
    const v4 = expandGeoipLines(['# comment', '', '16777216,16777471,AU', '16777472,16778239,CN'], 4);
    expect(v4).toEqual(['1.0.0.0/24', '1.0.1.0/24', '1.0.2.0/23']);
    const v6 = expandGeoipLines(['2001:550:2:8::2b1:0,2001:550:2:8::2b2:ffff,CA', '2001::,2001:0:ffff:ffff:ffff:ffff:ffff:ffff,??'], 6);
    expect(v6).toEqual(['2001:550:2:8::2b1:0/112', '2001:550:2:8::2b2:0/112', '2001::/32']);
  });

  it('writes IPv6 in RFC 5952 form, agreeing with the WHATWG URL serializer', () => {
    const rnd = mulberry32(1);
    for (let i = 0; i < 2000; i++) {
      let v = 0n;
      // groups are zero half of the time, to exercise :: placement
      for (let g = 0; g < 8; g++) v = (v << 16n) | (rnd() < 0.5 ? 0n : BigInt(Math.floor(rnd() * 0x10000)));
      const text = formatIPv6(v);
      expect(text).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
      expect(parseIPv6(text)).toBe(v);
    }
    expect(formatIPv6(parseIPv6('2001:db8:0:0:1:0:0:1'))).toBe('2001:db8::1:0:0:1');
    expect(formatIPv6(parseIPv6('2001:db8:0:1:1:1:1:1'))).toBe('2001:db8:0:1:1:1:1:1');
    expect(parseIPv6('::ffff:1.2.3.4')).toBe(0xffff01020304n);
    expect(() => parseIPv6('1::2::3')).toThrow(/invalid IPv6/);
    expect(formatIPv4(parseIPv4('203.0.113.255'))).toBe('203.0.113.255');
  });

  it('shuffles deterministically and as a permutation', () => {
    const a = shuffle(Array.from({ length: 100 }, (_, i) => i), 42);
    const b = shuffle(Array.from({ length: 100 }, (_, i) => i), 42);
    expect(a).toEqual(b);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(a).not.toEqual(Array.from({ length: 100 }, (_, i) => i));
  });
});
