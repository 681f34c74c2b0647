/**
 * `cellwall members add|del|list --backend ebpf` in the kernel: after
 * `apply --backend ebpf`, a member added is enforced per its group right away
 * (the first of its signature: a new generation with the member's source
 * class, swapped in atomically; the next ones: one LPM insert each into the
 * live maps), and del reverts it. examples/govuk-isolation.yaml: staging
 * members of space-govuk may reach the internet, running apps may not (the
 * program drops: denied probes time out).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { EXAMPLES, expectProbes } from '../kernel/cli.js';
import { Topology } from '../kernel/netns.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';
import { applyIn, attachedId, cli, generations, type EbpfCell } from './apply-helpers.js';

const kernel = kernelGate([...EBPF_TOOLS, 'socat', 'flock', 'python3']);
const APP4 = '10.255.0.3';
const APP6 = 'fd00:255::3';
const OTHER4 = '10.255.0.4';
const SECOND4 = '10.255.0.5';
const SECOND6 = 'fd00:255::5';
const NET4 = '203.0.113.10';
const NET6 = '2001:db8::10';
const POLICY = [join(EXAMPLES, 'govuk-isolation.yaml'), '--segment', 'egress-restricted-1'];

describe.skipIf(kernel.skip)('cellwall members --backend ebpf (kernel)', () => {
  let t: Topology;
  let env: BpfEnv;
  let c: EbpfCell;

  beforeAll(async () => {
    env = BpfEnv.create();
    t = await Topology.create();
    c = { t, root: join(env.bpffs, 'cellwall'), stateDir: mkdtempSync(join(env.tmp, 'state-')) };
    const r = await applyIn(c, POLICY);
    if (r.code !== 0) throw new Error(`apply --backend ebpf: ${r.stderr}`);
  }, 60_000);
  afterAll(async () => {
    await t?.destroy();
    env?.cleanup();
  });

  const members = (args: string[]) => cli(c, ['members', ...args, '--backend', 'ebpf', '--state-dir', c.stateDir]);

  it('add is enforced at once (v4 and v6), list shows it, del reverts; apply afterwards keeps the members', async () => {
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'timeout'], ['tcp', APP6, NET6, 443, 'timeout'], ['tcp', OTHER4, NET4, 443, 'timeout']]);
    const before = generations(c);

    const add = await members(['add', 'space-govuk', '--phase', 'staging', APP4, APP6]);
    expect(add.code, add.stderr).toBe(0);
    // the first member of its signature: a new generation (its rows are evaluated)
    expect(add.stdout).toMatch(/added 2 staging member\(s\) of space-govuk \(new generation g-/);
    expect(generations(c)).toHaveLength(1);
    expect(generations(c)).not.toEqual(before);
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'ok'], ['tcp', APP6, NET6, 443, 'ok'], ['tcp', OTHER4, NET4, 443, 'timeout']]);

    const list = await members(['list', 'space-govuk', '--phase', 'staging', '--json']);
    expect(list.code).toBe(0);
    expect((JSON.parse(list.stdout) as { members: string[] }).members.sort()).toEqual([APP4, APP6].sort());
    expect((await members(['list', 'space-govuk', '--phase', 'running'])).stdout).toBe('');

    // the policy re-applied: the recorded members are part of what it installs, so nothing changes
    const id = await attachedId(c);
    const again = await applyIn(c, POLICY);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('no changes');
    expect(await attachedId(c)).toBe(id);

    // adding again changes nothing (no new generation)
    const gens = generations(c);
    expect((await members(['add', 'space-govuk', '--phase', 'staging', APP4])).stdout).toContain('added 0 staging member(s)');
    expect(generations(c)).toEqual(gens);

    // a second member with the same signature: one LPM insert per address into the live generation, no new generation
    const gen = generations(c);
    const more = await members(['add', 'space-govuk', '--phase', 'staging', SECOND4, SECOND6, '--json']);
    expect(more.code, more.stderr).toBe(0);
    expect(JSON.parse(more.stdout).ebpf).toMatchObject({ path: 'lpm', updates: 2, generation: gen[0] });
    expect(generations(c)).toEqual(gen);
    await expectProbes(t, [['tcp', SECOND4, NET4, 443, 'ok'], ['tcp', SECOND6, NET6, 443, 'ok'], ['tcp', OTHER4, NET4, 443, 'timeout']]);
    // ... and what it left is what a rebuild installs: apply finds it in sync
    expect((await applyIn(c, POLICY)).stdout).toContain('no changes');
    // del of one of two members of a class: an LPM delete
    const less = await members(['del', 'space-govuk', '--phase', 'staging', SECOND4, SECOND6, '--json']);
    expect(JSON.parse(less.stdout).ebpf).toMatchObject({ path: 'lpm', updates: 2 });
    await expectProbes(t, [['tcp', SECOND4, NET4, 443, 'timeout'], ['tcp', APP4, NET4, 443, 'ok']]);
    expect((await applyIn(c, POLICY)).stdout).toContain('no changes');

    // the last members of their class: a new generation
    const del = await members(['del', 'space-govuk', '--phase', 'staging', APP4, APP6, '--json']);
    expect(del.code, del.stderr).toBe(0);
    expect(JSON.parse(del.stdout).ebpf.path).toBe('generation');
    expect((await members(['list', 'space-govuk', '--phase', 'staging'])).stdout).toBe('');
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'timeout'], ['tcp', APP6, NET6, 443, 'timeout']]);
  }, 120_000);

  it('a running member stays denied (its phase decides); a group that is not dynamic, a bad address and a phase clash are errors', async () => {
    expect((await members(['add', 'space-govuk', '--phase', 'running', APP4])).code).toBe(0);
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'timeout']]);
    const clash = await members(['add', 'space-govuk', '--phase', 'staging', APP4]);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain(`${APP4} is a running member (of space-govuk)`);
    expect((await members(['del', 'space-govuk', '--phase', 'running', APP4])).code).toBe(0);

    const gens = generations(c);
    const nosuch = await members(['add', 'nosuch', APP4]);
    expect(nosuch.code).toBe(1);
    expect(nosuch.stderr).toContain('group "nosuch" has no running members in the applied policy');
    expect(nosuch.stderr).toContain('dynamic groups: space-govuk');
    const bad = await members(['add', 'space-govuk', '10.255.0.300']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('"10.255.0.300"');
    expect(bad.stderr).not.toMatch(/\n\s+at .*\.js:\d+/);
    expect(generations(c)).toEqual(gens);
    const none = await cli(c, ['members', 'list', 'space-govuk', '--backend', 'ebpf', '--state-dir', join(env.tmp, 'empty-state')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('nothing was applied with --backend ebpf on this cell');
  }, 120_000);

  it('members at a static range boundary: in place when a peer shares the class, rebuilt on del (the static /32 comes back)', async () => {
    // ops is 10.255.0.5-10.255.0.6: its trie prefixes are the /32s of both addresses
    const file = join(env.tmp, 'edge.yaml');
    writeFileSync(file, `version: 1
mode: tighten
defaults: { deny: reject }
networks:
  overlay: [10.255.0.0/16, "fd00:255::/64"]
  anywhere: [0.0.0.0/0, "::/0"]
security_groups:
  web: [{ protocol: tcp, destination: anywhere, ports: "80" }]
  tls: [{ protocol: tcp, destination: anywhere, ports: "443" }]
groups:
  ops: { networks: [10.255.0.5-10.255.0.6] }
  space-a: { members: dynamic }
segments:
  cell: { container_network: overlay, egress: open }
bindings:
  - { security_groups: [web], groups: [ops], phase: running }
  - { security_groups: [tls], groups: [space-a], phase: running }
`);
    const e: EbpfCell = { t, root: join(env.bpffs, 'edge'), stateDir: mkdtempSync(join(env.tmp, 'state-edge-')) };
    const pol = [file, '--segment', 'cell'];
    expect((await applyIn(e, pol)).code).toBe(0);
    const m = (args: string[]) => cli(e, ['members', ...args, '--backend', 'ebpf', '--state-dir', e.stateDir, '--json']);
    await expectProbes(t, [['tcp', '10.255.0.6', NET4, 80, 'ok'], ['tcp', '10.255.0.6', NET4, 443, 'timeout']]);
    expect(JSON.parse((await m(['add', 'space-a', '10.255.0.5'])).stdout).ebpf.path).toBe('generation');
    expect(JSON.parse((await m(['add', 'space-a', '10.255.0.6'])).stdout).ebpf.path).toBe('lpm');
    await expectProbes(t, [['tcp', '10.255.0.6', NET4, 80, 'ok'], ['tcp', '10.255.0.6', NET4, 443, 'ok']]);
    const del = JSON.parse((await m(['del', 'space-a', '10.255.0.6'])).stdout) as { ebpf: { path: string } };
    expect(del.ebpf.path).toBe('generation');
    await expectProbes(t, [['tcp', '10.255.0.6', NET4, 80, 'ok'], ['tcp', '10.255.0.6', NET4, 443, 'timeout'], ['tcp', '10.255.0.5', NET4, 443, 'ok']]);
    expect((await applyIn(e, pol)).stdout).toContain('no changes');
    const d = await cli(e, ['diff', ...pol, '--live', '--backend', 'ebpf', '--state-dir', e.stateDir]);
    expect(d.code, d.stdout).toBe(0);
  }, 120_000);
});
