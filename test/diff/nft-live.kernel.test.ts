/**
 * `cellwall diff POLICY --live --backend nft` in a cell namespace: equal right
 * after `apply --backend nft`, exactly the removed element after an
 * `nft delete element` behind cellwall's back, different against another policy.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelGate } from '../helpers/caps.js';
import { ROOT } from '../kernel/cli.js';
import { run } from '../kernel/netns.js';

const kernel = kernelGate(['ip', 'nft']);
const BIN = join(ROOT, 'bin', 'cellwall.js');
const POLICY = join(ROOT, 'examples', 'cellwall.yaml');
const OTHER = join(ROOT, 'examples', 'dcos-it-hr.yaml');
/** enforce mode (accept), icmp/icmpv6 types and codes (nft prints them by name) */
const ICMP = join(ROOT, 'test', 'diff', 'fixtures', 'icmp-enforce.yaml');

describe.skipIf(kernel.skip)('diff --live --backend nft (kernel)', () => {
  const ns = `cwt-${randomBytes(3).toString('hex')}-dnft`;
  let tmp: string;
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-dnft-'));
    const r = await run(['ip', 'netns', 'add', ns]);
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    await run(['ip', 'netns', 'del', ns]);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const inNs = (argv: string[]) => run(['ip', 'netns', 'exec', ns, ...argv], 60_000);
  const cw = (args: string[]) => inNs([process.execPath, BIN, ...args]);

  it('is equal after apply, reports exactly a deleted set element, and another policy as different', async () => {
    const none = await cw(['diff', POLICY, '--segment', 'shared', '--live', '--backend', 'nft']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no table inet cellwall in this netns/);

    for (const [policy, seg] of [[ICMP, 'shared'], [POLICY, 'egress-restricted-1'], [POLICY, 'shared']]) {
      // a fresh table per segment, so that each diff sees exactly one segment's table
      await inNs(['nft', 'delete', 'table', 'inet', 'cellwall']);
      const ap = await cw(['apply', '--backend', 'nft', '--state-dir', tmp, policy, '--segment', seg]);
      expect(ap.code, ap.stdout + ap.stderr).toBe(0);
      const same = await cw(['diff', policy, '--segment', seg, '--live', '--backend', 'nft', '--text']);
      expect(same.code, same.stdout + same.stderr).toBe(0);
      expect(same.stdout).toContain('semantically equal');
      expect(same.stdout).not.toMatch(/^[-+]/m);
    }
    // shared is live now: egress-restricted-1 is not
    const wrongSeg = await cw(['diff', POLICY, '--segment', 'egress-restricted-1', '--live', '--backend', 'nft']);
    expect(wrongSeg.code, wrongSeg.stdout + wrongSeg.stderr).toBe(2);

    const other = await cw(['diff', OTHER, '--live', '--backend', 'nft']);
    expect(other.code, other.stdout + other.stderr).toBe(2);
    expect(other.stdout).toMatch(/\d+ changes?/);

    // the set holding group hr (192.168.0.0/16) loses its only element
    const list = await inNs(['nft', '-j', 'list', 'table', 'inet', 'cellwall']);
    expect(list.code, list.stderr).toBe(0);
    const sets = (JSON.parse(list.stdout).nftables as Array<{ set?: { name: string; comment?: string } }>).flatMap((i) => (i.set ? [i.set] : []));
    const hr = sets.find((s) => s.comment === 'group hr');
    expect(hr, JSON.stringify(sets.map((s) => s.comment))).toBeDefined();
    const del = await inNs(['nft', 'delete', 'element', 'inet', 'cellwall', hr!.name, '{ 192.168.0.0/16 }']);
    expect(del.code, del.stderr).toBe(0);

    const changed = await cw(['diff', POLICY, '--segment', 'shared', '--live', '--backend', 'nft', '--json', '--text']);
    expect(changed.code, changed.stdout + changed.stderr).toBe(2);
    const j = JSON.parse(changed.stdout);
    const changes = j.segments[0].changes as Array<{ family: number; src: string[]; dst: string[]; from: string; to: string }>;
    expect(changes.length).toBeGreaterThan(0);
    for (const c of changes) {
      // group hr's traffic to app destinations is what changed: from hr, or to hr
      expect(c.family).toBe(4);
      expect(c.from).toBe('allow');
      const fromHr = c.src.every((x) => x.startsWith('192.168.'));
      const toHr = c.dst.every((x) => x.startsWith('192.168.'));
      expect(fromHr || toHr, JSON.stringify(c)).toBe(true);
    }
    const text = j.segments[0].text['set elements'] as Array<{ oldLines: string[]; newLines: string[] }>;
    expect(text.flatMap((h) => h.oldLines)).toEqual([`${hr!.name} 192.168.0.0/16`]);
    expect(text.flatMap((h) => h.newLines)).toEqual([]);
  });

  it('refuses --backend nft without --live and an unknown backend', async () => {
    const a = await run([process.execPath, BIN, 'diff', POLICY, OTHER, '--backend', 'nft']);
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/--backend nft: only with --live/);
    const b = await run([process.execPath, BIN, 'diff', POLICY, '--live', '--backend', 'bpf']);
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/expected iptables, nft or ebpf/);
  });
});
