/**
 * `apply --backend nft` between any two tables, in cwt-* namespaces: two
 * segments of one policy share content-addressed sets under different comments
 * ("app-to-app destinations (x)" / "(y)"), and another policy names its ASG
 * differently. nft cannot change a set's comment (or type, flags; a chain's
 * hook or priority) in place, so apply deletes and recreates those objects in
 * the same transaction as the rest. A concurrent, bounded probe loop shows
 * that there is no moment in which traffic both tables allow is refused, or
 * traffic both tables refuse gets through (a moment without rules).
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pingFlood, udpFlood } from '../helpers/floods.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { Topology, type ExecResult } from '../kernel/netns.js';
import { applyNftIn, liveTable, tableJsonOf } from './nft.js';

const kernel = kernelGate(['ip', 'nft', 'socat', 'ping', 'unshare', 'flock']);

/**
 * 8000 separate addresses (none adjacent: they stay 8000 set elements) in 100.<64 + k>.0.0/16: a big set
 * that differs between the two policies, so that the kernel has a lot to commit in the transaction that
 * switches the rules (the moment in which a set created in that same transaction would still look empty)
 */
const bigNet = (k: number): string => Array.from({ length: 8000 }, (_, i) => `100.${64 + k}.${i >> 7}.${(i & 127) * 2}`).join(', ');

/** `db` is the ASG's name; x is open, y restricted to the VPC; both allow the database, neither 443 */
const policy = (db: string, big: number): string => `version: 1
mode: tighten
defaults: { deny: reject }
networks:
  overlay: [10.255.0.2-10.255.0.4, "fd00:255::2-fd00:255::3"]
  vpc: [10.0.0.0/8, "fd00:10::/64"]
  anywhere: [0.0.0.0/0, "::/0"]
  big: [${bigNet(big)}]
security_groups:
  ${db}: [{ protocol: tcp, destination: vpc, ports: "5432" }, { protocol: icmp, destination: vpc, type: -1, code: -1 }]
  web: [{ protocol: tcp, destination: anywhere, ports: "80" }]
  big: [{ protocol: all, destination: big }]
groups:
  sandbox: { members: dynamic }
segments:
  x: { container_network: overlay, egress: open }
  y: { container_network: overlay, egress: restricted, egress_allow: [vpc] }
bindings:
  - { security_groups: [${db}, web, big], phase: [running, staging] }
`;

