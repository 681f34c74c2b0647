/**
 * The symbolic evaluator (whole packet regions at once) must agree with
 * evaluatePlan (one packet, as explain and the kernel walk the chains) on
 * random plans from random policies and random packets; and the semantic diff
 * must report exactly the packets whose verdict changes between two random plans.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileSegment } from '../../src/compile/index.js';
import { evaluatePlan, type Packet } from '../../src/compile/evaluate.js';
import { AddrSet } from '../../src/core/index.js';
import { diffPlans, MAX_COMBINED_GROUPS, membershipLabel } from '../../src/diff/semantic.js';
import { evaluateRegion, findClass, protoClasses, type Membership } from '../../src/diff/symbolic.js';
import type { Plan } from '../../src/compile/plan.js';
import { randomPacket, randomPolicy, specAddresses } from '../compile/fixtures.js';

const RUNS = Number(process.env.CW_PROPERTY_RUNS ?? 150);

function symbolicVerdict(plan: Plan, classPlans: Plan[], p: Packet, m: Membership): string {
  const family = p.src.includes(':') ? 6 : 4;
  const classes = protoClasses(classPlans.map((x) => x.families[family]), family);
  const cls = findClass(classes, p.proto, p.port, p.type, p.code);
  if (!cls) throw new Error(`no class for ${JSON.stringify(p)}`);
  const pieces = evaluateRegion(plan, family, m, !!p.established, cls);
  const src = AddrSet.of([p.src]);
  const dst = AddrSet.of([p.dst]);
  const hits = pieces.filter((x) => x.src.contains(src) && x.dst.contains(dst));
  if (hits.length !== 1) throw new Error(`packet in ${hits.length} pieces (pieces must be disjoint and cover everything)`);
  return hits[0].verdict;
}

describe('symbolic evaluation agrees with evaluatePlan', () => {
  it('on random policies and packets', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        const { policy, dynamic, spec } = randomPolicy(seed);
        const { plan } = compileSegment(policy, 'seg');
        const hints = specAddresses(spec);
        for (let i = 0; i < 25; i++) {
          const q = randomPacket(seed * 7919 + i, dynamic, hints);
          const m = { phase: q.phase, groups: q.groups };
          const want = evaluatePlan(plan, q.packet, m).verdict;
          const got = symbolicVerdict(plan, [plan], q.packet, m);
          if (got !== want) throw new Error(`seed ${seed} packet ${JSON.stringify(q)}: symbolic ${got}, evaluatePlan ${want}`);
        }
      }),
      { numRuns: RUNS },
    );
  });
});

describe('semantic diff of two random plans', () => {
  it('is empty for a plan against itself and reports exactly the packets whose verdict changes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 2 ** 31 - 1 }), (s1, s2) => {
        const a = randomPolicy(s1);
        const b = randomPolicy(s2);
        const pa = compileSegment(a.policy, 'seg').plan;
        const pb = compileSegment(b.policy, 'seg').plan;
        expect(diffPlans(pa, pa)).toEqual([]);
        const changes = diffPlans(pa, pb);
        const dynamic = [...new Set([...a.dynamic, ...b.dynamic])];
        const hints = [...specAddresses(a.spec), ...specAddresses(b.spec)];
        for (let i = 0; i < 20; i++) {
          const q = randomPacket(s1 * 31 + s2 + i, dynamic, hints);
          const m = { phase: q.phase, groups: dynamic.length <= MAX_COMBINED_GROUPS ? [...q.groups].sort() : q.groups.slice(0, 1) };
          const va = evaluatePlan(pa, q.packet, m).verdict;
          const vb = evaluatePlan(pb, q.packet, m).verdict;
          const fam = q.packet.src.includes(':') ? 6 : 4;
          const cls = findClass(protoClasses([pa.families[fam], pb.families[fam]], fam), q.packet.proto, q.packet.port, q.packet.type, q.packet.code)!;
          const src = AddrSet.of([q.packet.src]);
          const dst = AddrSet.of([q.packet.dst]);
          const reported = changes.filter((c) => c.family === fam && c.source === membershipLabel(m) && c.established === !!q.packet.established
            && c.services.some((s) => serviceHas(s, cls.label, q.packet.proto, q.packet.port))
            && AddrSet.of(c.src).contains(src) && AddrSet.of(c.dst).contains(dst));
          if (va === vb) expect(reported, `${JSON.stringify(q)} unchanged (${va})`).toEqual([]);
          else {
            expect(reported.length, `${JSON.stringify(q)} ${va} -> ${vb}`).toBe(1);
            expect([reported[0].from, reported[0].to]).toEqual([va, vb]);
          }
        }
      }),
      { numRuns: Math.ceil(RUNS / 3) },
    );
  });
});

/** does a merged service label (`tcp 80,1000-1001`, `icmp 8/0`) cover the packet? */
function serviceHas(label: string, classLabel: string, proto: string, port?: number): boolean {
  if (proto !== 'tcp' && proto !== 'udp') return label === classLabel;
  if (!label.startsWith(`${proto} `)) return false;
  const rest = label.slice(proto.length + 1);
  if (rest === 'all ports') return true;
  return rest.split(',').some((r) => {
    const [f, t] = r.split('-').map(Number);
    return port! >= f && port! <= (t ?? f);
  });
}

describe('a plan parsed back from its payloads', () => {
  it('means the same as the compiled plan (random policies)', async () => {
    const { renderPayloads } = await import('../../src/compile/cli.js');
    const { planFromPayloads } = await import('../../src/diff/parse.js');
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        const { policy } = randomPolicy(seed);
        const { plan } = compileSegment(policy, 'seg');
        const p = renderPayloads(plan);
        const back = planFromPayloads({ ipset: p['ipset.restore'], v4: p['iptables.v4'], v6: p['iptables.v6'] });
        // the mode shows only through allow targets (ACCEPT vs RETURN)
        const allows = [4, 6].some((f) => plan.families[f as 4 | 6].chains.some((c) => c.rules.some((r) => r.target.kind === 'allow')));
        if (allows) expect(back.mode).toBe(plan.mode);
        expect(diffPlans(plan, back)).toEqual([]);
      }),
      { numRuns: Math.ceil(RUNS / 3) },
    );
  });
});
