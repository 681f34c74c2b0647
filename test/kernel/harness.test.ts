/**
 * The harness itself, against a hand-written payload (fixtures/handmade):
 * the three probe outcomes must map to ACCEPT / REJECT / DROP in the kernel,
 * for tcp, udp and icmp, v4 and v6, and destroy() must leave nothing behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { kernelGate } from '../helpers/caps.js';
import { run, Topology } from './netns.js';

const kernel = kernelGate();
const HANDMADE = fileURLToPath(new URL('./fixtures/handmade', import.meta.url));

describe.skipIf(kernel.skip)('kernel harness', () => {
  let t: Topology;
  beforeAll(async () => {
    t = await Topology.create();
    await t.load(HANDMADE);
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('forwards through the cell when nothing matches (tcp, udp, icmp; v4 and v6)', async () => {
    const r = await Promise.all([
      t.tcp('10.255.0.2', '203.0.113.10', 80),
      t.udp('10.255.0.3', '203.0.113.10', 53),
      t.icmp('10.255.0.4', '203.0.113.10'),
      t.tcp('10.255.0.2', '10.0.0.10', 5432),
      t.tcp('fd00:255::2', '2001:db8::10', 443),
      t.udp('fd00:255::3', '2001:db8::10', 53),
      t.icmp('fd00:255::4', 'fd00:10::10'),
    ]);
    expect(r.map((x) => x.outcome)).toEqual(Array(r.length).fill('ok'));
  });

  it('reports a REJECT as refused, quickly (RST for tcp, icmp unreachable otherwise)', async () => {
    const r = await Promise.all([
      t.tcp('10.255.0.2', '203.0.113.11', 80),
      t.udp('10.255.0.2', '203.0.113.11', 53),
      t.icmp('10.255.0.2', '203.0.113.11'),
      t.tcp('fd00:255::2', '2001:db8::11', 80),
      t.udp('fd00:255::2', '2001:db8::11', 53),
      t.icmp('fd00:255::2', '2001:db8::11'),
    ]);
    expect(r.map((x) => x.outcome), JSON.stringify(r)).toEqual(Array(r.length).fill('refused'));
    // the RST/ICMP came from the rules: their counters moved
    const v4 = await t.counters(4);
    const rejects = v4.filter((c) => c.rule.includes('CW-test-reject4') && c.rule.includes('REJECT'));
    expect(rejects.map((c) => c.packets)).toEqual([1, 2]);
  });

  it('reports a DROP as timeout', async () => {
    const r = await Promise.all([
      t.tcp('10.255.0.5', '198.51.100.10', 80, { timeoutMs: 800 }),
      t.icmp('fd00:255::5', 'fd00:10::11', { timeoutMs: 800 }),
    ]);
    expect(r.map((x) => x.outcome)).toEqual(['timeout', 'timeout']);
  });

  it('binds the client to the requested source address', async () => {
    await t.cellExec(['iptables', '-w', '-I', 'CW-TEST', '1', '-s', '10.255.0.6', '-j', 'REJECT']);
    const [other, bound] = await Promise.all([
      t.udp('10.255.0.5', '203.0.113.10', 53),
      t.udp('10.255.0.6', '203.0.113.10', 53),
    ]);
    expect(other.outcome).toBe('ok');
    expect(bound.outcome).toBe('refused');
  });

  it('refuses probes on ports no server listens on', () => {
    expect(() => t.tcp('10.255.0.2', '203.0.113.10', 9)).toThrow(/not served/);
  });

  it('destroy() deletes every namespace it made', async () => {
    const small = await Topology.create([{ role: 'x', nets: [{ gw: '192.0.2.1/24', hosts: ['192.0.2.2'] }] }]);
    const names = [small.cell, ...small.ns.values()];
    const before = (await run(['ip', 'netns', 'list'])).stdout;
    for (const n of names) expect(before).toContain(n);
    await small.destroy();
    const after = (await run(['ip', 'netns', 'list'])).stdout;
    for (const n of names) expect(after).not.toContain(n);
  });
});
