/**
 * Golden payloads for a few small policies (UPDATE_GOLDEN=1 rewrites them),
 * and every golden file loaded by the real kernel tools inside a cwt-*
 * namespace: ipset restore, iptables-restore --test / ip6tables-restore --test,
 * then a real --noflush load.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { compileSegment } from '../../src/compile/index.js';
import { renderPayloads } from '../../src/compile/cli.js';
import { kernelGate } from '../helpers/caps.js';
import { goldenCases } from './golden-cases.js';
import { inNs, loadPayloads, withNetns } from './netns-load.js';

const GOLDEN = fileURLToPath(new URL('../golden', import.meta.url));
const FILES = ['ipset.restore', 'iptables.v4', 'iptables.v6'] as const;
const UPDATE = process.env.UPDATE_GOLDEN === '1';

describe('golden payloads', () => {
  for (const c of goldenCases()) {
    it(c.name, () => {
      const payloads = renderPayloads(compileSegment(c.policy, c.segment).plan);
      const dir = join(GOLDEN, c.name);
      if (UPDATE) mkdirSync(dir, { recursive: true });
      for (const f of FILES) {
        const path = join(dir, f);
        if (UPDATE) writeFileSync(path, payloads[f]);
        expect(existsSync(path), `${path} missing: run with UPDATE_GOLDEN=1`).toBe(true);
        expect(payloads[f], `${c.name}/${f} differs from the golden file (UPDATE_GOLDEN=1 to accept)`).toBe(readFileSync(path, 'utf8'));
      }
    });
  }
});

const kernel = kernelGate(['ip', 'ipset', 'iptables-restore', 'ip6tables-restore', 'iptables-save']);

describe.skipIf(kernel.skip)('golden payloads load in the kernel', () => {
  for (const c of goldenCases()) {
    it(c.name, async () => {
      const read = (f: string) => readFileSync(join(GOLDEN, c.name, f), 'utf8');
      const p = { ipset: read('ipset.restore'), v4: read('iptables.v4'), v6: read('iptables.v6') };
      await withNetns('gold', (ns) => {
        expect(loadPayloads(ns, p, true)).toEqual({ ok: true, step: '', stderr: '' });
        expect(loadPayloads(ns, p, false)).toEqual({ ok: true, step: '', stderr: '' });
        // ipset restore again: -exist makes it idempotent
        expect(inNs(ns, ['ipset', 'restore'], p.ipset).code).toBe(0);
        const saved = inNs(ns, ['iptables-save', '-t', 'filter']).stdout;
        const top = /-j (CW-\S+)/.exec(p.v4.split('\n').find((l) => l.startsWith('-I FORWARD'))!)![1];
        expect(saved).toMatch(new RegExp(`^-A FORWARD .*-j ${top}$`, 'm'));
        // every -A line of the payload is live (same count per chain)
        const want = p.v4.split('\n').filter((l) => l.startsWith('-A ')).length;
        const got = saved.split('\n').filter((l) => l.startsWith('-A CW-')).length;
        expect(got).toBe(want);
      });
    });
  }
});
