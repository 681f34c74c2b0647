/**
 * The two map fill paths of src/ebpf/load.ts give the same maps: BPF_MAP_
 * UPDATE_BATCH through python3 (more than one 64k batch here) and
 * `bpftool batch file`, compared by `bpftool map dump` of every map; and
 * without python3 the fill falls back to bpftool and says why. In a private
 * bpffs and a cwt-* namespace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fill, generation, loadObject, type Exec } from '../../src/ebpf/load.js';
import type { MapContents, MapEntry } from '../../src/ebpf/maps.js';
import { buildObject, MAP_NAMES } from '../../src/ebpf/program.js';
import { kernelGate } from '../helpers/caps.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';

const kernel = kernelGate([...EBPF_TOOLS, 'python3']);
const N4 = 70_000;

function contents(): MapContents {
  const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  const dst4: MapEntry[] = [];
  for (let i = 0; i < N4; i++) {
    const k = Buffer.alloc(8);
    k.writeUInt32LE(24 + (i % 9), 0);
    k.writeUInt32BE((0x0a000000 + i * 256) >>> 0, 4);
    const v = Buffer.alloc(4); v.writeUInt16BE(i % 65536, 0);
    dst4.push({ key: k, value: v });
  }
  const dst6: MapEntry[] = [];
  for (let i = 0; i < 300; i++) {
    const k = Buffer.alloc(20);
    k.writeUInt32LE(64, 0);
    k.writeUInt32BE(0x20010db8, 4); k.writeUInt16BE(i, 8);
    dst6.push({ key: k, value: u32(i) });
  }
  const verdict: MapEntry[] = [];
  for (let i = 0; i < 500; i++) {
    const k = Buffer.alloc(12);
    k.writeUInt32LE(32, 0); k.writeUInt16BE(1, 4); k.writeUInt16BE(i, 6);
    verdict.push({ key: k, value: u32(1 + (i % 2)) });
  }
  return { maps: { [MAP_NAMES.src4]: [], [MAP_NAMES.dst4]: dst4, [MAP_NAMES.src6]: [], [MAP_NAMES.dst6]: dst6, [MAP_NAMES.verdict]: verdict }, stats: { srcClasses: 0, dstClasses: 0, verdicts: 0, evaluations: 0 } };
}

describe.skipIf(kernel.skip)('map fill paths (kernel)', () => {
  let env: BpfEnv;
  let object: string;
  beforeAll(() => {
    env = BpfEnv.create();
    object = join(env.tmp, 'cellwall.bpf.o');
    writeFileSync(object, buildObject());
  });
  afterAll(() => env?.cleanup());

  const dumps = async (name: string): Promise<Record<string, string[]>> => {
    const g = generation(env.bpffs, name);
    const out: Record<string, string[]> = {};
    for (const m of Object.values(MAP_NAMES)) {
      const items = JSON.parse(await env.exec(['bpftool', '-j', 'map', 'dump', 'pinned', join(g.maps, m)])) as Array<{ key: string[]; value: string[] }>;
      out[m] = items.map((x) => `${x.key.join(' ')} = ${x.value.join(' ')}`).sort();
    }
    return out;
  };

  it('BPF_MAP_UPDATE_BATCH (python3) and bpftool batch fill identical maps', async () => {
    const c = contents();
    const a = generation(env.bpffs, 'g-syscall'), b = generation(env.bpffs, 'g-bpftool');
    await loadObject(env.exec, object, a);
    await loadObject(env.exec, object, b);
    const fa = await fill(env.exec, c, a, env.tmp, 'syscall');
    const fb = await fill(env.exec, c, b, env.tmp, 'bpftool');
    expect(fa).toEqual({ method: 'syscall', entries: N4 + 800 });
    expect(fb).toEqual({ method: 'bpftool', entries: N4 + 800 });
    const [da, db] = [await dumps('g-syscall'), await dumps('g-bpftool')];
    expect(da[MAP_NAMES.dst4]).toHaveLength(N4);
    expect(da[MAP_NAMES.verdict]).toHaveLength(500);
    expect(da).toEqual(db);
  }, 120_000);

  it('without python3 the fill falls back to bpftool batch and says why', async () => {
    const c = contents();
    c.maps[MAP_NAMES.dst4] = c.maps[MAP_NAMES.dst4].slice(0, 1000);
    const g = generation(env.bpffs, 'g-fallback');
    await loadObject(env.exec, object, g);
    const noPython: Exec = (argv) => (/python/.test(argv[0]) ? Promise.reject(new Error('python3: not found in PATH')) : env.exec(argv));
    const f = await fill(noPython, c, g, env.tmp);
    expect(f.method).toBe('bpftool');
    expect(f.fallback).toContain('python3: not found in PATH');
    expect((await dumps('g-fallback'))[MAP_NAMES.dst4]).toHaveLength(1000);
  }, 60_000);
});
