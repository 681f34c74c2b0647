/**
 * Property-based tests of the WASM core against the BigInt reference in
 * ref.ts, on random v4/v6 sets biased towards edge cases: /0, /32, /128,
 * 255.255.255.255, ::, and clustered (adjacent / overlapping) blocks.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddrSet, Lookup, parseEntries, parseLists, jsCidrCount4, jsOp4 } from '../../src/core/index.js';
import { sha256 } from '../../src/core/sha256.js';
import * as R from './ref.js';

type Ent = { f: R.Fam; text: string; iv: R.Iv };
const RUNS = { numRuns: 150 };

function addrArb(f: R.Fam): fc.Arbitrary<bigint> {
  const max = R.MAX[f];
  const anchors = f === 4
    ? [0n, 0x0a000000n, 0x0a000100n, 0xc0a80000n, max - 255n]
    : [0n, 0x20010db8n << 96n, (0x20010db8n << 96n) + (1n << 64n), 0xffffn << 32n, max - 0xffffn];
  return fc.oneof(
    { arbitrary: fc.constantFrom(0n, 1n, max, max - 1n, anchors[3]), weight: 1 },
    { arbitrary: fc.tuple(fc.constantFrom(...anchors), fc.bigInt({ min: 0n, max: 4096n })).map(([a, o]) => (a + o > max ? max : a + o)), weight: 4 },
    { arbitrary: fc.bigInt({ min: 0n, max }), weight: 2 },
  );
}

function entryArb(f: R.Fam): fc.Arbitrary<Ent> {
  const W = R.BITS[f];
  const prefix = fc.oneof(fc.constantFrom(0, W, W - 1, W - 8), fc.integer({ min: 0, max: W }), fc.integer({ min: W - 12, max: W }));
  const cidr = fc.tuple(addrArb(f), prefix).map(([a, p]): Ent => {
    const size = 1n << BigInt(W - p);
    const net = a - (a % size);
    return { f, text: `${R.fmt(f, net)}/${p}`, iv: [net, net + size - 1n] };
  });
  const addr = addrArb(f).map((a): Ent => ({ f, text: R.fmt(f, a), iv: [a, a] }));
  const range = fc.tuple(addrArb(f), addrArb(f)).map(([a, b]): Ent => {
    const [s, e] = a <= b ? [a, b] : [b, a];
    return { f, text: `${R.fmt(f, s)}-${R.fmt(f, e)}`, iv: [s, e] };
  });
  return fc.oneof({ arbitrary: cidr, weight: 3 }, addr, range);
}

const entries = fc.array(fc.oneof(entryArb(4), entryArb(6)), { maxLength: 14 });

function ref(es: Ent[], f: R.Fam): R.Iv[] {
  return R.normalize(es.filter((e) => e.f === f).map((e) => [e.iv[0], e.iv[1]] as R.Iv));
}

function check(set: AddrSet, v4: R.Iv[], v6: R.Iv[]): void {
  expect(R.fromV4(set.v4)).toEqual(v4);
  expect(R.fromV6(set.v6)).toEqual(v6);
}

describe('core vs reference (fast-check)', () => {
  it('parse + union of entries (AddrSet.of)', () => {
    fc.assert(fc.property(entries, (es) => {
      check(AddrSet.of(es.map((e) => e.text)), ref(es, 4), ref(es, 6));
    }), RUNS);
  });

  it('parseLists: many comma lists in one call, each its own union; a list with a bad item has none', () => {
    // lists of 0-60 entries (past the core's small-sort threshold), some with a bad item
    const list = fc.tuple(fc.array(fc.oneof(entryArb(4), entryArb(6)), { maxLength: 60 }),
      fc.constantFrom(undefined, '', '10.0.0.256', '1.2.3.4/33', 'vpc', '10.0.0.1 ', '2001:db8::/129'));
    fc.assert(fc.property(fc.array(list, { minLength: 1, maxLength: 12 }), (lists) => {
      const texts = lists.map(([es, bad]) => [...es.map((e) => e.text), ...(bad === undefined ? [] : [bad])].join(','));
      const got = parseLists(texts);
      expect(got.length).toBe(lists.length);
      lists.forEach(([es, bad], i) => {
        if (bad !== undefined || es.length === 0) {
          expect(got[i], texts[i]).toBeUndefined();
          return;
        }
        expect(got[i]!.count).toBe(es.length);
        check(got[i]!.set, ref(es, 4), ref(es, 6));
      });
    }), RUNS);
    expect(() => parseLists(['10.0.0.1\n10.0.0.2'])).toThrow(/newline/);
  });

  it('union, intersection, difference, contains, equals', () => {
    fc.assert(fc.property(entries, entries, (ea, eb) => {
      const a = AddrSet.of(ea.map((e) => e.text)), b = AddrSet.of(eb.map((e) => e.text));
      for (const f of [4, 6] as const) {
        const ra = ref(ea, f), rb = ref(eb, f);
        const pick = (s: AddrSet) => (f === 4 ? R.fromV4(s.v4) : R.fromV6(s.v6));
        expect(pick(a.union(b))).toEqual(R.union(ra, rb));
        expect(pick(a.intersect(b))).toEqual(R.intersect(ra, rb));
        expect(pick(a.difference(b))).toEqual(R.difference(ra, rb));
      }
      const inter = a.intersect(b);
      expect(a.contains(inter)).toBe(true);
      expect(a.union(b).contains(b)).toBe(true);
      expect(a.contains(b)).toBe(a.union(b).equals(a));
      expect(a.difference(b).union(inter).equals(a)).toBe(true);
      expect(a.difference(b).intersect(b).isEmpty()).toBe(true);
    }), RUNS);
  });

  it('minimal CIDR cover and counts', () => {
    fc.assert(fc.property(entries, (es) => {
      const s = AddrSet.of(es.map((e) => e.text));
      const c4 = R.cover(ref(es, 4), 4).map((c) => R.cidrText(4, c));
      const c6 = R.cover(ref(es, 6), 6).map((c) => R.cidrText(6, c));
      expect(s.toCidrs()).toEqual([...c4, ...c6]);
      expect(s.toCidrs(4)).toEqual(c4);
      expect(s.toCidrs(6)).toEqual(c6);
      expect(s.cidrCount(4)).toBe(c4.length);
      expect(jsCidrCount4(s.v4)).toBe(c4.length);
      expect(s.cidrCount(6)).toBe(c6.length);
      // the cover parses back to the same set
      expect(AddrSet.of(s.toCidrs()).equals(s)).toBe(true);
    }), RUNS);
  });

  it('v4 CIDR counts: the JS count (small sets) and the core (large sets) agree', () => {
    // several hundred random ranges, so cidrCount() takes the core's path
    // range i starts in its own 4M slot: disjoint, not adjacent
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat({ max: (1 << 21) - 1 }), fc.nat({ max: 1 << 20 })), { minLength: 300, maxLength: 600 }), (rs) => {
      const entries = rs.map(([off, len], i) => { const s = i * 2 ** 22 + 1 + off; return `${ip4(s)}-${ip4(s + len)}`; });
      const set = AddrSet.of([...entries, '0.0.0.0', '255.255.255.255']);
      expect(set.v4.length).toBeGreaterThan(512);
      expect(set.cidrCount(4)).toBe(jsCidrCount4(set.v4));
    }), { numRuns: 30 });
    expect(jsCidrCount4(AddrSet.all().v4)).toBe(1);
    expect(jsCidrCount4(Uint32Array.of(1, 0xfffffffe))).toBe(62);
  });

  it('prefix-length reduction keeps the addresses, bounds growth, never adds prefix lengths', () => {
    fc.assert(fc.property(entries, fc.constantFrom(0, 10, 50, 200), fc.constantFrom(0, 64), (es, pct, minEntries) => {
      const s = AddrSet.of(es.map((e) => e.text));
      for (const f of [4, 6] as const) {
        const before = s.toCidrs(f);
        const after = s.reducedCidrs(pct, f, minEntries);
        expect(AddrSet.of(after).equals(s.family(f))).toBe(true);
        const bound = Math.max(Math.floor((before.length * (100 + pct)) / 100), minEntries);
        expect(after.length).toBeLessThanOrEqual(Math.max(bound, before.length));
        const lens = (l: string[]) => new Set(l.map((c) => c.split('/')[1]));
        expect(lens(after).size).toBeLessThanOrEqual(lens(before).size);
        if (pct === 0 && minEntries === 0) expect(after).toEqual(before);
      }
    }), RUNS);
  });

  it('lookup: most specific containing entry, first entry on ties', () => {
    const withIds = fc.array(fc.array(fc.oneof(entryArb(4), entryArb(6)), { minLength: 1, maxLength: 3 }), { maxLength: 8 });
    fc.assert(fc.property(withIds, fc.array(fc.oneof(addrArb(4).map((a) => [4, a] as const), addrArb(6).map((a) => [6, a] as const)), { maxLength: 20 }), (groups, probes) => {
      const refEntries = groups.flatMap((g, id) => ([4, 6] as const).map((f) => ({ f, set: ref(g, f), id })));
      const lk = new Lookup(groups.map((g, id) => ({ set: AddrSet.of(g.map((e) => e.text)), id })));
      // probe the given addresses plus every block boundary
      const blocks = refEntries.flatMap((e) => R.cover(e.set, e.f).map(([s, p]) => ({ f: e.f, s, end: R.blockEnd(e.f, s, p), p, id: e.id })));
      // probe the given addresses plus the boundaries of (up to 40) blocks
      const qs: Array<readonly [R.Fam, bigint]> = [...probes];
      for (const b of blocks.filter((_, i) => i % Math.ceil(blocks.length / 40) === 0)) {
        qs.push([b.f, b.s], [b.f, b.end]);
        if (b.s > 0n) qs.push([b.f, b.s - 1n]);
        if (b.end < R.MAX[b.f]) qs.push([b.f, b.end + 1n]);
      }
      const expected = qs.map(([f, a]) => {
        let best = -1, bestP = -1;
        for (const b of blocks) if (b.f === f && b.s <= a && a <= b.end && b.p > bestP) { best = b.id; bestP = b.p; }
        return best;
      });
      const got = lk.find(qs.map(([f, a]) => R.fmt(f, a)));
      expect([...got]).toEqual(expected);
    }), { numRuns: 100 });
  });

  it('equal sets hash equally whatever the input order; different sets differ', () => {
    fc.assert(fc.property(entries, entries, (ea, eb) => {
      const a = AddrSet.of(ea.map((e) => e.text));
      const a2 = AddrSet.of([...ea].reverse().map((e) => e.text).concat(a.toCidrs()));
      expect(a2.hash()).toBe(a.hash());
      const b = AddrSet.of(eb.map((e) => e.text));
      expect(a.hash() === b.hash()).toBe(a.equals(b));
    }), RUNS);
  });

  it('hashWith is sha256 of prefix, range counts and ranges (the content addresses of set names stay what they were)', () => {
    // the definition, streamed through createHash (hashWith builds one buffer for a one-shot digest)
    const def = (s: AddrSet, prefix: string) => {
      const h = createHash('sha256');
      h.update(prefix, 'utf8');
      h.update(new Uint8Array(new Uint32Array([s.v4.length, s.v6.length]).buffer));
      h.update(new Uint8Array(s.v4.buffer, s.v4.byteOffset, s.v4.byteLength));
      h.update(new Uint8Array(s.v6.buffer, s.v6.byteOffset, s.v6.byteLength));
      return h.digest('hex');
    };
    fc.assert(fc.property(entries, fc.string({ unit: 'binary', maxLength: 40 }), (ea, prefix) => {
      const a = AddrSet.of(ea.map((e) => e.text));
      expect(a.hashWith(prefix)).toBe(def(a, prefix));
      expect(a.hash()).toBe(def(a, ''));
    }), RUNS);
    // larger than the first scratch buffer, after a small one
    const big = AddrSet.of(Array.from({ length: 3000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/25`).concat(['2001:db8::/64', '2001:db8:1::/64']));
    expect(AddrSet.of(['192.0.2.1']).hashWith('net|4|')).toBe(def(AddrSet.of(['192.0.2.1']), 'net|4|'));
    expect(big.hashWith('net|4|64/65536|')).toBe(def(big, 'net|4|64/65536|'));
    expect(AddrSet.empty().hashWith('x')).toBe(def(AddrSet.empty(), 'x'));
  });

  it('sha256 (one-shot where Node has it) equals createHash for text and bytes', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (t) => {
      expect(sha256(t)).toBe(createHash('sha256').update(t, 'utf8').digest('hex'));
      const b = new TextEncoder().encode(t);
      expect(sha256(b)).toBe(createHash('sha256').update(b).digest('hex'));
    }), RUNS);
  });
});

/** non-canonical but valid spellings of an IPv6 address */
function v6Spellings(v: bigint): string[] {
  const g = Array.from({ length: 8 }, (_, i) => Number((v >> BigInt(112 - 16 * i)) & 0xffffn));
  const full = g.map((x) => x.toString(16).padStart(4, '0')).join(':');
  const out = [full, full.toUpperCase(), g.map((x) => x.toString(16)).join(':'),
    `${g.slice(0, 6).map((x) => x.toString(16)).join(':')}:${R.fmt4(v & 0xffffffffn)}`];
  // compress each run of zero groups (not only the longest)
  for (let i = 0; i < 8; i++) {
    if (g[i] !== 0) continue;
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    out.push(`${g.slice(0, i).map((x) => x.toString(16)).join(':')}::${g.slice(j).map((x) => x.toString(16)).join(':')}`);
    i = j;
  }
  return out;
}

