/**
 * Network resolution against a direct computation: a network is the union
 * of its inclusions (addresses or earlier networks, resolved) minus the union
 * of its exclusions, whatever the order in which they are written.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { loadPolicyText } from '../../src/policy/index.js';

const cidr = fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 }), fc.constantFrom(8, 16, 24, 32))
  .map(([a, b, len]) => {
    const octets = [10, a, b, 7].map((o, i) => (i * 8 + 8 <= len ? o : 0));
    return `${octets.join('.')}/${len}`;
  });
const v6 = fc.integer({ min: 0, max: 0xffff }).map((n) => `2001:db8:${n.toString(16)}::/48`);

/** entries of network i: literals or names of networks 0..i-1, each maybe excluded */
const spec = fc.array(
  fc.array(fc.record({ lit: fc.oneof(cidr, v6), ref: fc.nat(), useRef: fc.boolean(), exclude: fc.boolean() }), { minLength: 1, maxLength: 6 }),
  { minLength: 1, maxLength: 6 },
);

describe('network resolution', () => {
  it('matches union(inclusions) minus union(exclusions), following names', async () => {
    await fc.assert(fc.asyncProperty(spec, async (nets) => {
      const written = nets.map((entries, i) => entries.map((e) => ({
        text: e.useRef && i > 0 ? `n${e.ref % i}` : e.lit, exclude: e.exclude,
      })));
      const yaml = ['version: 1', 'networks:', ...written.map((es, i) =>
        `  n${i}: [${es.map((e) => JSON.stringify(`${e.exclude ? '!' : ''}${e.text}`)).join(', ')}]`)].join('\n');
      const p = await loadPolicyText(yaml, 'p.yaml');
      const ref: AddrSet[] = [];
      written.forEach((es, i) => {
        const val = (t: string) => (t.startsWith('n') ? ref[Number(t.slice(1))] : AddrSet.of([t]));
        const inc = es.filter((e) => !e.exclude).reduce((s, e) => s.union(val(e.text)), AddrSet.empty());
        const exc = es.filter((e) => e.exclude).reduce((s, e) => s.union(val(e.text)), AddrSet.empty());
        ref.push(inc.difference(exc));
        expect(p.networks.get(`n${i}`)!.set.equals(ref[i]), yaml).toBe(true);
      });
    }), { numRuns: 100 });
  });
});
