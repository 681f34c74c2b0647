/**
 * Every example policy, compiled by the real CLI for each of its segments,
 * is accepted by the real tools inside a cell namespace: `ipset restore`,
 * `iptables-restore --test`, `ip6tables-restore --test`, then the real
 * `--noflush` load. See docs/scenarios.md.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { kernelGate } from '../helpers/caps.js';
import { Topology } from './netns.js';
import { compile, EXAMPLES } from './cli.js';
import { parseRules } from './payload.js';

const kernel = kernelGate();

const cases = readdirSync(EXAMPLES)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .flatMap((f) => {
    const doc = parse(readFileSync(join(EXAMPLES, f), 'utf8')) as { segments: Record<string, unknown> };
    return Object.keys(doc.segments).map((segment) => ({ file: f, segment }));
  });

describe.skipIf(kernel.skip)('compiled payloads load in the kernel', () => {
  let t: Topology;
  beforeAll(async () => {
    t = await Topology.create([]); // just a cell
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('covers every example', () => {
    expect(cases.map((c) => c.file)).toEqual(
      expect.arrayContaining(['cellwall.yaml', 'cloudgov.yaml', 'dcos-it-hr.yaml', 'govuk-isolation.yaml']),
    );
  });

  it.each(cases)('$file --segment $segment', async ({ file, segment }) => {
    const c = await compile(join(EXAMPLES, file), segment);
    try {
      await t.reset();
      await t.cellExec(['ipset', 'restore', '-file', join(c.dir, 'ipset.restore')]);
      await t.testPayload(c.dir);
      await t.cellExec(['iptables-restore', '--noflush', join(c.dir, 'iptables.v4')]);
      await t.cellExec(['ip6tables-restore', '--noflush', join(c.dir, 'iptables.v6')]);
      for (const family of [4, 6] as const) {
        const live = parseRules(await t.save(family));
        const payload = parseRules(family === 4 ? c.v4 : c.v6);
        // the kernel holds exactly the payload's rules, and one jump from FORWARD
        expect(live.length, `v${family} rules`).toBe(payload.length);
        const jumps = live.filter((r) => r.chain === 'FORWARD');
        expect(jumps.length, `v${family} FORWARD jumps`).toBe(1);
        expect(jumps[0].verdict).toMatch(/^CW-/);
        // every cellwall rule carries a comment tracing it to the policy
        for (const r of live) expect(r.rule, 'rule comment').toMatch(/-m comment --comment /);
        for (const r of live) if (r.chain !== 'FORWARD') expect(r.chain).toMatch(/^CW-/);
      }
    } finally {
      c.cleanup();
    }
  });
});