describe('parse (fast-check)', () => {
  it('every valid spelling of an address parses to it, canonical text is RFC 5952', () => {
    fc.assert(fc.property(addrArb(6), (v) => {
      const spell = v6Spellings(v);
      const res = parseEntries(spell);
      for (const [i, r] of res.entries()) {
        expect(r.ok, spell[i]).toBe(true);
        if (!r.ok) continue;
        expect(r.family).toBe(6);
        expect(r.kind).toBe('address');
        expect(r.text).toBe(R.fmt6(v));
        expect(R.fromV6(r.set.v6)).toEqual([[v, v]]);
      }
    }), RUNS);
    fc.assert(fc.property(addrArb(4), (v) => {
      const [r] = parseEntries([R.fmt4(v)]);
      expect(r.ok && r.text === R.fmt4(v) && R.fromV4(r.set.v4)[0][0] === v).toBe(true);
    }), RUNS);
  });

  it('rejects leading zeros, octets > 255, long prefixes, host bits and reversed ranges, at the right offset', () => {
    fc.assert(fc.property(addrArb(4), fc.integer({ min: 0, max: 3 }), (v, k) => {
      const oct = R.fmt4(v).split('.');
      const lz = [...oct]; lz[k] = `0${lz[k]}`;
      const big = [...oct]; big[k] = String(256 + Number(v % 700n));
      const off = oct.slice(0, k).join('.').length + (k ? 1 : 0);
      const [a, b, c] = parseEntries([lz.join('.'), big.join('.'), `${R.fmt4(v)}/${33 + k}`]);
      expect(a).toMatchObject({ ok: false, offset: off, reason: `leading zero in octet "${lz[k]}"` });
      expect(b).toMatchObject({ ok: false, offset: off, reason: `octet "${big[k]}" exceeds 255` });
      expect(c).toMatchObject({ ok: false, reason: `prefix length ${33 + k} exceeds 32` });
    }), RUNS);
    fc.assert(fc.property(fc.oneof(addrArb(4).map((a) => [4, a] as const), addrArb(6).map((a) => [6, a] as const)),
      fc.integer({ min: 0, max: 128 }), ([f, v], p0) => {
        const W = R.BITS[f];
        const p = p0 % (W + 1);
        const size = 1n << BigInt(W - p);
        const net = v - (v % size);
        const text = `${R.fmt(f, v)}/${p}`;
        const [strict] = parseEntries([text]);
        const [loose] = parseEntries([text], { strict: false });
        expect(loose).toMatchObject({ ok: true, text: `${R.fmt(f, net)}/${p}` });
        if (net === v) expect(strict).toMatchObject({ ok: true, kind: 'cidr' });
        else expect(strict).toMatchObject({ ok: false, offset: 0, reason: `host bits set: ${text} (network address is ${R.fmt(f, net)}/${p})` });
      }), RUNS);
    fc.assert(fc.property(addrArb(6), addrArb(6), (a, b) => {
      const [r] = parseEntries([`${R.fmt6(a)}-${R.fmt6(b)}`]);
      if (a <= b) expect(r).toMatchObject({ ok: true, kind: 'range' });
      else expect(r).toMatchObject({ ok: false, reason: `range start ${R.fmt6(a)} is after end ${R.fmt6(b)}` });
    }), RUNS);
  });

  it('random strings never crash the parser and agree with the reference when accepted', () => {
    const alphabet = fc.constantFrom(...'0123456789abcdefABCDEF.:/-,% x'.split(''));
    fc.assert(fc.property(fc.array(fc.string({ unit: alphabet, maxLength: 24 }), { maxLength: 10 }), (strs) => {
      const res = parseEntries(strs);
      expect(res).toHaveLength(strs.length);
      for (const [i, r] of res.entries()) {
        if (r.ok) {
          // canonical text re-parses to the same set
          const [again] = parseEntries([r.text]);
          expect(again.ok && again.set.equals(r.set)).toBe(true);
        } else {
          expect(r.offset).toBeGreaterThanOrEqual(0);
          expect(r.offset).toBeLessThanOrEqual(strs[i].length);
          expect(r.reason.length).toBeGreaterThan(0);
        }
      }
    }), RUNS);
  });
});

