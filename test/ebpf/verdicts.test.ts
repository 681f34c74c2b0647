/**
 * The eBPF object is accepted by the kernel verifier (bpftool prog load in a
 * cwt-* namespace, maps pinned in a private bpffs), and with the maps filled
 * from a compiled policy, `bpftool prog run` on crafted frames returns
 * TC_ACT_SHOT exactly for the packets evaluatePlan denies (TC_ACT_OK for
 * allowed and untouched ones, and for replies: see sim.ts expectedAction), for the SPEC example and seeded random policies.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { kernelGate } from '../helpers/caps.js';
import { loadPolicy } from '../../src/policy/index.js';
import { compileSegment } from '../../src/compile/index.js';
import { evaluatePlan, type Packet, type PacketProto } from '../../src/compile/evaluate.js';
import type { Plan } from '../../src/compile/plan.js';
import { buildObject, TC_ACT_OK, TC_ACT_SHOT } from '../../src/ebpf/program.js';
import { planMaps } from '../../src/ebpf/maps.js';
import { fillMaps, generation, loadObject } from '../../src/ebpf/load.js';
import { genPolicy, Rand, SOURCES, UNGOVERNED } from '../kernel/gen.js';
import { PORTS } from '../kernel/netns.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';
import { frame } from './packet.js';
import { expectedAction } from './sim.js';

const kernel = kernelGate(EBPF_TOOLS);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const EXTRA4 = ['10.255.0.9', '10.0.0.10', '10.1.2.3', '203.0.113.10', '203.0.113.200', '198.51.100.10', '8.8.8.8', '192.0.2.1', '169.254.1.1', '0.0.0.0', '255.255.255.255'];
const EXTRA6 = ['fd00:255::9', 'fd00:10::10', '2001:db8::10', '2001:db8::ffff', '2600::1', 'fe80::1', '::1', 'fc00::1'];

/** random packets: governed and ungoverned sources, destinations from the test topology and elsewhere, every protocol */
function packets(r: Rand, n: number): Array<{ p: Packet; protoNum?: number }> {
  const out: Array<{ p: Packet; protoNum?: number }> = [];
  const srcs = [...SOURCES, ...UNGOVERNED].map((s) => s.addr);
  for (let i = 0; i < n; i++) {
    const src = r.chance(0.8) ? r.pick(srcs) : r.pick([...EXTRA4, ...EXTRA6]);
    const six = src.includes(':');
    const dst = r.pick(six ? [...EXTRA6, ...SOURCES.filter((s) => s.addr.includes(':')).flatMap((s) => s.dsts)] : [...EXTRA4, ...SOURCES.filter((s) => !s.addr.includes(':')).flatMap((s) => s.dsts)]);
    const kind = r.pick(['tcp', 'tcp', 'udp', 'icmp', 'other'] as const);
    if (kind === 'other') out.push({ p: { src, dst, proto: 'other' as PacketProto }, protoNum: 47 });
    else if (kind === 'icmp') {
      const echo = six ? 128 : 8;
      out.push({ p: { src, dst, proto: six ? 'icmpv6' : 'icmp', type: r.pick([echo, echo, six ? 129 : 0, 3]), code: r.pick([0, 0, 1]) } });
    } else out.push({ p: { src, dst, proto: kind, port: r.chance(0.8) ? r.pick(PORTS) : r.int(1, 65535) } });
  }
  return out;
}

