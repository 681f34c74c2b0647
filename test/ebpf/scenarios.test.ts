/**
 * The example policies' traffic through the eBPF backend, the counterpart of
 * test/nft/scenarios.test.ts: for every example segment, the same fixed grid
 * of probes (plain running container, staging and running members of the
 * policy's dynamic groups, IPv4 and IPv6, to the VPC and the internet,
 * tcp/udp/icmp) is sent through the cell twice in one topology:
 *
 * - eBPF: the conntrack program (objectsToTry()[0]) with planMaps(plan, {
 *   members }) installed in a private bpffs and attached on the tc ingress of
 *   the container-facing device (to-app); conntrack is active in the cell
 *   namespace (no-op mangle rule), the platform's FORWARD accepts;
 * - iptables: the `compile --out DIR` payloads with the same members in the
 *   ipset member sets, the platform around them as in the nft scenarios.
 *
 * explain decides the expected verdict. docs/ebpf.md "Trade-offs": tc only
 * passes or drops, so deny (REJECT too) must be a timeout through the
 * program; tighten and enforce both pass allowed and untouched packets.
 * iptables must give explain's verdict with REJECT refused, and both backends
 * must agree probe by probe (REJECT counted as a drop).
 *
 * Replies of these probes come back from the VPC/internet sides, whose
 * interfaces carry no program: what the program judges is the request. The
 * cell's conntrack table is flushed before each pass, so that a stale entry
 * of an earlier pass (same ports by chance) cannot turn a new connection into
 * an established one on either backend.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { compileSegment } from '../../src/compile/index.js';
import { detach, install, python } from '../../src/ebpf/load.js';
import { planMaps, type MapMember } from '../../src/ebpf/maps.js';
import { objectsToTry } from '../../src/ebpf/program.js';
import { loadPolicy } from '../../src/policy/index.js';
import { Topology, type Outcome } from '../kernel/netns.js';
import { exampleCases, gridProbes, gridSources } from '../kernel/example-grid.js';
import { compile, EXAMPLES, explainInProcess, waitFor, type Explained } from '../kernel/cli.js';
import { BpfEnv } from './env.js';

const kernel = kernelGate(['ip', 'tc', 'bpftool', 'socat', 'ping', 'iptables-restore', 'ip6tables-restore', 'ipset', 'python3']);

/** the container-facing device of the default topology (the app side's link) */
const CONTAINER_SIDES = ['to-app'];


/**
 * Flush the conntrack table of the namespace it runs in: one ctnetlink
 * IPCTNL_MSG_CT_DELETE without a tuple (family AF_UNSPEC: every entry), as
 * `conntrack -F` does; exits non-zero unless the kernel acknowledges it.
 */
const CT_FLUSH_PY = `
import socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
s.send(struct.pack('=IHHIIBBH', 20, (1 << 8) | 2, 1 | 4, 1, 0, 0, 0, 0))
d = s.recv(4096)
t, err = struct.unpack_from('=H', d, 4)[0], struct.unpack_from('=i', d, 16)[0]
if t != 2 or err != 0: sys.stderr.write('conntrack flush: type %d error %d\\n' % (t, err)); sys.exit(1)
`;

