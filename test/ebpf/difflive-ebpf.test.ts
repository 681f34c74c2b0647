/**
 * `diff POLICY --live --backend ebpf`: the semantic comparison of map
 * contents (no kernel: class numbering does not matter, a member's class and
 * a changed verdict are named), and the real CLI against the maps of an
 * applied generation in a cwt-* namespace (equal after apply and after
 * `members add`; a deleted trie entry and another policy are reported).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compileSegment } from '../../src/compile/index.js';
import { diffMapContents, mapLines } from '../../src/diff/ebpf.js';
import { contentsHash } from '../../src/ebpf/load.js';
import { planMaps, type MapContents } from '../../src/ebpf/maps.js';
import { MAP_NAMES } from '../../src/ebpf/program.js';
import { loadPolicy } from '../../src/policy/index.js';
import { kernelGate } from '../helpers/caps.js';
import { EXAMPLES } from '../kernel/cli.js';
import { Topology } from '../kernel/netns.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';
import { applyIn, cli, type EbpfCell } from './apply-helpers.js';

const GOVUK = join(EXAMPLES, 'govuk-isolation.yaml');
const SEG = 'egress-restricted-1';

/** the same contents with the source class ids renumbered (swapped) */
function renumber(c: MapContents): MapContents {
  const ids = [...new Set(c.maps[MAP_NAMES.src4].map((e) => e.value.readUInt16BE(0)))].sort((a, b) => a - b);
  const map = new Map(ids.map((id, i) => [id, ids[ids.length - 1 - i]]));
  const swapValue = (v: Buffer) => { const b = Buffer.from(v); b.writeUInt16BE(map.get(v.readUInt16BE(0)) ?? v.readUInt16BE(0), 0); return b; };
  const swapKey = (k: Buffer) => { const b = Buffer.from(k); b.writeUInt16BE(map.get(k.readUInt16BE(4)) ?? k.readUInt16BE(4), 4); return b; };
  return {
    stats: c.stats,
    maps: {
      ...c.maps,
      [MAP_NAMES.src4]: c.maps[MAP_NAMES.src4].map((e) => ({ key: e.key, value: swapValue(e.value) })),
      [MAP_NAMES.src6]: c.maps[MAP_NAMES.src6].map((e) => ({ key: e.key, value: swapValue(e.value) })),
      [MAP_NAMES.verdict]: c.maps[MAP_NAMES.verdict].map((e) => ({ key: swapKey(e.key), value: e.value })),
    },
  };
}

describe('diffMapContents (no kernel)', () => {
  it('equal contents and renumbered classes are equal; a member class and a flipped verdict are named', async () => {
    const plan = compileSegment(await loadPolicy(GOVUK), SEG).plan;
    const base = planMaps(plan);
    expect(diffMapContents(base, base)).toEqual([]);
    const withMember = planMaps(plan, { members: [{ addr: '10.255.0.3', phase: 'staging', groups: ['space-govuk'] }] });
    const swapped = renumber(withMember);
    expect(new Set(swapped.maps[MAP_NAMES.src4].map((e) => e.value.readUInt16BE(0))).size).toBeGreaterThan(1);
    expect(contentsHash(swapped)).not.toBe(contentsHash(withMember));
    expect(diffMapContents(withMember, swapped)).toEqual([]);

    const d = diffMapContents(withMember, base);
    expect(d).toHaveLength(1);
    expect(d[0]).toMatchObject({ kind: 'source-class', side: 'compiled' });
    expect(d[0].text).toMatch(/^source class 10\.255\.0\.3\/32: only in the compiled maps \(with \d+ verdict rows\)$/);

    // one verdict flipped: exactly that row, both sides named
    const flipped: MapContents = { ...base, maps: { ...base.maps, [MAP_NAMES.verdict]: base.maps[MAP_NAMES.verdict].map((e, i) => (i === 0 ? { key: e.key, value: Buffer.from([e.value[0] === 2 ? 1 : 2, 0, 0, 0]) } : e)) } };
    const f = diffMapContents(base, flipped);
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ kind: 'verdict', side: 'both' });
    expect(f[0].text).toMatch(/compiled (allow|deny), live (allow|deny)$/);
    expect(mapLines(base)[MAP_NAMES.src4].length).toBe(base.maps[MAP_NAMES.src4].length);
  });
});

