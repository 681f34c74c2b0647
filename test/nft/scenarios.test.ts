/**
 * The example policies' traffic through the nft backend: for every example
 * segment, a fixed grid of probes (plain running container, staging and
 * running members of the policy's dynamic groups, IPv4 and IPv6, to the VPC
 * and the internet, tcp/udp/icmp) is sent through the cell twice, once with
 * ruleset.nft loaded and once with the iptables + ipset payloads of the same
 * compile; both must give explain's verdict (mapping as in
 * test/kernel/differential.test.ts; the platform lets untouched packets
 * through, see test/nft/differential.test.ts for why enforce needs that).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { Topology, type Outcome } from '../kernel/netns.js';
import { exampleCases, gridProbes, gridSources } from '../kernel/example-grid.js';
import { EXAMPLES, explainInProcess, waitFor, type Explained } from '../kernel/cli.js';
import { compileNft, liveTable } from './nft.js';

const kernel = kernelGate(['ip', 'nft', 'socat', 'ping', 'iptables-restore', 'ip6tables-restore', 'ipset']);


describe.skipIf(kernel.skip)('example scenarios: nft and iptables backends vs explain', () => {
  let t: Topology;
  const seen = new Map<string, number>();
  beforeAll(async () => {
    t = await Topology.create();
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it.each(exampleCases)('$file --segment $segment ($mode)', async ({ file, segment, mode, dynamic }) => {
    const policy = join(EXAMPLES, file);
    const c = await compileNft(policy, segment);
    try {
      const { srcs, members } = gridSources(dynamic);
      const probes = gridProbes(srcs);
      const explained: Explained[] = [];
      for (const p of probes) {
        const proto = p.proto === 'icmp' ? (p.dst.includes(':') ? 'icmpv6' : 'icmp') : p.proto;
        explained.push(await explainInProcess(policy, { segment, src: p.s.addr, dst: p.dst, proto, port: p.port, phase: p.s.phase, member: p.s.member }));
      }
      const wants: Outcome[] = explained.map((e) => (e.verdict === 'deny' ? (e.target === 'REJECT' ? 'refused' : 'timeout') : 'ok'));
      const platform = () =>
        t.platform(mode === 'tighten' ? { policy: 'DROP', after: [['-j', 'ACCEPT']] } : { policy: 'ACCEPT' });
      const probeAll = () => Promise.all(probes.map((p, i) => t.probe(p.proto, p.s.addr, p.dst, p.port, { timeoutMs: waitFor(wants[i]) })));

      await t.reset();
      await t.cellExec(['nft', 'flush', 'ruleset']);
      await t.cellExec(['nft', '-f', c.file]);
      for (const m of members) await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', m.set, `{ ${m.addr} }`]);
      await platform();
      const viaNft = await probeAll();
      // logging where asked: probes explain says are logged went through an nft log rule (its counter)
      const logged = explained.filter((e) => ((e as { logged?: string[] }).logged ?? []).length > 0).length;
      if (logged) {
        const logRules = (await liveTable(t)).rules.filter((r) => JSON.stringify(r.expr).includes('"log"'));
        const hits = logRules.reduce((n, r) => n + ((r.expr.find((x) => (x as { counter?: unknown }).counter) as { counter?: { packets: number } })?.counter?.packets ?? 0), 0);
        expect(hits, 'packets counted by nft log rules').toBeGreaterThan(0);
        seen.set('logged', (seen.get('logged') ?? 0) + logged);
      }

      await t.reset();
      await t.cellExec(['nft', 'flush', 'ruleset']);
      await t.load(c.dir);
      for (const m of members) await t.cellExec(['ipset', 'add', m.set, m.addr]);
      await platform();
      const viaIpt = await probeAll();

      const bad = probes
        .map((p, i) => ({ p, i }))
        .filter(({ i }) => viaNft[i].outcome !== wants[i] || viaIpt[i].outcome !== wants[i])
        .map(({ p, i }) =>
          `${p.proto} ${p.s.addr} (${p.s.member ?? 'container'} ${p.s.phase}) -> ${p.dst}${p.port ? `:${p.port}` : ''}: ` +
            `explain ${explained[i].verdict}/${explained[i].target} (${explained[i].what}) wants ${wants[i]}; ` +
            `nft: ${viaNft[i].outcome} (${viaNft[i].detail}), iptables: ${viaIpt[i].outcome} (${viaIpt[i].detail})`);
      expect(bad, bad.join('\n')).toEqual([]);
      explained.forEach((e, i) => seen.set(`${e.verdict}/${wants[i]}`, (seen.get(`${e.verdict}/${wants[i]}`) ?? 0) + 1));
    } finally {
      c.cleanup();
    }
  });

  it('the grid met allowed, refused, untouched and logged packets', () => {
    expect([...seen.keys()], JSON.stringify(Object.fromEntries(seen))).toEqual(expect.arrayContaining(['allow/ok', 'deny/refused', 'untouched/ok', 'logged']));
  });
});
