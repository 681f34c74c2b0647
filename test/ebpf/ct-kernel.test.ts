/**
 * The conntrack program (buildObject({ conntrack: true })) in the kernel:
 *
 * - its BTF, as `bpftool btf dump` shows it, declares the two kfuncs with the
 *   prototypes of the kernel's own BTF (same arity, same kinds, same struct
 *   names); libbpf resolves them and the verifier accepts the program;
 * - `bpftool prog run` on crafted frames (an empty connection table) equals
 *   the documented meaning for new connections on random policies, and drops
 *   the reverse-allow packet the stateless program passes;
 * - on real traffic in a cwt-* topology (conntrack active in the cell
 *   namespace through a no-op iptables conntrack rule there): a reply to a
 *   connection opened by a source cellwall does not govern passes only with
 *   the conntrack program (and only when the policy accepts established
 *   traffic), a packet from source port P to a container allowed to reach the
 *   sender on P is dropped by it (passed by the stateless program), and the
 *   iptables backend agrees with the conntrack program on every case.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { kernelGate, KERNEL_TOOLS } from '../helpers/caps.js';
import { ctx } from '../helpers/cli-ctx.js';
import { runCompile } from '../../src/compile/cli.js';
import { compileSegment } from '../../src/compile/index.js';
import { evaluatePlan, type Packet } from '../../src/compile/evaluate.js';
import type { Plan } from '../../src/compile/plan.js';
import { loadPolicy } from '../../src/policy/index.js';
import { buildObject, classifier, CT_KFUNCS, mapDefs, PROGRAM_NAME, PROGRAM_SECTION, TC_ACT_OK, TC_ACT_SHOT } from '../../src/ebpf/program.js';
import { writeElf } from '../../src/ebpf/elf.js';
import { planMaps } from '../../src/ebpf/maps.js';
import { detach, fillMaps, generation, install, loadObject } from '../../src/ebpf/load.js';
import { Topology, type Outcome } from '../kernel/netns.js';
import { waitFor } from '../kernel/cli.js';
import { DIFF_SIDES, genPolicy, Rand, SOURCES, UNGOVERNED } from '../kernel/gen.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';
import { frame } from './packet.js';
import { expectedAction } from './sim.js';

const kernel = kernelGate([...KERNEL_TOOLS, ...EBPF_TOOLS]);
const CONTAINER_SIDES = ['to-app', 'to-peer'];

/** `bpftool btf dump ... format raw` -> the prototype of FUNC `name`: kinds and struct names of return and parameters */
function protoOf(dump: string, name: string): string[] {
  const types = new Map<number, string>();
  for (const m of dump.matchAll(/^\[(\d+)\] (.*)$/gm)) types.set(Number(m[1]), m[2]);
  const describe = (id: number): string => {
    if (id === 0) return 'void';
    const t = types.get(id)!;
    const kind = t.split(' ')[0];
    const ref = Number(/type_id=(\d+)/.exec(t)?.[1] ?? 0);
    if (kind === 'TYPEDEF' || kind === 'CONST' || kind === 'VOLATILE') return describe(ref);
    if (kind === 'PTR') return `*${describe(ref)}`;
    if (kind === 'STRUCT') return `struct ${/'([^']*)'/.exec(t)![1]}`;
    return kind;
  };
  const fn = new RegExp(`^\\[\\d+\\] FUNC '${name}' type_id=(\\d+)`, 'm').exec(dump);
  if (!fn) throw new Error(`no FUNC ${name}`);
  const protoId = Number(fn[1]);
  const lines = dump.split('\n');
  const at = lines.findIndex((l) => l.startsWith(`[${protoId}] FUNC_PROTO`));
  const ret = Number(/ret_type_id=(\d+)/.exec(lines[at])![1]);
  const vlen = Number(/vlen=(\d+)/.exec(lines[at])![1]);
  const params = lines.slice(at + 1, at + 1 + vlen).map((l) => describe(Number(/type_id=(\d+)/.exec(l)![1])));
  return [describe(ret), ...params];
}

