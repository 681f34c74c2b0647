/**
 * Differential test of the eBPF backend on real traffic: for seeded random
 * policies (test/kernel/gen.ts), the conntrack program (buildObject({
 * conntrack: true })) with the policy's maps is loaded in a private bpffs,
 * attached with tc on the cell's container-facing interfaces (ingress of
 * to-app and to-peer; maps.json equals planMaps without members, checked in
 * maps.test.ts), and every probe's outcome is compared with (a) the documented
 * meaning (evaluatePlan for the request as a new connection and for its reply
 * as established; deny = drop; icmp keeps the reply exemption, see sim.ts)
 * and (b) what the iptables backend does with the same policy in the same
 * topology (REJECT mapped to drop). Established flows are compared too:
 * connections opened by sources cellwall does not govern (VPC and internet
 * hosts) to containers, whose replies cross the program. Conntrack is active
 * in the cell namespace (a no-op conntrack rule in its mangle table). Between
 * seeds the filter is swapped to a new program generation with
 * `tc filter replace`.
 *
 * Dynamic members: space-a's running (.3) and staging (.5) members go into
 * the ipset member sets for iptables and into planMaps' members for eBPF.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { stringify } from 'yaml';
import { kernelGate, KERNEL_TOOLS } from '../helpers/caps.js';
import { runCompile } from '../../src/compile/cli.js';
import { evaluatePlan, type Membership, type Packet } from '../../src/compile/evaluate.js';
import { compileSegment } from '../../src/compile/index.js';
import type { Plan } from '../../src/compile/plan.js';
import { loadPolicy } from '../../src/policy/index.js';
import { detach, install } from '../../src/ebpf/load.js';
import { planMaps, type MapMember } from '../../src/ebpf/maps.js';
import { buildObject } from '../../src/ebpf/program.js';
import { dynamicSetName } from '../../src/policy/names.js';
import { PORTS, Topology, type Outcome } from '../kernel/netns.js';
import { waitFor } from '../kernel/cli.js';
import { DIFF_SIDES, genPolicy, genProbes, Rand, type Mode, type ProbeSpec, type Source } from '../kernel/gen.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';

const kernel = kernelGate([...KERNEL_TOOLS, ...EBPF_TOOLS]);
const SEEDS = [0xeb5eed1, 0xeb5eed2, 0xeb5eed3, 0xeb5eed4];
const PROBES = 25;
const CONTAINER_SIDES = ['to-app', 'to-peer'];
const INBOUND = 6;
/** hosts cellwall does not govern, opening connections to containers (the replies are what the program sees) */
const OUTSIDE: Source[] = [
  { addr: '10.0.0.10', phase: 'running', what: 'vpc host (not governed)', dsts: ['10.255.0.2', '10.255.0.3', '10.255.0.4', '10.255.1.2', '10.255.1.3'] },
  { addr: '203.0.113.10', phase: 'running', what: 'internet host (not governed)', dsts: ['10.255.0.2', '10.255.0.5', '10.255.1.3'] },
  { addr: 'fd00:10::10', phase: 'running', what: 'vpc host (not governed)', dsts: ['fd00:255::2', 'fd00:255::3', 'fd00:255:0:1::2'] },
  { addr: '2001:db8::10', phase: 'running', what: 'internet host (not governed)', dsts: ['fd00:255::4', 'fd00:255:0:1::3'] },
];

/** connections from OUTSIDE to containers, tcp and udp (conntrack covers them; icmp keeps the reply exemption) */
function inboundProbes(r: Rand, n: number): ProbeSpec[] {
  return Array.from({ length: n }, () => {
    const src = r.pick(OUTSIDE);
    return { src, dst: r.pick(src.dsts), proto: r.pick(['tcp', 'udp'] as const), port: r.pick(PORTS) };
  });
}

function packet(p: ProbeSpec): Packet {
  const v6 = p.dst.includes(':');
  if (p.proto === 'icmp') return { src: p.src.addr, dst: p.dst, proto: v6 ? 'icmpv6' : 'icmp' };
  return { src: p.src.addr, dst: p.dst, proto: p.proto, port: p.port };
}

const MEMBERS: MapMember[] = [4, 6].flatMap((f) => {
  const base = f === 4 ? '10.255.0.' : 'fd00:255::';
  return [{ addr: `${base}3`, phase: 'running' as const, groups: ['space-a'] }, { addr: `${base}5`, phase: 'staging' as const, groups: ['space-a'] }];
});

function membership(p: ProbeSpec): Membership {
  return { phase: p.src.phase, groups: p.src.member ? [p.src.member] : [] };
}

/** membership of a destination that is a dynamic member (replies come from it) */
function memberOf(addr: string): Membership | undefined {
  const m = MEMBERS.find((x) => x.addr === addr);
  return m && { phase: m.phase, groups: m.groups };
}

/** outcome the conntrack program must give: the request as a new connection, its reply (tcp/udp) as established */
function expected(plan: Plan, p: Packet, m: Membership): Outcome {
  if (p.proto === 'icmp' || p.proto === 'icmpv6') {
    if (evaluatePlan(plan, p, m).verdict !== 'deny') return 'ok';
    return evaluatePlan(plan, { src: p.dst, dst: p.src, proto: p.proto }).verdict === 'allow' ? 'ok' : 'timeout';
  }
  if (evaluatePlan(plan, p, m).verdict === 'deny') return 'timeout';
  const reply: Packet = { src: p.dst, dst: p.src, proto: p.proto, port: 40000, established: true };
  return evaluatePlan(plan, reply, memberOf(p.dst)).verdict === 'deny' ? 'timeout' : 'ok';
}

