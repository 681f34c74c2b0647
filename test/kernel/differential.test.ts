/**
 * Differential test: for random policies and packets (fixed seeds), the
 * verdict `cellwall explain --json` gives must be what the kernel does with
 * the payload `cellwall compile` wrote:
 *   allow -> the connection succeeds (echo comes back),
 *   deny + REJECT -> refused quickly (RST / ICMP unreachable),
 *   deny + DROP -> timeout,
 *   untouched -> whatever the platform does: tighten here ends FORWARD with
 *   ACCEPT (ok), enforce with policy DROP after an ESTABLISHED accept (timeout).
 * Half the seeds compile in tighten mode, half in enforce mode.
 * explain runs in-process (the command's own action, see cli.ts
 * explainInProcess); for the first probes of each policy the `cellwall explain`
 * process must print the same JSON.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { kernelGate } from '../helpers/caps.js';
import { dynamicSetName } from '../../src/policy/names.js';
import { Topology, type Outcome } from './netns.js';
import { compile, explain, explainInProcess, waitFor, type Explained } from './cli.js';
import { DIFF_SIDES, genPolicy, genProbes, probeQuery, Rand, type Mode } from './gen.js';

const kernel = kernelGate();

const SEEDS = [0x5eed01, 0x5eed02, 0x5eed03, 0x5eed04, 0x5eed05, 0x5eed06];
const PROBES_PER_POLICY = 25;


/** what the kernel must do, given explain's verdict and the platform set up for the mode */
function expected(mode: Mode, e: Explained): Outcome {
  if (e.verdict === 'allow') return 'ok';
  if (e.verdict === 'deny') return e.target === 'REJECT' ? 'refused' : 'timeout';
  return mode === 'tighten' ? 'ok' : 'timeout';
}

describe.skipIf(kernel.skip)('differential: explain vs the kernel, random policies', () => {
  let t: Topology;
  let tmp: string;
  const seen = new Map<string, number>();

  beforeAll(async () => {
    t = await Topology.create(DIFF_SIDES);
    tmp = mkdtempSync(join(tmpdir(), 'cwt-diff-'));
  });
  afterAll(async () => {
    await t?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const cases = SEEDS.map((seed, i) => ({ seed: seed.toString(16), n: seed, mode: (i % 2 ? 'enforce' : 'tighten') as Mode }));

  it.each(cases)('seed $seed ($mode)', async ({ n, mode }) => {
    const r = new Rand(n);
    const policy = genPolicy(r, mode);
    const file = join(tmp, `policy-${n.toString(16)}.yaml`);
    writeFileSync(file, stringify(policy));
    const c = await compile(file, 'seg');
    try {
      await t.reset();
      await t.cellExec(['ipset', 'restore', '-file', join(c.dir, 'ipset.restore')]);
      await t.testPayload(c.dir);
      await t.load(c.dir);
      await t.platform(
        mode === 'tighten'
          ? { policy: 'DROP', after: [['-j', 'ACCEPT']] }
          : { policy: 'DROP', after: [['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT']] },
      );
      for (const f of [4, 6] as const) {
        const [base] = f === 4 ? ['10.255.0.'] : ['fd00:255::'];
        await t.cellExec(['ipset', 'add', dynamicSetName('space-a', 'running', f), `${base}3`]);
        await t.cellExec(['ipset', 'add', dynamicSetName('space-a', 'staging', f), `${base}5`]);
      }
      const probes = genProbes(r, PROBES_PER_POLICY);
      const explained: Explained[] = [];
      for (const p of probes) explained.push(await explainInProcess(file, probeQuery(p)));
      const viaCli = await Promise.all(probes.slice(0, 2).map((p) => explain(file, probeQuery(p))));
      expect(viaCli, 'explain process vs in-process').toEqual(explained.slice(0, 2));
      const wants = explained.map((e) => expected(mode, e));
      const got = await Promise.all(
        probes.map((p, i) => t.probe(p.proto, p.src.addr, p.dst, p.port, { timeoutMs: waitFor(wants[i]) })),
      );
      const bad: string[] = [];
      probes.forEach((p, i) => {
        const want = wants[i];
        const keys = [`${explained[i].verdict}/${got[i].outcome}`, `step ${explained[i].step} ${explained[i].verdict}`];
        // destinations in a dynamic group's member set (explain --dst-member)
        if (probeQuery(p).dstMember) keys.push(`member destination: step ${explained[i].step} ${explained[i].verdict}`);
        for (const key of keys) {
          seen.set(key, (seen.get(key) ?? 0) + 1);
        }
        if (got[i].outcome !== want) {
          const e = explained[i];
          bad.push(
            `${p.proto} ${p.src.addr} (${p.src.what}) -> ${p.dst}${p.port ? `:${p.port}` : ''}: ` +
              `explain says ${e.verdict}/${e.target} (${e.what}), kernel: ${got[i].outcome} (${got[i].detail})\n` +
              e.trace.map((x) => `    ${x.chain}#${x.rule} ${x.what}`).join('\n'),
          );
        }
      });
      expect(bad, `seed ${n.toString(16)} (${mode}), policy:\n${stringify(policy)}\n${bad.join('\n')}`).toEqual([]);
    } finally {
      c.cleanup();
    }
  });

  it('the seeds exercised allow, reject, drop and untouched packets, decided at every step', () => {
    const keys = [...seen.keys()];
    const outcomes = ['allow/ok', 'deny/refused', 'deny/timeout', 'untouched/ok', 'untouched/timeout'];
    const steps = ['step 2 allow', 'step 2 deny', 'step 3 deny', 'step 4 allow', 'step 5 deny',
      'member destination: step 2 allow', 'member destination: step 2 deny'];
    for (const k of [...outcomes, ...steps]) {
      expect(keys, JSON.stringify(Object.fromEntries(seen))).toContain(k);
    }
  });
});