const kernel = kernelGate([...EBPF_TOOLS, 'flock', 'python3']);

describe.skipIf(kernel.skip)('diff --live --backend ebpf (kernel)', () => {
  let t: Topology;
  let env: BpfEnv;
  let c: EbpfCell;
  const diff = (args: string[]) => cli(c, ['diff', ...args, '--live', '--backend', 'ebpf', '--state-dir', c.stateDir]);

  beforeAll(async () => {
    env = BpfEnv.create();
    t = await Topology.create();
    c = { t, root: join(env.bpffs, 'cellwall'), stateDir: mkdtempSync(join(env.tmp, 'state-')) };
    const r = await applyIn(c, [GOVUK, '--segment', SEG]);
    if (r.code !== 0) throw new Error(`apply --backend ebpf: ${r.stderr}`);
  }, 60_000);
  afterAll(async () => {
    await t?.destroy();
    env?.cleanup();
  });

  it('equal after apply and after members add; a deleted trie entry is named (semantic and text); another policy differs', async () => {
    const eq = await diff([GOVUK, '--segment', SEG]);
    expect(eq.code, eq.stderr).toBe(0);
    expect(eq.stdout).toBe(`segment ${SEG}: semantically equal\n`);
    // the segment comes from the state dir's manifest when not given
    expect((await diff([GOVUK])).code).toBe(0);

    expect((await cli(c, ['members', 'add', 'space-govuk', '--phase', 'staging', '10.255.0.3', '--backend', 'ebpf', '--state-dir', c.stateDir])).code).toBe(0);
    expect((await diff([GOVUK, '--segment', SEG])).code).toBe(0);

    const m = JSON.parse(readFileSync(join(c.stateDir, 'manifest.json'), 'utf8')) as { generation: string };
    const map = join(c.root, m.generation, 'maps', MAP_NAMES.src4);
    // the member's /32: prefixlen 32 (LE) then 10.255.0.3
    await t.exec(t.cell, ['bpftool', 'map', 'delete', 'pinned', map, 'key', 'hex', '20', '00', '00', '00', '0a', 'ff', '00', '03']);
    const gone = await diff([GOVUK, '--segment', SEG, '--text']);
    expect(gone.code, gone.stderr).toBe(2);
    expect(gone.stdout).toMatch(/source class 10\.255\.0\.3\/32: only in the compiled maps/);
    expect(gone.stdout).toMatch(/^-10\.255\.0\.3\/32 class \d+$/m);
    const j = JSON.parse((await diff([GOVUK, '--segment', SEG, '--json'])).stdout) as { equal: boolean; segments: Array<{ changes: Array<{ kind: string }> }> };
    expect(j.equal).toBe(false);
    expect(j.segments[0].changes.map((x) => x.kind)).toContain('source-class');

    // another policy (the SPEC example's segment of the same name) against the live maps
    const diffOther = await diff([GOVUK.replace('govuk-isolation.yaml', 'cellwall.yaml'), '--segment', 'egress-restricted-1']);
    expect(diffOther.code, diffOther.stderr).toBe(2);
    expect(diffOther.stdout).toMatch(/\d+ changes/);
  }, 120_000);

  it('without an eBPF apply in the state dir: a clear error', async () => {
    const r = await cli(c, ['diff', GOVUK, '--segment', SEG, '--live', '--backend', 'ebpf', '--state-dir', join(env.tmp, 'nothing')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('nothing was applied with --backend ebpf on this cell');
    expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/);
  }, 60_000);
});
