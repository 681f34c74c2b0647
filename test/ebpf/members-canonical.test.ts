/**
 * canonicalContents (src/ebpf/load.ts), which `apply`/`members --backend ebpf`
 * install: source classes with equal verdict rows merged, ids numbered by
 * rows. No kernel: the classifier simulated over the maps (sim.ts) gives the
 * same action as over planMaps' own contents for random policies, packets and
 * member sources; members of one signature share a class; and a member added
 * to an existing signature is exactly one more source entry (the basis of the
 * one-insert `members add`).
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Packet, PacketProto } from '../../src/compile/evaluate.js';
import { compileSegment } from '../../src/compile/index.js';
import { canonicalContents, contentsHash } from '../../src/ebpf/load.js';
import { planMaps, type MapMember } from '../../src/ebpf/maps.js';
import { MAP_NAMES } from '../../src/ebpf/program.js';
import { loadPolicy } from '../../src/policy/index.js';
import { genPolicy, Rand } from '../kernel/gen.js';
import { simulate } from './sim.js';

function packet(r: Rand, src: string): { p: Packet; protoNum?: number } {
  const six = src.includes(':');
  const dst = six ? `${r.pick(['fd00:255::', 'fd00:10::', '2001:db8::', '2600::'])}${r.int(1, 20).toString(16)}`
    : `${r.pick([10, 203, 198, 8, 192])}.${r.pick([0, 255, 51, 113])}.${r.int(0, 2)}.${r.int(0, 12)}`;
  const kind = r.pick(['tcp', 'udp', 'icmp', 'other'] as const);
  if (kind === 'other') return { p: { src, dst, proto: 'other' as PacketProto }, protoNum: 47 };
  if (kind === 'icmp') return { p: { src, dst, proto: six ? 'icmpv6' : 'icmp', type: r.pick([0, 3, 8, 128, 129]), code: 0 } };
  return { p: { src, dst, proto: kind, port: r.pick([22, 53, 80, 443, 5432, 8080, r.int(1, 65535)]) } };
}

const MEMBERS: MapMember[] = [
  { addr: '10.255.0.3', phase: 'running', groups: ['space-a'] }, { addr: '10.255.0.8', phase: 'running', groups: ['space-a'] },
  { addr: '10.255.0.5', phase: 'staging', groups: ['space-a'] }, { addr: '10.255.0.6', phase: 'staging', groups: ['space-a'] },
  { addr: 'fd00:255::3', phase: 'running', groups: ['space-a'] }, { addr: 'fd00:255::8', phase: 'running', groups: ['space-a'] },
];

describe('canonicalContents', () => {
  it('same classifier actions as planMaps, members of one signature share a class, one more member is one more entry', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-ebpfcanon-'));
    try {
      let merged = 0;
      let withEstablished = 0;
      for (const seed of [21, 22, 23, 24, 25, 26]) {
        const r = new Rand(0xeb00 + seed);
        const file = join(tmp, `p${seed}.yaml`);
        writeFileSync(file, stringify(genPolicy(r, seed % 2 ? 'enforce' : 'tighten')));
        const plan = compileSegment(await loadPolicy(file), 'seg').plan;
        const raw = planMaps(plan, { members: MEMBERS });
        const canon = canonicalContents(raw);
        expect(canonicalContents(canon), 'idempotent').toEqual(canon);
        // the policy's `established` row (source class 0, read by the conntrack program) is kept as it is
        const est = (c: typeof raw) => c.maps[MAP_NAMES.verdict].filter((e) => e.key.readUInt16BE(4) === 0).map((e) => `${e.key.toString('hex')}=${e.value.toString('hex')}`);
        expect(est(canon)).toEqual(est(raw));
        if (est(raw).length) withEstablished++;
        expect(canon.maps[MAP_NAMES.verdict].length).toBeLessThanOrEqual(raw.maps[MAP_NAMES.verdict].length);
        if (canon.maps[MAP_NAMES.verdict].length < raw.maps[MAP_NAMES.verdict].length) merged++;
        const bad: string[] = [];
        for (let i = 0; i < 120; i++) {
          const src = r.chance(0.5) ? r.pick(MEMBERS).addr : r.pick(['10.255.0.9', '10.0.0.10', '192.168.1.1', 'fd00:255::9', '2001:db8::1']);
          const { p, protoNum } = packet(r, src);
          const want = simulate(raw, p, protoNum);
          const got = simulate(canon, p, protoNum);
          if (got !== want) bad.push(`${JSON.stringify(p)}: planMaps ${want}, canonical ${got}`);
        }
        expect(bad, `seed ${seed}`).toEqual([]);

        // members of one signature share a class
        const classOf = (addr: string) => canon.maps[addr.includes(':') ? MAP_NAMES.src6 : MAP_NAMES.src4]
          .find((e) => e.key.readUInt32LE(0) === (addr.includes(':') ? 128 : 32) && e.key.subarray(4).equals(Buffer.from(addr.includes(':') ? [0xfd, 0, 2, 0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, Number(`0x${addr.split('::')[1]}`)] : addr.split('.').map(Number))))?.value.readUInt16BE(0);
        expect(classOf('10.255.0.3')).toBe(classOf('10.255.0.8'));
        expect(classOf('10.255.0.5')).toBe(classOf('10.255.0.6'));
        expect(classOf('fd00:255::3')).toBe(classOf('fd00:255::8'));

        // one more member whose signature has a class (no new rows): the same contents plus one source entry, same ids
        const more = canonicalContents(planMaps(plan, { members: [...MEMBERS, { addr: '10.255.0.7', phase: 'running', groups: ['space-a'] }] }));
        const extra = more.maps[MAP_NAMES.src4].filter((e) => !canon.maps[MAP_NAMES.src4].some((x) => x.key.equals(e.key)));
        expect(extra).toHaveLength(1);
        expect(more.maps[MAP_NAMES.verdict]).toEqual(canon.maps[MAP_NAMES.verdict]);
        const plusOne = { ...canon, maps: { ...canon.maps, [MAP_NAMES.src4]: [...canon.maps[MAP_NAMES.src4], extra[0]] } };
        expect(contentsHash(plusOne)).toBe(contentsHash(more));
      }
      expect(merged, 'some policies had classes to merge').toBeGreaterThan(0);
      expect(withEstablished, 'some policies accept established traffic').toBeGreaterThan(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
