import { describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { checkPolicy, compileSegment, DEFAULT_MAX_SET_ENTRIES, logPrefix } from '../../src/compile/index.js';
import { renderAll, renderPayloads } from '../../src/compile/cli.js';
import { familyCounts } from '../../src/render/manifest.js';
import { DiagnosticsError } from '../../src/errors.js';
import { makePolicy, type PolicySpec } from './fixtures.js';

/** n disjoint single hosts in 100.64.0.0/10, as entries */
function hosts(n: number, offset = 0): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const v = 0x64400000 + (i + offset) * 4;
    out.push(`${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`);
  }
  return out;
}

const base = (dest: string[]): PolicySpec => ({
  asgs: {
    a: [
      { protocol: 'tcp', destination: dest, ports: [{ from: 443, to: 443 }, { from: 8443, to: 8443 }] },
      { protocol: 'udp', destination: dest, ports: [{ from: 1000, to: 2000 }] },
      { protocol: 'all', destination: dest },
    ],
  },
  groups: { sp: 'dynamic', st: ['192.168.0.0/16'] },
  bindings: [{ asgs: ['a'] }, { asgs: ['a'], groups: ['sp', 'st'], phases: ['running'] }],
});

describe('compileSegment', () => {
  it('rule count does not grow with the number of destinations', () => {
    const small = compileSegment(makePolicy(base(hosts(10))), 'shared').plan;
    const big = compileSegment(makePolicy(base(hosts(5000))), 'shared').plan;
    expect(familyCounts(big, 4).rules).toBe(familyCounts(small, 4).rules);
    expect(familyCounts(big, 4).sets).toBe(familyCounts(small, 4).sets);
    expect(familyCounts(big, 4).entries).toBeGreaterThan(familyCounts(small, 4).entries + 5000);
  });

  it('sizes hash sets with headroom: at most one entry per bucket up to 1,024 entries, four above', () => {
    for (const [n, hashsize, maxelem] of [[10, 64, 65536], [300, 512, 65536], [2000, 1024, 65536], [20000, 8192, 65536], [40000, 16384, 131072]]) {
      const { plan } = compileSegment(makePolicy({ asgs: { a: [{ protocol: 'all', destination: hosts(n) }] }, bindings: [{ asgs: ['a'] }] }), 'shared');
      const set = plan.families[4].sets.find((s) => s.kind.type === 'net' && s.entries === n);
      expect(set, `a set of ${n} entries`).toBeDefined();
      expect([set!.hashsize, set!.maxelem], `${n} entries`).toEqual([hashsize, maxelem]);
      expect(set!.maxelem).toBeGreaterThanOrEqual(2 * n);
    }
  });

  it('an unchanged policy gives byte-identical payloads and manifest', () => {
    const a = renderAll(compileSegment(makePolicy(base(hosts(50))), 'shared').plan);
    const b = renderAll(compileSegment(makePolicy(base(hosts(50))), 'shared').plan);
    expect(b).toEqual(a);
    const c = renderAll(compileSegment(makePolicy(base(hosts(51))), 'shared').plan);
    expect(c['ipset.restore']).not.toBe(a['ipset.restore']);
  });

  it('names stay within kernel limits', () => {
    const spec = base(hosts(3));
    spec.groups = { 'a-very-long-group-name-that-goes-on-and-on': 'dynamic', 'Space.X': ['10.9.0.0/16'] };
    spec.segments = { 'a-segment-name-far-longer-than-twenty-eight-characters': { containerNetwork: ['10.255.0.0/16'] } };
    spec.bindings = [{ asgs: ['a'], groups: ['a-very-long-group-name-that-goes-on-and-on'] }];
    const { plan } = compileSegment(makePolicy(spec), 'a-segment-name-far-longer-than-twenty-eight-characters');
    for (const f of [4, 6] as const) {
      for (const c of plan.families[f].chains) expect(c.name.length, c.name).toBeLessThanOrEqual(28);
      for (const s of plan.families[f].sets) expect(s.name.length, s.name).toBeLessThanOrEqual(31);
    }
    const v4 = renderPayloads(plan)['iptables.v4'];
    const prefixes = [...v4.matchAll(/--log-prefix "([^"]*)"/g)].map((m) => m[1]);
    for (const p of prefixes) expect(p.length).toBeLessThanOrEqual(29);
  });

  it('log prefixes are truncated to 29 characters and end with a space', () => {
    const p = logPrefix('CW-DENY', 'x'.repeat(60));
    expect(p.length).toBe(29);
    expect(p.endsWith(' ')).toBe(true);
    expect(logPrefix('CW-DENY', 'seg "q" $(x)')).toBe('CW-DENY seg__q____x_ ');
  });

  it('identical destination sets are shared (content-addressed), identical chains merged', () => {
    const { plan } = compileSegment(makePolicy({
      asgs: { x: [{ protocol: 'all', destination: ['203.0.113.0/24'] }], y: [{ protocol: 'all', destination: ['203.0.113.0/25', '203.0.113.128/25'] }] },
      groups: { g1: ['192.168.1.0/24'], g2: ['192.168.2.0/24'], dyn: 'dynamic' },
      bindings: [{ asgs: ['x'], groups: ['g1'] }, { asgs: ['y'], groups: ['g2'] }],
    }), 'shared');
    const dstSets = plan.families[4].sets.filter((s) => s.kind.type === 'net' && s.kind.addrs.equals(AddrSet.of(['203.0.113.0/24'])));
    expect(dstSets).toHaveLength(1);
    expect(plan.stats.setsShared).toBeGreaterThanOrEqual(1);
    // running and staging chains are identical here: one chain serves both phases
    const phaseChains = plan.families[4].chains.filter((c) => c.role === 'phase');
    expect(phaseChains).toHaveLength(1);
    expect(plan.stats.chainsMerged).toBeGreaterThanOrEqual(1);
  });

  it('small port lists use hash:net,port, large ones a hash:net set with multiport of at most 15 slots', () => {
    const { plan } = compileSegment(makePolicy({
      asgs: {
        a: [
          { protocol: 'tcp', destination: ['198.51.100.0/24'], ports: [{ from: 80, to: 80 }, { from: 443, to: 443 }] },
          { protocol: 'tcp', destination: ['203.0.113.0/24'], ports: Array.from({ length: 40 }, (_, i) => ({ from: 3000 + 3 * i, to: 3001 + 3 * i })) },
          { protocol: 'udp', destination: ['203.0.113.0/24'], ports: [{ from: 1, to: 65535 }] },
        ],
      },
      bindings: [{ asgs: ['a'] }],
    }), 'shared');
    const sets = plan.families[4].sets;
    const np = sets.find((s) => s.kind.type === 'net,port')!;
    expect(np.entries).toBe(2);
    const v4 = renderPayloads(plan)['iptables.v4'];
    const mp = [...v4.matchAll(/--dports (\S+)/g)].map((m) => m[1]);
    expect(mp.length).toBeGreaterThanOrEqual(6);
    for (const spec of mp) {
      const slots = spec.split(',').reduce((n, p) => n + (p.includes(':') ? 2 : 1), 0);
      expect(slots).toBeLessThanOrEqual(15);
    }
    expect(v4).toContain('-p udp -m udp --dport 1:65535');
    const ipset = renderPayloads(plan)['ipset.restore'];
    // a range never expands into per-port entries
    expect(ipset.split('\n').filter((l) => l.startsWith('add ')).length).toBeLessThan(10);
  });

  it('0.0.0.0/0 and ::/0 are written as two /1 (hash:net cannot hold a /0)', () => {
    const { plan } = compileSegment(makePolicy({ asgs: { a: [{ protocol: 'all', destination: ['0.0.0.0/0', '::/0'] }] }, bindings: [{ asgs: ['a'] }] }), 'shared');
    const ipset = renderPayloads(plan)['ipset.restore'];
    expect(ipset).toMatch(/^add \S+ 0\.0\.0\.0\/1 -exist$/m);
    expect(ipset).toMatch(/^add \S+ 128\.0\.0\.0\/1 -exist$/m);
    expect(ipset).toMatch(/^add \S+ 8000::\/1 -exist$/m);
    expect(ipset).not.toMatch(/\/0 -exist/);
  });

  it('a set larger than the maximum is an error naming the policy entry (generated at test time)', () => {
    // DEFAULT_MAX_SET_ENTRIES + 1 disjoint hosts, built straight as ranges
    const n = DEFAULT_MAX_SET_ENTRIES + 1;
    const ranges = new Uint32Array(2 * n);
    for (let i = 0; i < n; i++) {
      ranges[2 * i] = 0x0b000000 + 2 * i;
      ranges[2 * i + 1] = 0x0b000000 + 2 * i;
    }
    const policy = makePolicy({ asgs: { huge: [{ protocol: 'all', destination: ['203.0.113.1'] }] }, bindings: [{ asgs: ['huge'] }] });
    const rule = policy.securityGroups.get('huge')!.rules[0];
    rule.destination = new AddrSet(ranges, new BigUint64Array(0));
    let err: unknown;
    try {
      compileSegment(policy, 'shared');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DiagnosticsError);
    const d = (err as DiagnosticsError).diagnostics[0];
    expect(d.loc).toEqual(rule.loc);
    expect(d.message).toContain(String(n));
    expect(d.message).toContain(`maximum ${DEFAULT_MAX_SET_ENTRIES}`);
    expect((err as DiagnosticsError).message).toContain('security_groups.huge[0]');
    // checkPolicy reports it as an error diagnostic instead of throwing
    expect(checkPolicy(policy).filter((x) => x.severity === 'error')).toHaveLength(1);
  });

  it('reports redundant ASG rules (once for duplicates) with their locations', () => {
    const policy = makePolicy({
      asgs: {
        a: [
          { protocol: 'tcp', destination: ['10.0.0.0/8'], ports: [{ from: 1, to: 1024 }] },
          { protocol: 'tcp', destination: ['10.1.0.0/16'], ports: [{ from: 443, to: 443 }] },
          { protocol: 'udp', destination: ['10.1.0.0/16'], ports: [{ from: 53, to: 53 }] },
          { protocol: 'udp', destination: ['10.1.0.0/16'], ports: [{ from: 53, to: 53 }] },
          { protocol: 'icmp', destination: ['10.2.0.0/16'], icmpType: 8, icmpCode: 0 },
          { protocol: 'icmp', destination: ['10.2.0.0/24'], icmpType: 8, icmpCode: 0 },
          { protocol: 'udp', destination: ['10.3.0.0/16'], ports: [{ from: 53, to: 53 }] },
        ],
      },
      bindings: [{ asgs: ['a'] }],
    });
    const ws = compileSegment(policy, 'shared').warnings.filter((w) => w.message.startsWith('redundant'));
    const rules = policy.securityGroups.get('a')!.rules;
    expect(ws.map((w) => w.loc)).toEqual([rules[1].loc, rules[3].loc, rules[5].loc]);
    expect(ws.every((w) => w.severity === 'warning')).toBe(true);
    expect(ws[0].message).toMatch(/rule 0 \(test\.yaml:\d+:\d+\)/);
  });

  it('reports ASG rules shadowed by the segment (restricted, app-to-app space)', () => {
    const policy = makePolicy({
      asgs: {
        a: [
          { protocol: 'all', destination: ['203.0.113.0/24'] },
          { protocol: 'all', destination: ['10.255.1.0/24'] },
          { protocol: 'all', destination: ['10.0.0.0/8'] },
        ],
      },
      segments: { iso: { containerNetwork: ['10.255.0.0/16'], egress: 'restricted', egressAllow: ['10.0.0.0/8'] } },
      bindings: [{ asgs: ['a'], phases: ['running'] }],
    });
    const res = compileSegment(policy, 'iso');
    const rules = policy.securityGroups.get('a')!.rules;
    const sh = res.warnings.filter((w) => w.message.includes('never applies'));
    expect(sh.map((w) => w.loc)).toEqual([rules[0].loc, rules[1].loc]);
    expect(sh[0].message).toContain('egress_allow');
    expect(sh[1].message).toContain('app-to-app');
    expect(res.plan.stats.asgRulesShadowed).toBe(2);
  });

  it('every rule carries a comment; LOG precedes allow for log:true and deny for log_denied', () => {
    const { plan } = compileSegment(makePolicy({
      defaults: { logDenied: true },
      asgs: { a: [{ protocol: 'tcp', destination: ['203.0.113.0/24'], ports: [{ from: 443, to: 443 }], log: true }] },
      bindings: [{ asgs: ['a'] }],
    }), 'shared');
    const v4 = renderPayloads(plan)['iptables.v4'];
    const lines = v4.split('\n').filter((l) => l.startsWith('-A ') || l.startsWith('-I '));
    for (const l of lines) expect(l).toMatch(/-m comment --comment "[^"]*test\.yaml:\d+:\d+ |-m comment --comment "cellwall segment/);
    const logIdx = lines.findIndex((l) => l.includes('--log-prefix "CW-ALLOW shared "'));
    expect(logIdx).toBeGreaterThan(-1);
    expect(lines[logIdx]).toContain('-m limit --limit');
    expect(lines[logIdx + 1]).toMatch(/-j RETURN$/);
    const denyLog = lines.findIndex((l) => l.includes('--log-prefix "CW-DENY shared "'));
    expect(lines[denyLog + 1]).toContain('-p tcp');
    expect(lines[denyLog + 1]).toContain('--reject-with tcp-reset');
    expect(lines[denyLog + 2]).toContain('--reject-with icmp-port-unreachable');
  });

  it('dynamic member sets use the policy names, are created -exist and never flushed', () => {
    const { plan } = compileSegment(makePolicy({ groups: { 'Space.A': 'dynamic' }, asgs: {}, bindings: [] }), 'shared');
    const ipset = renderPayloads(plan)['ipset.restore'];
    expect(ipset).toContain('create cw-d-space-a-r4 hash:net family inet hashsize 1024 maxelem 65536 -exist');
    expect(ipset).toContain('create cw-d-space-a-s6 hash:net family inet6 hashsize 1024 maxelem 65536 -exist');
    expect(ipset).not.toMatch(/^(flush|destroy|swap)/m);
    expect(ipset).not.toMatch(/^add cw-d-/m);
  });

  it('iptables payloads touch only CW- chains and one FORWARD jump', () => {
    const { plan } = compileSegment(makePolicy(base(hosts(5))), 'shared');
    for (const f of ['iptables.v4', 'iptables.v6'] as const) {
      const text = renderPayloads(plan)[f];
      const body = text.split('\n').filter((l) => l && !l.startsWith('#'));
      expect(body[0]).toBe('*filter');
      expect(body[body.length - 1]).toBe('COMMIT');
      for (const l of body.slice(1, -1)) expect(l).toMatch(/^(:CW-\S+ - \[0:0\]|-A CW-\S+ .*|-I FORWARD 1 .* -j CW-\S+)$/);
      expect(body.filter((l) => l.startsWith('-I FORWARD'))).toHaveLength(1);
    }
  });
});