describe.skipIf(kernel.skip)('eBPF classifier: verifier and bpftool prog run verdicts', () => {
  let env: BpfEnv;
  let obj: string;
  let gen = 0;

  beforeAll(() => {
    env = BpfEnv.create();
    obj = join(env.tmp, 'cellwall.bpf.o');
    writeFileSync(obj, buildObject());
  });
  afterAll(() => env?.cleanup());

  async function loaded(plan: Plan) {
    const g = generation(env.bpffs, `g${gen++}`);
    await loadObject(env.exec, obj, g);
    const contents = planMaps(plan);
    await fillMaps(env.exec, contents, g, env.tmp);
    return g;
  }

  async function runVerdict(prog: string, data: Buffer): Promise<number> {
    const f = join(env.tmp, 'pkt.bin');
    writeFileSync(f, data);
    const out = await env.exec(['bpftool', 'prog', 'run', 'pinned', prog, 'data_in', f, 'repeat', '1']);
    const m = /Return value: (\d+)/.exec(out);
    if (!m) throw new Error(`bpftool prog run: ${out}`);
    return Number(m[1]);
  }

  async function check(plan: Plan, r: Rand, n: number): Promise<Record<string, number>> {
    const g = await loaded(plan);
    const bad: string[] = [];
    const seen: Record<string, number> = {};
    for (const { p, protoNum } of packets(r, n)) {
      const ev = evaluatePlan(plan, p);
      const want = expectedAction(plan, p);
      const got = await runVerdict(g.prog, frame(p, protoNum));
      seen[`${ev.verdict}/${got}`] = (seen[`${ev.verdict}/${got}`] ?? 0) + 1;
      if (got !== want) bad.push(`${JSON.stringify(p)}: evaluatePlan ${ev.verdict} (step ${ev.step}, ${ev.what}), eBPF returned ${got}`);
    }
    expect(bad).toEqual([]);
    return seen;
  }

  it('the object passes the verifier and pins its five maps', async () => {
    const g = generation(env.bpffs, 'empty');
    await loadObject(env.exec, obj, g);
    const show = await env.exec(['bpftool', 'prog', 'show', 'pinned', g.prog]);
    expect(show).toMatch(/sched_cls\s+name cellwall/);
    const maps = await env.exec(['bpftool', 'map', 'show']);
    for (const m of ['cw_src4', 'cw_dst4', 'cw_src6', 'cw_dst6', 'cw_verdic']) expect(maps).toContain(m);
    // empty maps: nothing is governed, every packet passes
    const p: Packet = { src: '10.255.0.2', dst: '8.8.8.8', proto: 'tcp', port: 80 };
    expect(await runVerdict(g.prog, frame(p))).toBe(TC_ACT_OK);
  });

  it('SPEC example segments: verdicts equal evaluatePlan', async () => {
    const policy = await loadPolicy(join(ROOT, 'examples', 'cellwall.yaml'));
    const all: Record<string, number> = {};
    for (const seg of policy.segments.keys()) {
      const seen = await check(compileSegment(policy, seg).plan, new Rand(0xeb9f), 40);
      for (const [k, v] of Object.entries(seen)) all[k] = (all[k] ?? 0) + v;
    }
    expect(Object.keys(all)).toEqual(expect.arrayContaining(['deny/2', 'allow/0', 'untouched/0']));
  });

  it('reply exemption: the reply of an allowed app-to-app connection passes, the same packet as a new connection does not', async () => {
    const policy = await loadPolicy(join(ROOT, 'examples', 'cellwall.yaml'));
    const plan = compileSegment(policy, 'shared').plan;
    const g = await loaded(plan);
    // policies: hr -> it tcp 80 only; it -> hr is denied
    const reply: Packet = { src: '10.150.0.5', dst: '192.168.0.5', proto: 'tcp', port: 40000 };
    expect(evaluatePlan(plan, reply).verdict).toBe('deny');
    expect(evaluatePlan(plan, { src: '192.168.0.5', dst: '10.150.0.5', proto: 'tcp', port: 80 }).verdict).toBe('allow');
    expect(await runVerdict(g.prog, frame(reply, undefined, 80))).toBe(TC_ACT_OK);
    expect(await runVerdict(g.prog, frame(reply, undefined, 40001))).toBe(TC_ACT_SHOT);
    const newConn: Packet = { src: '10.150.0.5', dst: '192.168.0.5', proto: 'tcp', port: 80 };
    expect(evaluatePlan(plan, newConn).verdict).toBe('deny');
    expect(await runVerdict(g.prog, frame(newConn))).toBe(TC_ACT_SHOT);
  });

  it.each([0xeb01, 0xeb02, 0xeb03, 0xeb04])('random policy %i: verdicts equal evaluatePlan', async (seed) => {
    const r = new Rand(seed);
    const doc = genPolicy(r, seed % 2 ? 'enforce' : 'tighten');
    const file = join(env.tmp, `p-${seed}.yaml`);
    writeFileSync(file, stringify(doc));
    const plan = compileSegment(await loadPolicy(file), 'seg').plan;
    await check(plan, r, 60);
  });
});
