/**
 * `cellwall diff BUNDLE --live` on a cell namespace: equal right after apply,
 * a precise change after the live state is altered behind cellwall's back.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelGate } from '../helpers/caps.js';
import { Topology } from '../kernel/netns.js';

const kernel = kernelGate(['ip', 'iptables-restore', 'ip6tables-restore', 'iptables-save', 'ipset', 'flock']);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = join(ROOT, 'bin', 'cellwall.js');
const V1 = fileURLToPath(new URL('../apply/fixtures/v1', import.meta.url));
const V2 = fileURLToPath(new URL('../apply/fixtures/v2', import.meta.url));

describe.skipIf(kernel.skip)('diff --live (kernel)', () => {
  let t: Topology;
  let tmp: string;
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-diff-'));
    t = await Topology.create();
  });
  afterAll(async () => {
    await t?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const cw = (args: string[]) => t.exec(t.cell, [process.execPath, BIN, ...args], 60_000);

  it('reads back what apply loaded for every segment of the SPEC example and an enforce policy with icmp types (log, a2a, restricted, ACCEPT)', async () => {
    const icmp = fileURLToPath(new URL('./fixtures/icmp-enforce.yaml', import.meta.url));
    const cases: Array<[string, string]> = [[join(ROOT, 'examples', 'cellwall.yaml'), 'shared'], [join(ROOT, 'examples', 'cellwall.yaml'), 'egress-restricted-1'], [icmp, 'shared']];
    for (const [policy, seg] of cases) {
      const ap = await cw(['apply', '--state-dir', tmp, policy, '--segment', seg]);
      expect(ap.code, ap.stderr).toBe(0);
      const d = await cw(['diff', policy, '--segment', seg, '--live', '--state-dir', tmp, '--text']);
      expect(d.code, d.stdout + d.stderr).toBe(0);
      expect(d.stdout).not.toMatch(/^[-+]/m);
    }
  });

  it('is equal after apply, reports a removed set entry and another bundle as different', async () => {
    const ap = await cw(['apply', '--state-dir', tmp, '--payload', V1]);
    expect(ap.code, ap.stderr).toBe(0);
    const same = await cw(['diff', V1, '--live', '--state-dir', tmp, '--text']);
    expect(same.code, same.stdout + same.stderr).toBe(0);
    expect(same.stdout).toContain('semantically equal');
    expect(same.stdout).not.toMatch(/^[-+]/m);

    const other = await cw(['diff', V2, '--live', '--state-dir', tmp]);
    expect(other.code, other.stderr).toBe(2);

    await t.cellExec(['ipset', 'del', 'cw-vpc4-1111aaaa', '10.0.0.0/24']);
    const changed = await cw(['diff', V1, '--live', '--state-dir', tmp, '--json', '--text']);
    expect(changed.code, changed.stderr).toBe(2);
    const j = JSON.parse(changed.stdout);
    const changes = j.segments[0].changes as Array<{ family: number; dst: string[]; from: string; to: string }>;
    expect(changes.length).toBeGreaterThan(0);
    for (const c of changes) {
      expect(c.family).toBe(4);
      expect(c.dst).toEqual(['10.0.0.0/24']);
    }
    const removed = (j.segments[0].text['ipset.restore'] as Array<{ oldLines: string[] }>).flatMap((h) => h.oldLines);
    expect(removed.join('\n')).toContain('10.0.0.0/24');
  });
});