describe.skipIf(kernel.skip)('example scenarios: eBPF (conntrack program) and iptables backends vs explain', () => {
  let t: Topology;
  let env: BpfEnv;
  let ctObject = '';
  const seen = new Map<string, number>();
  const count = (k: string) => seen.set(k, (seen.get(k) ?? 0) + 1);
  const flushConntrack = () => t.cellExec([python(), '-I', '-S', '-c', CT_FLUSH_PY]);

  beforeAll(async () => {
    env = BpfEnv.create();
    t = await Topology.create();
    // conntrack runs in a namespace once a rule there needs it: a no-op rule, in the cell namespace only
    for (const tool of ['iptables', 'ip6tables']) {
      await t.cellExec([tool, '-w', '-t', 'mangle', '-A', 'PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', 'RETURN']);
    }
    const [ct] = objectsToTry();
    expect(ct.variant).toBe('conntrack');
    ctObject = join(env.tmp, 'cellwall-ct.bpf.o');
    writeFileSync(ctObject, ct.object);
  });
  afterAll(async () => {
    await t?.destroy();
    env?.cleanup();
  });

  it.each(exampleCases)('$file --segment $segment ($mode)', async ({ file, segment, mode, dynamic }) => {
    const policy = join(EXAMPLES, file);
    const c = await compile(policy, segment);
    try {
      const plan = compileSegment(await loadPolicy(policy), segment).plan;
      const { srcs, members: sets } = gridSources(dynamic);
      const members: MapMember[] = srcs.filter((s) => s.member).map((s) => ({ addr: s.addr, phase: s.phase, groups: [s.member!] }));
      const probes = gridProbes(srcs);
      const explained: Explained[] = [];
      for (const p of probes) {
        const proto = p.proto === 'icmp' ? (p.dst.includes(':') ? 'icmpv6' : 'icmp') : p.proto;
        explained.push(await explainInProcess(policy, { segment, src: p.s.addr, dst: p.dst, proto, port: p.port, phase: p.s.phase, member: p.s.member }));
      }
      const wantBpf: Outcome[] = explained.map((e) => (e.verdict === 'deny' ? 'timeout' : 'ok'));
      const wantIpt: Outcome[] = explained.map((e) => (e.verdict === 'deny' ? (e.target === 'REJECT' ? 'refused' : 'timeout') : 'ok'));
      const probeAll = (wants: Outcome[]) =>
        Promise.all(probes.map((p, i) => t.probe(p.proto, p.s.addr, p.dst, p.port, { timeoutMs: waitFor(wants[i]) })));
      const cellExec = (argv: string[]) => t.cellExec(argv);

      // eBPF: a fresh generation with this segment's maps and members, attached (replacing the previous case's)
      await t.reset();
      await t.platform({ policy: 'ACCEPT' });
      const root = join(env.bpffs, 'cellwall');
      const scratch = mkdtempSync(join(env.tmp, 'scratch-'));
      const g = await install({
        root, object: ctObject, contents: planMaps(plan, { members }),
        devs: CONTAINER_SIDES, bpftool: env.exec, tc: cellExec, scratch,
      });
      expect(readdirSync(root), 'only the attached generation stays pinned').toEqual([basename(g.dir)]);
      for (const dev of CONTAINER_SIDES) {
        const shown = await cellExec(['tc', 'filter', 'show', 'dev', dev, 'ingress']);
        expect(shown.match(/direct-action/g)?.length, shown).toBe(1);
      }
      await flushConntrack();
      const viaBpf = await probeAll(wantBpf);
      for (const dev of CONTAINER_SIDES) await detach(cellExec, dev);

      // iptables + ipset payloads of the same compile, same members, the platform as in the nft scenarios
      await t.reset();
      await t.load(c.dir);
      for (const m of sets) await t.cellExec(['ipset', 'add', m.set, m.addr]);
      await t.platform(mode === 'tighten' ? { policy: 'DROP', after: [['-j', 'ACCEPT']] } : { policy: 'ACCEPT' });
      await flushConntrack();
      const viaIpt = await probeAll(wantIpt);
      await t.reset();

      const bad: string[] = [];
      probes.forEach((p, i) => {
        const e = explained[i];
        const bpf = viaBpf[i].outcome;
        const ipt = viaIpt[i].outcome;
        const what =
          `${p.proto} ${p.s.addr} (${p.s.member ?? 'container'} ${p.s.phase}) -> ${p.dst}${p.port ? `:${p.port}` : ''}: ` +
          `explain ${e.verdict}/${e.target} (${e.what})`;
        if (bpf !== wantBpf[i]) bad.push(`${what}: eBPF ${bpf} (${viaBpf[i].detail}), expected ${wantBpf[i]}`);
        if (ipt !== wantIpt[i]) bad.push(`${what}: iptables ${ipt} (${viaIpt[i].detail}), expected ${wantIpt[i]}`);
        if (bpf !== (ipt === 'refused' ? 'timeout' : ipt)) bad.push(`${what}: eBPF ${bpf} but iptables ${ipt}`);
        count(`${e.verdict}${e.verdict === 'deny' ? ` ${e.target}` : ''}/${bpf}`);
      });
      expect(bad, `${file} --segment ${segment}:\n${bad.join('\n')}`).toEqual([]);
    } finally {
      c.cleanup();
    }
  });

  it('the grid met allowed, untouched and rejected (dropped by eBPF) packets', () => {
    // the examples' denies are all REJECT (dcos-it-hr, the one `deny: drop` policy, leaves the grid's containers untouched)
    expect([...seen.keys()], JSON.stringify(Object.fromEntries(seen))).toEqual(
      expect.arrayContaining(['allow/ok', 'untouched/ok', 'deny REJECT/timeout']),
    );
  });
});
