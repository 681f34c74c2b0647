/**
 * Real data: Debian tor-geoipdb expanded to CIDRs and shuffled (bench/data/geoip.ts).
 * v4 output must equal Debian iprange's (up to /32 on single hosts), v6 output
 * Python's ipaddress.collapse_addresses (on a deterministic ~60k subset).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { geoipCidrFile, geoipCidrs } from '../../bench/data/geoip.js';
import { AddrSet, aggregateText, Lookup, parseLines } from '../../src/core/index.js';


const dec = new TextDecoder();

describe('geoip real data', () => {
  it('IPv4 aggregate is identical to iprange', () => {
    const file = geoipCidrFile(4);
    const ours = dec.decode(aggregateText([readFileSync(file)]).text);
    const theirs = execFileSync('iprange', [file], { maxBuffer: 1 << 28 }).toString();
    expect(ours.replace(/\/32$/gm, '')).toBe(theirs);
    expect(ours.split('\n').length - 1).toBeGreaterThan(1000);
  });

  it('IPv4 --ipset-reduce matches iprange', () => {
    const file = geoipCidrFile(4);
    const set = parseLines(readFileSync(file)).set;
    for (const [pct, min] of [[20, 16384], [50, 0], [5, 0]] as const) {
      const ours = set.reducedCidrs(pct, 4, min).join('\n') + '\n';
      const theirs = execFileSync('iprange', ['--ipset-reduce', String(pct), '--ipset-reduce-entries', String(min), file],
        { maxBuffer: 1 << 28 }).toString();
      expect(ours.replace(/\/32$/gm, '')).toBe(theirs);
    }
  });

  it('IPv6 aggregate equals python ipaddress.collapse_addresses on a 60k subset', () => {
    const all = geoipCidrs(6);
    const subset = all.filter((_, i) => i % 10 === 0);
    const input = subset.join('\n') + '\n';
    const ours = dec.decode(aggregateText([new TextEncoder().encode(input)]).text);
    const py = execFileSync('python3', ['-c',
      'import sys,ipaddress\nnets=[ipaddress.ip_network(l) for l in sys.stdin.read().split()]\n'
      + 'sys.stdout.write("".join(str(n)+"\\n" for n in ipaddress.collapse_addresses(nets)))'],
    { input, maxBuffer: 1 << 28 }).toString();
    expect(ours).toBe(py);
  });

  it('lookup maps each of 20k v6 geoip CIDRs to the aggregate CIDR holding it', () => {
    const cidrs = geoipCidrs(6).slice(0, 20000);
    const set = AddrSet.of(cidrs);
    const out = set.toCidrs();
    const lk = Lookup.ofCidrs(set);
    const ids = lk.find(cidrs.map((c) => c.split('/')[0]));
    for (let i = 0; i < cidrs.length; i++) {
      expect(ids[i]).toBeGreaterThanOrEqual(0);
      expect(AddrSet.of([out[ids[i]]]).contains(AddrSet.of([cidrs[i].split('/')[0]]))).toBe(true);
    }
    expect([...lk.find(['::1', '0.0.0.0'])]).toEqual([-1, -1]);
  });
});
