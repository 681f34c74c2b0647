/**
 * planMaps computes verdict rows symbolically (one walk of the chains per
 * source over all destination classes); planMapsByEvaluation is the reference
 * (evaluatePlan per cell). They must give the same maps, byte for byte, on
 * random policies (both modes, both `established` settings, with dynamic
 * members) and on every segment of the repository's examples.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadPolicy } from '../../src/policy/index.js';
import { compileSegment } from '../../src/compile/index.js';
import fc from 'fast-check';
import { planMaps, planMapsByEvaluation, rangePrefixes, type MapContents, type MapMember } from '../../src/ebpf/maps.js';
import { genPolicy, Rand } from '../kernel/gen.js';

const EXAMPLES = fileURLToPath(new URL('../../examples', import.meta.url));
const MEMBERS: MapMember[] = [
  { addr: '10.255.0.3', phase: 'running', groups: ['space-a'] }, { addr: '10.255.0.5', phase: 'staging', groups: ['space-a'] },
  { addr: '10.255.0.7', phase: 'running', groups: ['space-a'] }, { addr: 'fd00:255::3', phase: 'running', groups: ['space-a'] },
];

const hexMaps = (c: MapContents) => Object.fromEntries(Object.entries(c.maps).map(([n, es]) => [n, es.map((e) => `${e.key.toString('hex')}=${e.value.toString('hex')}`)]));

describe('rangePrefixes over 32 and 128 bits', () => {
  it('covers exactly the range with aligned blocks, each as large as possible', () => {
    for (const bits of [32, 128]) {
      const max = (1n << BigInt(bits)) - 1n;
      fc.assert(fc.property(fc.bigInt({ min: 0n, max }), fc.bigInt({ min: 0n, max }), (a, b) => {
        const [s, e] = a <= b ? [a, b] : [b, a];
        let next = s;
        for (const [base, len] of rangePrefixes(s, e, bits)) {
          const size = 1n << BigInt(bits - len);
          expect(base).toBe(next);
          expect(base % size).toBe(0n);
          // maximal: the doubled block is misaligned or leaves the range
          if (len > 0) expect(base % (size * 2n) !== 0n || base + size * 2n - 1n > e).toBe(true);
          next = base + size;
        }
        expect(next).toBe(e + 1n);
      }), { numRuns: 100 });
    }
    expect(rangePrefixes(0n, (1n << 128n) - 1n, 128)).toEqual([[0n, 0]]);
    expect(rangePrefixes(0n, 0xffffffffn, 32)).toEqual([[0n, 0]]);
  });
});

describe('planMaps (symbolic) equals planMapsByEvaluation', () => {
  it('on random policies, with and without members', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-ebpfscale-'));
    try {
      let shared = 0;
      for (let seed = 1; seed <= 24; seed++) {
        const r = new Rand(0x5ca1e + seed);
        const doc = genPolicy(r, seed % 2 ? 'enforce' : 'tighten') as { defaults: Record<string, unknown> };
        if (seed % 5 === 0) doc.defaults.established = 'none';
        const file = join(tmp, `p${seed}.yaml`);
        writeFileSync(file, stringify(doc));
        const plan = compileSegment(await loadPolicy(file), 'seg').plan;
        const opts = seed % 3 ? { members: MEMBERS } : {};
        const fast = planMaps(plan, opts), ref = planMapsByEvaluation(plan, opts);
        expect(hexMaps(fast), `seed ${seed}`).toEqual(hexMaps(ref));
        expect(fast.stats.verdicts).toBe(ref.stats.verdicts);
        // identical rows are computed once: members in the same groups as their class share its row
        if (fast.stats.evaluations < fast.stats.srcClasses * fast.stats.dstClasses) shared++;
      }
      expect(shared, 'some sources shared a row').toBeGreaterThan(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('on every segment of the examples', async () => {
    for (const f of readdirSync(EXAMPLES).filter((x) => x.endsWith('.yaml'))) {
      const policy = await loadPolicy(join(EXAMPLES, f));
      for (const seg of policy.segments.keys()) {
        const plan = compileSegment(policy, seg).plan;
        expect(hexMaps(planMaps(plan)), `${f} ${seg}`).toEqual(hexMaps(planMapsByEvaluation(plan)));
      }
    }
  });
});
