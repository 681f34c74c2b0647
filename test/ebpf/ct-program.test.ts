/**
 * The conntrack program without a kernel: the object declares its kfuncs the
 * way clang does for `extern ... __ksym` (undefined global NOTYPE symbols,
 * R_BPF_64_32 on BPF_PSEUDO_KFUNC_CALL calls, extern FUNCs in a .ksyms
 * DATASEC), the stateless object has none; the maps say whether established
 * traffic passes (ESTABLISHED_KEY) exactly when the policy's
 * `defaults.established` is accept; and the program simulated over the maps
 * (sim.ts) equals evaluatePlan with the packet's conntrack state on random
 * policies, both settings. The kernel side is ct-kernel.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadPolicy } from '../../src/policy/index.js';
import { compileSegment } from '../../src/compile/index.js';
import { evaluatePlan, type Packet, type PacketProto } from '../../src/compile/evaluate.js';
import { mapsBtf } from '../../src/ebpf/elf.js';
import { planMaps } from '../../src/ebpf/maps.js';
import { buildObject, CT_KFUNCS, ESTABLISHED_KEY, MAP_NAMES, mapDefs, objectsToTry, TC_ACT_OK, TC_ACT_SHOT, VERDICT } from '../../src/ebpf/program.js';
import { genPolicy, Rand, SOURCES, UNGOVERNED } from '../kernel/gen.js';
import { expectedAction, simulate } from './sim.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** the parts of a relocatable ELF64 the test looks at: symbols and relocations */
function readElf(o: Buffer) {
  const shoff = Number(o.readBigUInt64LE(40)), shnum = o.readUInt16LE(60), shstrndx = o.readUInt16LE(62);
  const secs = Array.from({ length: shnum }, (_, i) => {
    const b = shoff + i * 64;
    return { nameOff: o.readUInt32LE(b), type: o.readUInt32LE(b + 4), off: Number(o.readBigUInt64LE(b + 24)), size: Number(o.readBigUInt64LE(b + 32)), link: o.readUInt32LE(b + 40), info: o.readUInt32LE(b + 44) };
  });
  const str = (sec: number, off: number) => { const s = secs[sec].off + off; return o.toString('latin1', s, o.indexOf(0, s)); };
  const named = secs.map((s) => ({ ...s, name: str(shstrndx, s.nameOff) }));
  const symtab = named.find((s) => s.type === 2)!;
  const syms = Array.from({ length: symtab.size / 24 }, (_, i) => {
    const b = symtab.off + i * 24;
    return { name: str(symtab.link, o.readUInt32LE(b)), bind: o[b + 4] >> 4, type: o[b + 4] & 0xf, shndx: o.readUInt16LE(b + 6) };
  });
  const prog = named.find((s) => s.name === 'tc')!;
  const rel = named.find((s) => s.name === '.reltc')!;
  const relocs = Array.from({ length: rel.size / 16 }, (_, i) => {
    const info = o.readBigUInt64LE(rel.off + i * 16 + 8);
    const insn = Number(o.readBigUInt64LE(rel.off + i * 16)) / 8;
    const at = prog.off + insn * 8;
    return { insn, sym: syms[Number(info >> 32n)].name, type: Number(info & 0xffffffffn), code: o[at], srcReg: o[at + 1] >> 4 };
  });
  return { syms, relocs };
}

describe('conntrack object', () => {
  it('declares bpf_skb_ct_lookup and bpf_ct_release as kfunc externs; the stateless object does not', () => {
    const ct = readElf(buildObject({ conntrack: true }));
    for (const name of ['bpf_skb_ct_lookup', 'bpf_ct_release']) {
      const s = ct.syms.find((x) => x.name === name);
      expect(s, name).toMatchObject({ bind: 1, type: 0, shndx: 0 }); // GLOBAL, NOTYPE, undefined
      const calls = ct.relocs.filter((r) => r.sym === name);
      expect(calls.length, name).toBe(1);
      expect(calls[0]).toMatchObject({ type: 10, code: 0x85, srcReg: 2 }); // R_BPF_64_32 on call, BPF_PSEUDO_KFUNC_CALL
    }
    // every other relocation is a map load
    expect(ct.relocs.filter((r) => r.type !== 10).every((r) => r.type === 1 && r.code === 0x18)).toBe(true);
    expect(objectsToTry().map((o) => o.variant)).toEqual(['conntrack', 'stateless']);
    expect(objectsToTry()[0].object.equals(buildObject({ conntrack: true }))).toBe(true);
    expect(objectsToTry()[1].object.equals(buildObject())).toBe(true);
    const plain = readElf(buildObject());
    expect(plain.syms.map((s) => s.name)).not.toContain('bpf_skb_ct_lookup');
    expect(plain.relocs.every((r) => r.type === 1)).toBe(true);
    // the kfuncs' BTF is appended: the maps' BTF types are unchanged (same ids for the maps)
    const mapsOnly = mapsBtf(mapDefs()), withK = mapsBtf(mapDefs(), CT_KFUNCS);
    const typesLen = (b: Buffer) => b.readUInt32LE(12);
    expect(withK.subarray(24, 24 + typesLen(mapsOnly)).equals(mapsOnly.subarray(24, 24 + typesLen(mapsOnly)))).toBe(true);
  });
});

