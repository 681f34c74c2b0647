/**
 * Names and descriptions are data: quotes, backslashes, newlines, $() and
 * backticks in policy names and descriptions must neither break out of the
 * iptables-restore quoting nor add options or lines. Checked on the text
 * and by the kernel's own parser in a cwt-* namespace.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkPolicy, compileSegment } from '../../src/compile/index.js';
import { renderPayloads } from '../../src/compile/cli.js';
import { loadPolicy } from '../../src/policy/index.js';
import { iptQuote } from '../../src/render/quote.js';
import { kernelGate } from '../helpers/caps.js';
import { tokenize } from '../kernel/payload.js';
import { inNs, loadPayloads, withNetns } from './netns-load.js';

const CORPUS = fileURLToPath(new URL('./fixtures/quoting.yaml', import.meta.url));
const GOOD = fileURLToPath(new URL('../policies/good/description-quoting.yaml', import.meta.url));

async function compiled() {
  const policy = await loadPolicy(CORPUS);
  const seg = [...policy.segments.keys()][0];
  return renderPayloads(compileSegment(policy, seg).plan);
}

describe('quoting of policy text', () => {
  it('iptQuote escapes quotes and backslashes and removes control characters', () => {
    expect(iptQuote('a "b" \\ c\nd\re\tf')).toBe('"a \\"b\\" \\\\ c d e f"');
    expect(tokenize(`x ${iptQuote('$(id) `id` " -j ACCEPT \\')} y`)).toEqual(['x', '$(id) `id` " -j ACCEPT \\', 'y']);
    // long text is cut before escaping, never inside an escape
    const q = iptQuote('"'.repeat(500));
    expect(q.length).toBeLessThan(500);
    expect(tokenize(q)).toHaveLength(1);
  });

  it('the description corpus compiles to one line per rule with a single comment word', async () => {
    const p = await compiled();
    for (const text of [p['iptables.v4'], p['iptables.v6']]) {
      for (const line of text.split('\n').filter((l) => l.startsWith('-A ') || l.startsWith('-I '))) {
        const toks = tokenize(line);
        const i = toks.indexOf('--comment');
        expect(i).toBeGreaterThan(0);
        // the comment is one token and is followed only by the target
        expect(['-j', '-g']).toContain(toks[i + 2]);
        expect(toks.filter((t) => t === '-j' || t === '-g')).toHaveLength(1);
      }
      expect(text).not.toMatch(/^-A FORWARD/m);
      expect(text.split('\n').filter((l) => l.startsWith('-I FORWARD'))).toHaveLength(1);
    }
    expect(p['iptables.v4']).toContain('$(rm -rf /) `id`');
  });

  it('the shared description corpus (no segments) validates without errors', async () => {
    const policy = await loadPolicy(GOOD);
    expect(checkPolicy(policy).filter((d) => d.severity === 'error')).toEqual([]);
  });
});

const kernel = kernelGate(['ip', 'ipset', 'iptables-restore', 'ip6tables-restore', 'iptables-save']);

describe.skipIf(kernel.skip)('quoting corpus in the kernel', () => {
  it('iptables-restore --test accepts it and the live rules are exactly the payload rules', async () => {
    const p = await compiled();
    const payload = { ipset: p['ipset.restore'], v4: p['iptables.v4'], v6: p['iptables.v6'] };
    await withNetns('quote', (ns) => {
      expect(loadPayloads(ns, payload, true)).toEqual({ ok: true, step: '', stderr: '' });
      expect(loadPayloads(ns, payload, false)).toEqual({ ok: true, step: '', stderr: '' });
      for (const [tool, text] of [['iptables-save', payload.v4], ['ip6tables-save', payload.v6]] as const) {
        const saved = inNs(ns, [tool, '-t', 'filter']).stdout;
        const live = saved.split('\n').filter((l) => l.startsWith('-A '));
        expect(live.filter((l) => l.startsWith('-A FORWARD'))).toHaveLength(1);
        expect(live.filter((l) => l.startsWith('-A CW-'))).toHaveLength(text.split('\n').filter((l) => l.startsWith('-A ')).length);
        // the comment text arrives intact (the kernel keeps it verbatim)
        const comments = live.map((l) => tokenize(l)[tokenize(l).indexOf('--comment') + 1]);
        const want = text.split('\n').filter((l) => l.startsWith('-A ') || l.startsWith('-I ')).map((l) => tokenize(l)[tokenize(l).indexOf('--comment') + 1]);
        expect(comments.sort()).toEqual(want.sort());
      }
    });
  });
});