describe.skipIf(kernel.skip)('conntrack program: BTF, verifier, prog run', () => {
  let env: BpfEnv;
  let ct: string;
  let gen = 0;

  beforeAll(() => {
    env = BpfEnv.create();
    ct = join(env.tmp, 'ct.bpf.o');
    writeFileSync(ct, buildObject({ conntrack: true }));
  });
  afterAll(() => env?.cleanup());

  async function runVerdict(prog: string, data: Buffer): Promise<number> {
    const f = join(env.tmp, 'pkt.bin');
    writeFileSync(f, data);
    const out = await env.exec(['bpftool', 'prog', 'run', 'pinned', prog, 'data_in', f, 'repeat', '1']);
    return Number(/Return value: (\d+)/.exec(out)![1]);
  }

  async function loaded(plan: Plan, object = ct) {
    const g = generation(env.bpffs, `g${gen++}`);
    await loadObject(env.exec, object, g);
    await fillMaps(env.exec, planMaps(plan), g, env.tmp);
    return g;
  }

  it('declares the kfuncs as the kernel does: bpftool btf dump of the object vs vmlinux BTF', async () => {
    const ours = await env.exec(['bpftool', 'btf', 'dump', 'file', ct, 'format', 'raw']);
    const vmlinux = await env.exec(['bpftool', 'btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'raw']);
    expect(ours).toMatch(/FUNC 'bpf_skb_ct_lookup' type_id=\d+ linkage=extern/);
    expect(ours).toMatch(/DATASEC '\.ksyms' size=0 vlen=2/);
    for (const name of ['bpf_skb_ct_lookup', 'bpf_ct_release']) expect(protoOf(ours, name), name).toEqual(protoOf(vmlinux, name));
    expect(protoOf(ours, 'bpf_skb_ct_lookup')).toEqual(['*struct nf_conn', '*struct __sk_buff', '*struct bpf_sock_tuple', 'INT', '*struct bpf_ct_opts', 'INT']);
  });

  it('passes the verifier; the translated program calls both kfuncs', async () => {
    const g = generation(env.bpffs, 'empty');
    await loadObject(env.exec, ct, g);
    const xlated = await env.exec(['bpftool', 'prog', 'dump', 'xlated', 'pinned', g.prog]);
    expect(xlated).toMatch(/call bpf_skb_ct_lookup#/);
    expect(xlated).toMatch(/call bpf_ct_release#/);
    expect(await runVerdict(g.prog, frame({ src: '10.255.0.2', dst: '8.8.8.8', proto: 'tcp', port: 80 }))).toBe(TC_ACT_OK);
  });

  it('reads nf_conn.status through a CO-RE relocation: a wrong declared offset is rewritten to the kernel\'s', async () => {
    const vmlinux = await env.exec(['bpftool', 'btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'raw']);
    const nfConn = /^\[\d+\] STRUCT 'nf_conn' size=\d+ vlen=\d+\n((?:\t.*\n)+)/m.exec(vmlinux)![1];
    const kernelOff = Number(/'status' type_id=\d+ bits_offset=(\d+)/.exec(nfConn)![1]) / 8;
    // the same program, declaring (and reading) status 8 bytes off
    const a = classifier({ conntrack: true });
    const code = a.bytes();
    const at = a.coreRelocs[0].insn;
    const wrong = code.readInt16LE(at * 8 + 2) - 8;
    code.writeInt16LE(wrong, at * 8 + 2);
    const obj = join(env.tmp, 'core.bpf.o');
    writeFileSync(obj, writeElf({
      section: PROGRAM_SECTION, name: PROGRAM_NAME, code, mapRefs: a.mapRefs, maps: mapDefs(), license: 'GPL',
      kfuncRefs: a.kfuncRefs, kfuncs: CT_KFUNCS, structs: [{ name: 'nf_conn', size: 248, fields: [{ name: 'status', offset: wrong }] }], coreRelocs: a.coreRelocs,
    }));
    const g = generation(env.bpffs, 'core');
    await loadObject(env.exec, obj, g);
    const xlated = await env.exec(['bpftool', 'prog', 'dump', 'xlated', 'pinned', g.prog]);
    const after = /call bpf_skb_ct_lookup#\d+\n.*\n.*r7 = \*\(u64 \*\)\(r0 \+(\d+)\)/.exec(xlated);
    expect(after, xlated).not.toBeNull();
    expect(Number(after![1])).toBe(kernelOff);
    expect(kernelOff).not.toBe(wrong);
  });

  it.each([0xc701, 0xc702, 0xc703])('random policy %i: new connections (empty conntrack) equal evaluatePlan', async (seed) => {
    const r = new Rand(seed);
    const doc = genPolicy(r, seed % 2 ? 'enforce' : 'tighten');
    const file = join(env.tmp, `p-${seed}.yaml`);
    writeFileSync(file, stringify(doc));
    const plan = compileSegment(await loadPolicy(file), 'seg').plan;
    const g = await loaded(plan);
    const bad: string[] = [];
    const srcs = [...SOURCES, ...UNGOVERNED];
    let shot = 0;
    for (let i = 0; i < 40; i++) {
      const s = r.pick(srcs);
      const dst = r.pick(s.dsts);
      const six = s.addr.includes(':');
      const kind = r.pick(['tcp', 'udp', 'icmp'] as const);
      const p: Packet = kind === 'icmp' ? { src: s.addr, dst, proto: six ? 'icmpv6' : 'icmp', type: r.pick(six ? [128, 129] : [8, 0]) }
        : { src: s.addr, dst, proto: kind, port: r.pick([53, 80, 443, 5432, 8080]) };
      const want = expectedAction(plan, p, undefined, { conntrack: true });
      const got = await runVerdict(g.prog, frame(p));
      if (got === TC_ACT_SHOT) shot++;
      if (got !== want) bad.push(`${JSON.stringify(p)}: evaluatePlan ${evaluatePlan(plan, p).verdict}, want ${want}, got ${got}`);
    }
    expect(bad).toEqual([]);
    expect(shot).toBeGreaterThan(0);
  });
});

/** a policy for the traffic cases: containers a (app side) and b (peer side); b may reach a on tcp 9090-9099; no egress */
function trafficPolicy(established: 'accept' | 'none') {
  return {
    version: 1,
    mode: 'enforce',
    defaults: { deny: 'drop', log_denied: false, established },
    networks: { overlay: ['10.255.0.0/16', 'fd00:255::/48'] },
    groups: {
      a: { networks: ['10.255.0.0/24', 'fd00:255::/64'] },
      b: { networks: ['10.255.1.0/24', 'fd00:255:0:1::/64'] },
    },
    segments: { seg: { container_network: 'overlay', egress: 'closed' } },
    policies: { default: 'deny', rules: [{ from: 'b', to: 'a', protocol: 'tcp', ports: '9090-9099' }] },
  };
}

describe.skipIf(kernel.skip)('conntrack program: traffic (cwt-* topology)', () => {
  let t: Topology;
  let env: BpfEnv;
  let dir: string;
  const objects: Record<'ct' | 'stateless', string> = { ct: '', stateless: '' };
  let sport = 9090;

  beforeAll(async () => {
    env = BpfEnv.create();
    t = await Topology.create(DIFF_SIDES);
    // conntrack runs in a namespace once a rule there needs it: a no-op rule, inside the cell namespace only
    for (const tool of ['iptables', 'ip6tables']) {
      await t.cellExec([tool, '-w', '-t', 'mangle', '-A', 'PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'RETURN']);
    }
    dir = mkdtempSync(join(env.tmp, 'c-'));
    objects.ct = join(dir, 'ct.bpf.o');
    objects.stateless = join(dir, 'stateless.bpf.o');
    writeFileSync(objects.ct, buildObject({ conntrack: true }));
    writeFileSync(objects.stateless, buildObject());
  }, 60_000);
  afterAll(async () => {
    await t?.destroy();
    env?.cleanup();
  });

  /** tcp connect from a fixed source port (socat, bounded); ok when the handshake completes */
  async function connectFrom(role: string, src: string, port: number, dst: string, dport: number, want: Outcome): Promise<Outcome> {
    const host = (a: string) => (a.includes(':') ? `[${a}]` : a);
    const to = want === 'timeout' ? 1 : 4;
    const r = await t.exec(role, ['timeout', String(to + 2), 'socat', '-T', String(to), '/dev/null',
      `TCP:${host(dst)}:${dport},bind=${host(src)}:${port},connect-timeout=${to}`], (to + 5) * 1000);
    return r.code === 0 ? 'ok' : 'timeout';
  }

  type Case = { what: string; run: () => Promise<Outcome> };
  /** the cases, each with what it must give per backend (program or iptables) */
  function cases(): Array<Case & { want: Record<'ct' | 'stateless' | 'iptables', Outcome> }> {
    const inbound = (proto: 'tcp' | 'udp', src: string, dst: string, port: number) => (want: Outcome) =>
      t.probe(proto, src, dst, port, { timeoutMs: waitFor(want) }).then((x) => x.outcome);
    return [
      // a connection opened by a source cellwall does not govern (the VPC host) to a container: the reply passes only with conntrack
      ...([['tcp', '10.0.0.10', '10.255.0.2', 80], ['udp', '10.0.0.10', '10.255.0.2', 53], ['tcp', 'fd00:10::10', 'fd00:255::2', 443], ['udp', 'fd00:10::10', 'fd00:255:0:1::3', 53]] as const)
        .map(([proto, s, d, p]) => ({ what: `${proto} ${s} -> ${d}:${p} (reply from a governed container)`, probe: inbound(proto, s, d, p), want: { ct: 'ok', stateless: 'timeout', iptables: 'ok' } as const }))
        .map((c) => ({ what: c.what, want: c.want, run: () => c.probe('ok') })),
      // the reverse-allow hole: a (app side) sends from source port 909x to b, which may reach a on 909x
      ...([['10.255.0.2', '10.255.1.2'], ['fd00:255::2', 'fd00:255:0:1::2']] as const).map(([s, d]) => ({
        what: `tcp ${s}:909x -> ${d}:8080 (source port b may reach)`, want: { ct: 'timeout', stateless: 'ok', iptables: 'timeout' } as const,
        run: () => connectFrom('app', s, sport++, d, 8080, 'timeout'),
      })),
    ];
  }

  async function viaProgram(plan: Plan, kind: 'ct' | 'stateless', name: string) {
    await t.reset();
    const g = await install({ root: join(env.bpffs, 'cellwall'), object: objects[kind], contents: planMaps(plan), devs: CONTAINER_SIDES, bpftool: env.exec, tc: (argv) => t.cellExec(argv), scratch: dir, name });
    try {
      return await Promise.all(cases().map((c) => c.run()));
    } finally {
      for (const dev of CONTAINER_SIDES) await detach((argv) => t.cellExec(argv), dev);
      expect(g.prog).toContain(name);
    }
  }

  async function viaIptables(file: string) {
    await t.reset();
    const out = mkdtempSync(join(dir, 'ipt-'));
    await runCompile(file, { segment: 'seg', out }, ctx().ctx as never);
    await t.load(out);
    try {
      return await Promise.all(cases().map((c) => c.run()));
    } finally {
      await t.reset();
    }
  }

  it.each(['accept', 'none'] as const)('established: %s — conntrack program vs stateless program vs iptables', async (established) => {
    const file = join(dir, `policy-${established}.yaml`);
    writeFileSync(file, stringify(trafficPolicy(established)));
    const plan = compileSegment(await loadPolicy(file), 'seg').plan;
    const names = cases().map((c) => c.what);
    const ct = await viaProgram(plan, 'ct', `ct-${established}`);
    const stateless = await viaProgram(plan, 'stateless', `sl-${established}`);
    const ipt = await viaIptables(file);
    const bad: string[] = [];
    cases().forEach((c, i) => {
      // without established: accept, conntrack changes nothing: replies are new packets
      const want = established === 'accept' ? c.want : { ...c.want, ct: 'timeout', iptables: 'timeout' };
      if (ct[i] !== want.ct) bad.push(`${names[i]}: conntrack program ${ct[i]}, want ${want.ct}`);
      if (stateless[i] !== want.stateless) bad.push(`${names[i]}: stateless program ${stateless[i]}, want ${want.stateless}`);
      if (ipt[i] !== want.iptables) bad.push(`${names[i]}: iptables ${ipt[i]}, want ${want.iptables}`);
      if (ct[i] !== ipt[i]) bad.push(`${names[i]}: conntrack program ${ct[i]} != iptables ${ipt[i]}`);
    });
    expect(bad).toEqual([]);
  }, 120_000);
});