function randomPacket(r: Rand): { p: Packet; protoNum?: number } {
  const srcs = [...SOURCES, ...UNGOVERNED];
  const s = r.pick(srcs);
  const six = s.addr.includes(':');
  const dst = r.pick([...s.dsts, six ? '2001:db8::99' : '8.8.8.8']);
  const kind = r.pick(['tcp', 'tcp', 'udp', 'icmp', 'other'] as const);
  if (kind === 'other') return { p: { src: s.addr, dst, proto: 'other' as PacketProto }, protoNum: 47 };
  if (kind === 'icmp') return { p: { src: s.addr, dst, proto: six ? 'icmpv6' : 'icmp', type: r.pick(six ? [128, 129, 1] : [8, 0, 3]), code: 0 } };
  return { p: { src: s.addr, dst, proto: kind, port: r.pick([22, 53, 80, 443, 5432, 8080, r.int(1024, 65535)]) } };
}

describe('conntrack program over the maps', () => {
  it('equals evaluatePlan with the packet\'s conntrack state; ESTABLISHED_KEY iff established: accept', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-ebpfct-'));
    try {
      const seen = new Set<string>();
      for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
        const r = new Rand(0xc700 + seed);
        const doc = genPolicy(r, seed % 2 ? 'enforce' : 'tighten') as { defaults: Record<string, unknown> };
        const accept = seed % 4 !== 0;
        if (!accept) doc.defaults.established = 'none';
        const file = join(tmp, `p${seed}.yaml`);
        writeFileSync(file, stringify(doc));
        const plan = compileSegment(await loadPolicy(file), 'seg').plan;
        const maps = planMaps(plan);
        const cfg = maps.maps[MAP_NAMES.verdict].filter((e) => e.key.readUInt32LE(0) === 32 && e.key.subarray(4).equals(ESTABLISHED_KEY));
        expect(cfg.map((e) => e.value.readUInt32LE(0)), `seed ${seed}`).toEqual(accept ? [VERDICT.allow] : []);
        const bad: string[] = [];
        for (let i = 0; i < 120; i++) {
          const { p, protoNum } = randomPacket(r);
          for (const established of [false, true]) {
            const run = { conntrack: true, established };
            const want = expectedAction(plan, p, undefined, run);
            const got = simulate(maps, p, protoNum, run);
            seen.add(`${p.proto}/${established}/${want}`);
            if (got !== want) bad.push(`${JSON.stringify(p)} established=${established}: want ${want}, got ${got}`);
          }
          // established traffic of a governed source is never denied when the policy accepts it
          if (accept && (p.proto === 'tcp' || p.proto === 'udp')) expect(evaluatePlan(plan, { ...p, established: true }).verdict).not.toBe('deny');
        }
        expect(bad, `seed ${seed}`).toEqual([]);
      }
      for (const k of ['tcp/true/0', 'tcp/false/2', 'udp/false/2', 'tcp/false/0']) expect([...seen], k).toContain(k);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('closes the reverse-allow hole that the stateless program keeps', async () => {
    const plan = compileSegment(await loadPolicy(join(ROOT, 'examples', 'cellwall.yaml')), 'shared').plan;
    const maps = planMaps(plan);
    // policies: hr -> it tcp 80 only. it sends from source port 80 to hr on a port it may not reach:
    const p: Packet = { src: '10.150.0.5', dst: '192.168.0.5', proto: 'tcp', port: 40001 };
    expect(evaluatePlan(plan, p).verdict).toBe('deny');
    expect(simulate(maps, p, undefined, { sport: 80 })).toBe(TC_ACT_OK); // stateless: "may be a reply"
    expect(simulate(maps, p, undefined, { conntrack: true, sport: 80 })).toBe(TC_ACT_SHOT);
    expect(simulate(maps, p, undefined, { conntrack: true, sport: 80, established: true })).toBe(TC_ACT_OK);
  });
});