describe('v4 set operations: the JS sweep (small sets) and the WASM core (large sets) agree', () => {
  // many short ranges, so that the operands exceed the JS fast path's size and take the WASM path
  const bigV4 = fc.array(fc.tuple(fc.integer({ min: 0, max: 0xfffff }), fc.integer({ min: 0, max: 64 })), { minLength: 200, maxLength: 400 })
    .map((xs) => xs.map(([s, len]) => [BigInt(s * 4096), BigInt(s * 4096 + len)] as R.Iv));
  it('union, intersection, difference of large sets equal the reference and jsOp4', () => {
    fc.assert(fc.property(bigV4, bigV4, (xa, xb) => {
      const ra = R.normalize(xa), rb = R.normalize(xb);
      const toSet = (r: R.Iv[]) => new AddrSet(Uint32Array.from(r.flatMap(([s, e]) => [Number(s), Number(e)])), new BigUint64Array(0));
      const a = toSet(ra), b = toSet(rb);
      expect(R.fromV4(a.union(b).v4)).toEqual(R.union(ra, rb));
      expect(R.fromV4(a.intersect(b).v4)).toEqual(R.intersect(ra, rb));
      expect(R.fromV4(a.difference(b).v4)).toEqual(R.difference(ra, rb));
      for (const [kind, op] of [[0, 'union'], [1, 'intersect'], [2, 'difference']] as const) {
        expect(Array.from(jsOp4(kind, a.v4, b.v4))).toEqual(Array.from(a[op](b).v4));
      }
    }), { numRuns: 60 });
  });
});

function ip4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
