/**
 * explain (evaluating the compiled Plan rule by rule) must agree with the
 * independent model-level reference evaluator of SPEC §2 on random policies
 * and packets: verdict, kernel target, deciding step, and logging.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileSegment } from '../../src/compile/index.js';
import { evaluatePlan } from '../../src/compile/evaluate.js';
import { randomPacket, randomPolicy, specAddresses } from './fixtures.js';
import { referenceEvaluate } from './reference.js';

describe('explain agrees with the SPEC §2 reference evaluator', () => {
  it('on random policies and packets', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        const { policy, dynamic, spec } = randomPolicy(seed);
        const { plan } = compileSegment(policy, 'seg');
        const hints = specAddresses(spec);
        for (let i = 0; i < 40; i++) {
          const q = randomPacket(seed * 7919 + i, dynamic, hints);
          const ev = evaluatePlan(plan, q.packet, { phase: q.phase, groups: q.groups });
          const ref = referenceEvaluate(policy, 'seg', q.packet, { phase: q.phase, groups: q.groups });
          const got = {
            verdict: ev.verdict, target: ev.target, step: ev.step,
            loggedAllow: ev.logged.some((p) => p.startsWith('CW-ALLOW')),
            loggedDeny: ev.logged.some((p) => p.startsWith('CW-DENY')),
          };
          const want = { verdict: ref.verdict, target: ref.target, step: ref.step, loggedAllow: ref.loggedAllow, loggedDeny: ref.loggedDeny };
          if (JSON.stringify(got) !== JSON.stringify(want)) {
            throw new Error(`seed ${seed} packet ${JSON.stringify(q)}\npolicy ${JSON.stringify(spec)}\ngot ${JSON.stringify(got)}\nwant ${JSON.stringify(want)}\ntrace ${ev.trace.map((t) => `${t.chain}#${t.index} ${t.rule.what}`).join(' | ')}`);
          }
        }
      }),
      { numRuns: Number(process.env.CW_PROPERTY_RUNS ?? 300) },
    );
  });
});