describe.skipIf(kernel.skip)('eBPF backend: traffic, differential against evaluatePlan and the iptables backend', () => {
  let t: Topology;
  let env: BpfEnv;
  const seen = new Map<string, number>();

  let ctObject = '';

  beforeAll(async () => {
    env = BpfEnv.create();
    t = await Topology.create(DIFF_SIDES);
    // conntrack runs in a namespace once a rule there needs it: a no-op rule, inside the cell namespace only
    for (const tool of ['iptables', 'ip6tables']) {
      await t.cellExec([tool, '-w', '-t', 'mangle', '-A', 'PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'RETURN']);
    }
    ctObject = join(env.tmp, 'cellwall-ct.bpf.o');
    writeFileSync(ctObject, buildObject({ conntrack: true }));
  });
  afterAll(async () => {
    await t?.destroy();
    env?.cleanup();
  });

  const cases = SEEDS.map((seed, i) => ({ seed: seed.toString(16), n: seed, mode: (i % 2 ? 'enforce' : 'tighten') as Mode }));

  it.each(cases)('seed $seed ($mode)', async ({ n, mode }) => {
    const r = new Rand(n);
    const doc = genPolicy(r, mode);
    const dir = mkdtempSync(join(env.tmp, `c-${n.toString(16)}-`));
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, stringify(doc));
    const quiet = { setExit: () => {}, stdout: { write: () => true }, stderr: { write: () => true } } as never;
    await runCompile(file, { segment: 'seg', out: dir, backend: 'ebpf' }, quiet);
    const plan = compileSegment(await loadPolicy(file), 'seg').plan;
    const probes = [...genProbes(r, PROBES), ...inboundProbes(r, INBOUND)];
    const cellExec = (argv: string[]) => t.cellExec(argv);

    // eBPF: a fresh generation, filled, then attached (replacing the previous seed's program)
    await t.reset();
    await t.platform({ policy: 'ACCEPT' });
    const root = join(env.bpffs, 'cellwall');
    const g = await install({
      root, object: ctObject, contents: planMaps(plan, { members: MEMBERS }),
      devs: CONTAINER_SIDES, bpftool: env.exec, tc: cellExec, scratch: dir,
    });
    expect(readdirSync(root), 'only the attached generation stays pinned').toEqual([basename(g.dir)]);
    const wants = probes.map((p) => expected(plan, packet(p), membership(p)));
    const viaBpf = await Promise.all(probes.map((p, i) => t.probe(p.proto, p.src.addr, p.dst, p.port, { timeoutMs: waitFor(wants[i]) })));
    if (n === SEEDS[0]) {
      // a policy change is a swap: installing another generation replaces the filter in place
      const other = await install({
        root, object: ctObject, contents: { maps: {}, stats: { srcClasses: 0, dstClasses: 0, verdicts: 0, evaluations: 0 } },
        devs: CONTAINER_SIDES, bpftool: env.exec, tc: cellExec, scratch: dir, name: 'empty',
      });
      for (const dev of CONTAINER_SIDES) {
        const shown = await cellExec(['tc', 'filter', 'show', 'dev', dev, 'ingress']);
        expect(shown.match(/direct-action/g)?.length, shown).toBe(1);
      }
      const denied = probes.findIndex((_, i) => wants[i] === 'timeout');
      if (denied >= 0) {
        const p = probes[denied];
        // the empty maps govern nothing: the probe denied a moment ago now passes
        expect((await t.probe(p.proto, p.src.addr, p.dst, p.port, { timeoutMs: 4000 })).outcome).toBe('ok');
      }
      expect(readdirSync(root)).toEqual([basename(other.dir)]);
    }
    for (const dev of CONTAINER_SIDES) await detach(cellExec, dev);

    // iptables backend, same policy, same probes
    await t.cellExec(['ipset', 'restore', '-file', join(dir, 'ipset.restore')]);
    await t.load(dir);
    for (const m of MEMBERS) await t.cellExec(['ipset', 'add', dynamicSetName('space-a', m.phase, m.addr.includes(':') ? 6 : 4), m.addr]);
    const viaIpt = await Promise.all(probes.map((p, i) => t.probe(p.proto, p.src.addr, p.dst, p.port, { timeoutMs: waitFor(wants[i]) })));
    await t.reset();

    const bad: string[] = [];
    probes.forEach((p, i) => {
      const e = evaluatePlan(plan, packet(p), membership(p));
      const ebpf = viaBpf[i].outcome;
      const ipt = viaIpt[i].outcome === 'refused' ? 'timeout' : viaIpt[i].outcome;
      const inbound = i >= PROBES ? 'inbound ' : '';
      seen.set(`${inbound}${e.verdict}/${ebpf}`, (seen.get(`${inbound}${e.verdict}/${ebpf}`) ?? 0) + 1);
      const what = `${p.proto} ${p.src.addr} (${p.src.what}) -> ${p.dst}${p.port ? `:${p.port}` : ''}: evaluatePlan ${e.verdict} (${e.what})`;
      if (ebpf !== wants[i]) bad.push(`${what}: eBPF ${ebpf} (${viaBpf[i].detail}), expected ${wants[i]}`);
      if (ebpf !== ipt) bad.push(`${what}: eBPF ${ebpf}, iptables ${viaIpt[i].outcome}`);
    });
    expect(bad, `seed ${n.toString(16)} (${mode}), policy:\n${stringify(doc)}`).toEqual([]);
  });

  it('the seeds exercised allowed, denied and untouched traffic', () => {
    const keys = [...seen.keys()];
    for (const k of ['allow/ok', 'deny/timeout', 'untouched/ok', 'inbound untouched/ok']) expect(keys, JSON.stringify(Object.fromEntries(seen))).toContain(k);
  });
});