describe.skipIf(kernel.skip)('apply --backend nft: any table to any table in one transaction (kernel)', () => {
  let t: Topology;
  let tmp: string;
  let stateDir: string;
  const A = (seg: string): string[] => [join(tmp, 'a.yaml'), '--segment', seg];
  const B = (seg: string): string[] => [join(tmp, 'b.yaml'), '--segment', seg];
  const apply = (args: string[], env: Record<string, string> = {}): Promise<ExecResult> => applyNftIn(t, stateDir, args, env);

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-nftswitch-'));
    writeFileSync(join(tmp, 'a.yaml'), policy('db', 0));
    writeFileSync(join(tmp, 'b.yaml'), policy('database', 1));
    writeFileSync(join(tmp, 'enforce.yaml'), policy('db', 0).replace('mode: tighten', 'mode: enforce'));
    t = await Topology.create();
  }, 60_000);
  afterAll(async () => {
    await t?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await t.exec(t.cell, ['nft', 'delete', 'table', 'inet', 'cellwall']);
    stateDir = mkdtempSync(join(tmp, 'state-'));
  });

  /** which segment's table the traffic shows: x lets the web through, y refuses it; the member .5 is governed like a container */
  async function segment(): Promise<string> {
    const r = await Promise.all([
      t.tcp('10.255.0.3', '203.0.113.10', 80, { timeoutMs: 4000 }), t.tcp('fd00:255::3', '2001:db8::10', 80, { timeoutMs: 4000 }),
      t.tcp('10.255.0.5', '203.0.113.10', 80, { timeoutMs: 4000 }),
    ]);
    const o = r.map((x) => x.outcome).join(',');
    return o === 'ok,ok,ok' ? 'x' : o === 'refused,refused,refused' ? 'y' : `mixed: ${o}`;
  }

  /**
   * Probe, until `done()` (bounded: at most 5000 rounds and 90 s), what both
   * tables mean the same: the database (v4, v6) allowed, 443 refused.
   */
  async function probeLoop(done: () => boolean): Promise<{ rounds: number; bad: string[] }> {
    const bad: string[] = [];
    let rounds = 0;
    const t0 = Date.now();
    while (!done() && rounds < 5000 && Date.now() - t0 < 90_000) {
      const r = await Promise.all([
        t.tcp('10.255.0.2', '10.0.0.10', 5432, { timeoutMs: 2000 }), t.tcp('fd00:255::2', 'fd00:10::10', 5432, { timeoutMs: 2000 }),
        t.tcp('10.255.0.4', '203.0.113.11', 443, { timeoutMs: 2000 }), t.tcp('fd00:255::3', '2001:db8::11', 443, { timeoutMs: 2000 }),
      ]);
      rounds++;
      const o = r.map((x) => x.outcome).join(',');
      if (o !== 'ok,ok,refused,refused') bad.push(`round ${rounds}: ${o}`);
    }
    return { rounds, bad };
  }

  /** apply while the probe loop and the floods run: ICMP to the VPC (both tables allow it), UDP to the internet (both refuse it) */
  async function applyProbed(args: string[]) {
    let finished = false;
    const allowed = pingFlood(t.ns.get(t.roleOf('10.255.0.2'))!, '10.0.0.11', '10.255.0.2');
    const refused = await udpFlood(t.ns.get(t.roleOf('10.255.0.4'))!, '10.255.0.4', '198.51.100.10', (argv) => t.cellExec(argv));
    const loop = probeLoop(() => finished);
    const r = await apply(args).finally(() => (finished = true));
    return { r, ...(await loop), allowed: await allowed.stop(), refused: await refused.stop() };
  }

  it('policy A segment x -> policy B segment y -> A x again: redeclared shared sets, no gap in traffic, members kept', async () => {
    expect((await apply(A('x'))).code).toBe(0);
    await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', 'cw-d-sandbox-r4', '{ 10.255.0.5 }']);
    expect(await segment()).toBe('x');

    const toY = await applyProbed(B('y'));
    expect(toY.r.code, toY.r.stderr).toBe(0);
    // the path under test: a set both tables hold, under another comment
    expect(toY.r.stdout).toMatch(/^~ set cw4n-\S+: declaration differs \(comment\): deleted and recreated in the same transaction$/m);
    expect(toY.bad).toEqual([]);
    expect(toY.rounds).toBeGreaterThan(0);
    expect(toY.allowed.errors, JSON.stringify(toY.allowed)).toBe(0); // not one echo request refused
    expect(toY.allowed.received).toBeGreaterThan(0);
    expect(toY.refused.passed, JSON.stringify(toY.refused)).toBe(0); // not one datagram let through
    expect(toY.refused.sent).toBeGreaterThan(0);
    expect(await segment()).toBe('y');

    const toX = await applyProbed(A('x'));
    expect(toX.r.code, toX.r.stderr).toBe(0);
    expect(toX.r.stdout).toMatch(/declaration differs \(comment\)/);
    expect(toX.bad).toEqual([]);
    expect(toX.allowed.errors, JSON.stringify(toX.allowed)).toBe(0);
    expect(toX.refused.passed, JSON.stringify(toX.refused)).toBe(0);
    expect(await segment()).toBe('x');

    const live = await liveTable(t);
    expect(live.sets.find((s) => s.name === 'cw-d-sandbox-r4')?.elem).toEqual(['10.255.0.5']);
    expect((await apply(A('x'))).stdout).toContain('no changes');
    expect((await apply([...B('y'), '--dry-run'])).code).toBe(2);
  }, 240_000);

  it('a redeclaring transaction the kernel refuses on its last line leaves the table exactly as before', async () => {
    expect((await apply(A('x'))).code).toBe(0);
    const before = await tableJsonOf(t);
    const r = await apply(B('y'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'nft-fail-last-line' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('nothing was changed (the nft transactions are atomic)');
    expect(await tableJsonOf(t)).toBe(before); // handles included: nothing was deleted or recreated
    expect(await segment()).toBe('x');
  }, 120_000);

  it('a dynamic member set declared otherwise (an older version) is recreated with its members', async () => {
    expect((await apply(A('y'))).code).toBe(0);
    // what an older cellwall might have left: the same set under another comment, holding members
    const chains = (await liveTable(t)).chains.map((c) => `flush chain inet cellwall ${c.name}`);
    const old = [...chains, 'delete set inet cellwall cw-d-sandbox-r4',
      'add set inet cellwall cw-d-sandbox-r4 { type ipv4_addr; flags interval; comment "members (older cellwall)"; }',
      'add element inet cellwall cw-d-sandbox-r4 { 10.255.0.5, 10.255.0.6 }', ''].join('\n');
    const load = await t.exec(t.cell, ['sh', '-c', `printf '%s' '${old}' | nft -f -`]);
    expect(load.code, load.stderr).toBe(0);
    const r = await apply(A('y'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('~ set cw-d-sandbox-r4: declaration differs (comment)');
    const set = (await liveTable(t)).sets.find((s) => s.name === 'cw-d-sandbox-r4') as { comment?: string; elem?: unknown[] };
    expect(set.comment).toBe('running members of sandbox');
    expect(set.elem).toEqual(['10.255.0.5', '10.255.0.6']);
    expect(await segment()).toBe('y'); // .5 is governed again
  }, 120_000);

  it('enforce mode: apply warns that a platform FORWARD at policy drop still drops what cellwall accepts (and it does)', async () => {
    const enforce = [join(tmp, 'enforce.yaml'), '--segment', 'x'];
    try {
      await t.platform({ policy: 'DROP' });
      const r = await apply(enforce);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/warning: enforce mode with the nft backend: the forward hook's base chain\(s\) ip filter FORWARD, ip6 filter FORWARD have policy drop/);
      expect((await t.tcp('10.255.0.2', '10.0.0.10', 5432, { timeoutMs: 2000 })).outcome).toBe('timeout'); // accepted by cellwall, dropped by the platform
      await t.platform({ policy: 'ACCEPT' });
      const again = await apply(enforce);
      expect(again.stdout).toContain('no changes');
      expect(again.stderr).not.toContain('warning');
      expect((await t.tcp('10.255.0.2', '10.0.0.10', 5432, { timeoutMs: 4000 })).outcome).toBe('ok');
    } finally {
      await t.platform({ policy: 'ACCEPT' });
    }
  }, 120_000);
});
