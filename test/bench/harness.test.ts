import { describe, expect, it } from 'vitest';
import { PrefixIndex, compareCidrLists, lookupQueries, parsePrefix } from '../../bench/lib/cidr.js';
import { median } from '../../bench/lib/measure.js';
import { ratioOf } from '../../bench/lib/report.js';
import { type CfScaleShape, countNaive, generateCfScale, naiveContainers, naiveLines } from '../../bench/cfscale.js';

describe('bench reference helpers', () => {
  it('compares CIDR lists as canonical sets, and finds the first difference', () => {
    expect(compareCidrLists(['10.0.0.1', '192.0.2.0/24'], ['192.0.2.0/24', '10.0.0.1/32'], 4).agree).toBe(true);
    expect(compareCidrLists(['2001:DB8:0:0::/32'], ['2001:db8::/32'], 6).agree).toBe(true);
    const d = compareCidrLists(['10.0.0.0/8', '192.0.2.0/24'], ['10.0.0.0/8', '192.0.2.0/25'], 4);
    expect(d.agree).toBe(false);
    expect(d.firstDifference).toEqual({ index: 1, a: '192.0.2.0/24', b: '192.0.2.0/25' });
    expect(compareCidrLists(['10.0.0.0/8'], [], 4).agree).toBe(false);
  });

  it('PrefixIndex finds the containing prefix and rejects overlaps', () => {
    const idx = new PrefixIndex(['192.0.2.0/24', '10.0.0.0/8', '198.51.100.7/32'], 4);
    const at = (a: string) => idx.find(parsePrefix(a, 4).start);
    expect(at('10.255.255.255')).toBe(1);
    expect(at('192.0.2.128')).toBe(0);
    expect(at('198.51.100.7')).toBe(2);
    expect(at('198.51.100.8')).toBe(-1);
    expect(at('9.255.255.255')).toBe(-1);
    expect(() => new PrefixIndex(['10.0.0.0/8', '10.1.0.0/16'], 4)).toThrow(/overlapping/);
  });

  it('lookup queries are deterministic and half of them hit', () => {
    const prefixes = ['2001:db8::/48', 'fd00::/64'];
    const a = lookupQueries(prefixes, 6, 200, 7);
    expect(lookupQueries(prefixes, 6, 200, 7)).toEqual(a);
    const idx = new PrefixIndex(prefixes, 6);
    const hits = a.filter((q) => idx.find(parsePrefix(q, 6).start) >= 0).length;
    expect(hits).toBeGreaterThanOrEqual(100); // every even-numbered query is drawn inside a prefix
  });

  it('ratios: > 1 means cellwall is better for times and for throughputs', () => {
    expect(ratioOf({ name: 'c', value: 10, unit: 'ms' }, { name: 'p', value: 50, unit: 'ms' })).toBe(5);
    expect(ratioOf({ name: 'c', value: 500, unit: 'ops/s' }, { name: 'p', value: 100, unit: 'ops/s' })).toBe(5);
    expect(ratioOf(null, { name: 'p', value: 1, unit: 'ms' })).toBeNull();
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });
});

describe('CF-scale generator', () => {
  const shape: CfScaleShape = { asgs: 6, rulesPerAsg: 4, maxDestinations: 50, spaces: 3, apps: 5, appRules: 6, globalAsgs: 1 };

  it('is deterministic and has the requested shape in the SPEC §1 format', () => {
    const p = generateCfScale(3, shape);
    expect(generateCfScale(3, shape)).toEqual(p);
    expect(Object.keys(p.security_groups)).toHaveLength(6);
    expect(Object.values(p.security_groups).every((r) => r.length === 4)).toBe(true);
    expect(Object.keys(p.groups)).toHaveLength(8);
    expect(p.policies.rules).toHaveLength(6);
    for (const rules of Object.values(p.security_groups)) {
      for (const r of rules) {
        expect(r.destination).not.toMatch(/\s/);
        expect(r.ports !== undefined).toBe(r.protocol === 'tcp' || r.protocol === 'udp');
        if (r.protocol === 'icmp') expect(r.destination).not.toContain(':');
      }
    }
  });

  it('naive emission: one rule per destination x port item, counted as rendered', () => {
    const p = generateCfScale(3, shape);
    const containers = naiveContainers(3, shape, 4);
    const counted = countNaive(p, containers);
    const ruleLines = [...naiveLines(p, containers)].filter(([, l]) => l.startsWith('-A ')).length;
    expect(counted.rules.total).toBe(ruleLines);
    // lower bound by hand: every container gets every global ASG rule's destinations
    const globalRules = p.security_groups['asg-0000'];
    const perContainer = globalRules.reduce((n, r) => n + r.destination.split(',').length * (r.ports?.split(',').length ?? 1), 0);
    expect(counted.rules.total).toBeGreaterThanOrEqual(4 * perContainer);
    expect(naiveContainers(3, shape, 0, true).map((c) => c.space)).toEqual(['space-0000', 'space-0001', 'space-0002']);
  });
});
