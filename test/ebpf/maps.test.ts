/**
 * Map contents without a kernel: prefix arithmetic, determinism, and the
 * classifier's lookups simulated over the maps agree with evaluatePlan on
 * random packets (deny = drop, except replies to explicitly allowed packets) (the kernel tests run the real program on the same maps).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadPolicy } from '../../src/policy/index.js';
import { compileSegment } from '../../src/compile/index.js';
import { type Packet, type PacketProto } from '../../src/compile/evaluate.js';
import { mapsJson, parseMapsJson, planMaps, rangePrefixes, type MapMember } from '../../src/ebpf/maps.js';
import { objectsToTry, TC_ACT_OK, TC_ACT_SHOT } from '../../src/ebpf/program.js';
import { runCompile } from '../../src/compile/cli.js';
import { sha256 } from '../../src/compile/util.js';
import { genPolicy, Rand } from '../kernel/gen.js';
import { expectedAction, simulate } from './sim.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const POLICY = join(ROOT, 'examples', 'cellwall.yaml');

describe('rangePrefixes', () => {
  it('covers exactly the range with aligned blocks', () => {
    expect(rangePrefixes(0n, 65535n, 16)).toEqual([[0n, 0]]);
    expect(rangePrefixes(80n, 80n, 16)).toEqual([[80n, 16]]);
    expect(rangePrefixes(3000n, 6000n, 16).length).toBeGreaterThan(1);
    fc.assert(fc.property(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 }), (a, b) => {
      const [s, e] = a <= b ? [a, b] : [b, a];
      let next = BigInt(s);
      for (const [base, len] of rangePrefixes(BigInt(s), BigInt(e), 16)) {
        const size = 1n << BigInt(16 - len);
        expect(base).toBe(next);
        expect(base % size).toBe(0n);
        next = base + size;
      }
      expect(next).toBe(BigInt(e) + 1n);
    }));
  });
});

function randomPacket(r: Rand): { p: Packet; protoNum?: number } {
  const six = r.chance(0.4);
  const v4 = () => `${r.pick([10, 10, 203, 198, 8, 192])}.${r.pick([0, 255, 51, 113])}.${r.int(0, 2)}.${r.int(0, 12)}`;
  const v6 = () => `${r.pick(['fd00:255::', 'fd00:255:0:1::', 'fd00:10::', '2001:db8::', '2600::'])}${r.int(1, 20).toString(16)}`;
  const [src, dst] = six ? [v6(), v6()] : [v4(), v4()];
  const kind = r.pick(['tcp', 'udp', 'icmp', 'other'] as const);
  if (kind === 'other') return { p: { src, dst, proto: 'other' as PacketProto }, protoNum: 47 };
  if (kind === 'icmp') return { p: { src, dst, proto: six ? 'icmpv6' : 'icmp', type: r.pick([0, 3, 8, 128, 129]), code: r.pick([0, 1]) } };
  return { p: { src, dst, proto: kind, port: r.pick([22, 53, 80, 443, 3000, 5432, 6000, 6379, 8080, r.int(1, 65535)]) } };
}

describe('planMaps', () => {
  it('simulated classifier verdicts equal evaluatePlan (random policies and packets)', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-ebpfmaps-'));
    try {
      for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
        const r = new Rand(0xeb00 + seed);
        const file = join(tmp, `p${seed}.yaml`);
        writeFileSync(file, stringify(genPolicy(r, seed % 2 ? 'enforce' : 'tighten')));
        const plan = compileSegment(await loadPolicy(file), 'seg').plan;
        const maps = planMaps(plan);
        const bad: string[] = [];
        let denies = 0;
        for (let i = 0; i < 150; i++) {
          const { p, protoNum } = randomPacket(r);
          const want = expectedAction(plan, p);
          if (want === TC_ACT_SHOT) denies++;
          const got = simulate(maps, p, protoNum);
          if (got !== want) bad.push(`${JSON.stringify(p)}: want ${want}, got ${got}`);
        }
        expect(bad, `seed ${seed}`).toEqual([]);
        expect(denies, `seed ${seed} exercised denies`).toBeGreaterThan(0);
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('dynamic members get their own source class, evaluated with their membership', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-ebpfmembers-'));
    try {
      const members: MapMember[] = [
        { addr: '10.255.0.3', phase: 'running', groups: ['space-a'] }, { addr: '10.255.0.5', phase: 'staging', groups: ['space-a'] },
        { addr: 'fd00:255::3', phase: 'running', groups: ['space-a'] },
      ];
      let differs = 0;
      for (const seed of [11, 12, 13, 14, 15, 16]) {
        const r = new Rand(0xeb00 + seed);
        const file = join(tmp, `p${seed}.yaml`);
        writeFileSync(file, stringify(genPolicy(r, 'tighten')));
        const plan = compileSegment(await loadPolicy(file), 'seg').plan;
        const maps = planMaps(plan, { members });
        const bad: string[] = [];
        for (let i = 0; i < 80; i++) {
          const m = r.pick(members);
          const { p, protoNum } = randomPacket(r);
          const six = m.addr.includes(':');
          if (six !== p.src.includes(':')) continue;
          const q = { ...p, src: m.addr };
          const want = expectedAction(plan, q, { phase: m.phase, groups: m.groups });
          if (want !== expectedAction(plan, q)) differs++;
          const got = simulate(maps, q, protoNum);
          if (got !== want) bad.push(`${JSON.stringify(q)} as ${m.phase} member: want ${want}, got ${got}`);
        }
        expect(bad, `seed ${seed}`).toEqual([]);
      }
      expect(differs, 'membership changed some verdicts').toBeGreaterThan(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('maps.json round-trips', async () => {
    const plan = compileSegment(await loadPolicy(POLICY), 'shared').plan;
    const c = planMaps(plan);
    expect(parseMapsJson(mapsJson(c))).toEqual(c);
  });

  it('is deterministic and only lists governed sources', async () => {
    const policy = await loadPolicy(POLICY);
    const plan = compileSegment(policy, 'egress-restricted-1').plan;
    const a = planMaps(plan), b = planMaps(plan);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    // 8.8.8.8 is not a governed source: no source class, passes
    expect(simulate(a, { src: '8.8.8.8', dst: '10.0.0.1', proto: 'tcp', port: 80 })).toBe(TC_ACT_OK);
    expect(a.stats.srcClasses).toBeGreaterThan(0);
  });
});

describe('compile --backend ebpf', () => {
  it('writes cellwall.bpf.o (conntrack), cellwall-stateless.bpf.o and maps.json next to the other files; the manifest hashes them; byte-identical reruns', async () => {
    const out = mkdtempSync(join(tmpdir(), 'cwt-ebpfc-'));
    try {
      const c = { setExit: () => {}, stdout: { write: () => true }, stderr: { write: () => true } } as never;
      await runCompile(POLICY, { segment: 'egress-restricted-1', out, backend: 'ebpf' }, c);
      const obj = readFileSync(join(out, 'cellwall.bpf.o'));
      expect(obj.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
      expect(obj.readUInt16LE(18)).toBe(247); // EM_BPF
      const [ct, stateless] = objectsToTry();
      expect(obj.equals(ct!.object)).toBe(true);
      expect(readFileSync(join(out, 'cellwall-stateless.bpf.o')).equals(stateless!.object)).toBe(true);
      expect(readFileSync(join(out, 'maps.json'), 'utf8')).toBe(mapsJson(planMaps(compileSegment(await loadPolicy(POLICY), 'egress-restricted-1').plan)));
      const maps = JSON.parse(readFileSync(join(out, 'maps.json'), 'utf8'));
      expect(Object.keys(maps.maps).sort()).toEqual(['cw_dst4', 'cw_dst6', 'cw_src4', 'cw_src6', 'cw_verdict']);
      expect(maps.maps.cw_verdict.length).toBe(maps.stats.verdicts);
      const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
      expect(m.files['cellwall.bpf.o'].sha256).toBe(sha256(obj as unknown as string));
      expect(m.files['maps.json'].sha256).toBe(sha256(readFileSync(join(out, 'maps.json'), 'utf8')));
      const first = readFileSync(join(out, 'maps.json'), 'utf8');
      await runCompile(POLICY, { segment: 'egress-restricted-1', out, backend: 'ebpf' }, c);
      expect(readFileSync(join(out, 'maps.json'), 'utf8')).toBe(first);
      expect(readFileSync(join(out, 'cellwall.bpf.o')).equals(obj)).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
