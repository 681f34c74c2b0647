/**
 * `cellwall apply --backend ebpf` against a real kernel, in cwt-* namespaces
 * (app -> cell -> vpc/inet, test/kernel/netns.ts), generations pinned in a
 * private bpffs (never the host's /sys/fs/bpf), the program attached to the
 * cell's container-facing `to-app` only. Each state is shown by real traffic
 * (v1 lets the VPC database through and drops the web, v2 the other way
 * round; the program drops, so a denied probe times out) and by what is
 * pinned and attached.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { until } from '../helpers/until.js';
import { Topology } from '../kernel/netns.js';
import { BpfEnv, EBPF_TOOLS } from './env.js';
import { applyIn, attachedId, BIN, DEVICE, generations, type EbpfCell } from './apply-helpers.js';

const kernel = kernelGate([...EBPF_TOOLS, 'socat', 'flock', 'python3']);

const policy = (asgs: string): string => `version: 1
mode: tighten
defaults: { deny: reject }
networks:
  overlay: [10.255.0.0/16, "fd00:255::/64"]
  vpc: [10.0.0.0/8, "fd00:10::/64"]
  anywhere: [0.0.0.0/0, "::/0"]
security_groups:
  db: [{ protocol: tcp, destination: vpc, ports: "5432" }]
  web: [{ protocol: tcp, destination: anywhere, ports: "80" }]
segments:
  cell: { container_network: overlay, egress: open }
bindings:
  - { security_groups: [${asgs}], phase: [running, staging] }
`;

describe.skipIf(kernel.skip)('apply --backend ebpf on a cell (kernel)', () => {
  let t: Topology;
  let env: BpfEnv;
  let c: EbpfCell;
  let n = 0;
  const file = (v: 'v1' | 'v2'): string => join(env.tmp, `${v}.yaml`);
  const pol = (v: 'v1' | 'v2'): string[] => [file(v), '--segment', 'cell'];

  beforeAll(async () => {
    env = BpfEnv.create();
    writeFileSync(file('v1'), policy('db'));
    writeFileSync(file('v2'), policy('web'));
    t = await Topology.create();
  }, 60_000);
  afterAll(async () => {
    await t?.destroy();
    env?.cleanup();
  });
  beforeEach(async () => {
    // a fresh root and state dir per test; no filter of ours left on the device
    await t.exec(t.cell, ['tc', 'qdisc', 'del', 'dev', DEVICE, 'clsact']);
    c = { t, root: join(env.bpffs, `root-${n++}`), stateDir: mkdtempSync(join(env.tmp, 'state-')) };
  });

  async function traffic(): Promise<string> {
    const r = await Promise.all([
      t.tcp('10.255.0.2', '10.0.0.10', 5432, { timeoutMs: 2000 }), t.tcp('10.255.0.3', '203.0.113.10', 80, { timeoutMs: 2000 }),
      t.tcp('fd00:255::2', 'fd00:10::10', 5432, { timeoutMs: 2000 }), t.tcp('fd00:255::3', '2001:db8::10', 80, { timeoutMs: 2000 }),
    ]);
    const o = r.map((x) => x.outcome).join(',');
    if (o === 'ok,timeout,ok,timeout') return 'v1';
    if (o === 'timeout,ok,timeout,ok') return 'v2';
    if (o === 'ok,ok,ok,ok') return 'none';
    return `mixed: ${o}`;
  }

  it('dry-run says 2 and pins nothing; apply attaches v1; again: no changes, same program; dry-run then says 0', async () => {
    expect(await traffic()).toBe('none');
    const dry = await applyIn(c, [...pol('v1'), '--dry-run']);
    expect(dry.code, dry.stderr).toBe(2);
    expect(dry.stdout).toMatch(/load generation g-\S+: \d+ map entries/);
    expect(dry.stdout).toContain(`attach the new generation on ${DEVICE} ingress`);
    expect(generations(c)).toEqual([]);
    expect(await attachedId(c)).toBeNull();

    const r = await applyIn(c, [...pol('v1'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { changed: boolean; backend: string; hashes: { maps: string; progId: number } };
    expect(j.changed).toBe(true);
    expect(j.backend).toBe('ebpf');
    expect(await traffic()).toBe('v1');
    const gens = generations(c);
    expect(gens).toHaveLength(1);
    expect(await attachedId(c)).toBe(j.hashes.progId);
    const m = JSON.parse(readFileSync(join(c.stateDir, 'manifest.json'), 'utf8')) as { backend: string; generation: string; progId: number; fill: { method: string } };
    expect(m).toMatchObject({ backend: 'ebpf', generation: gens[0], progId: j.hashes.progId });
    expect(m.fill.method).toBe('syscall');
    // from POLICY the conntrack program is tried first (this kernel has the kfuncs)
    expect((m as { variant?: string }).variant).toBe('conntrack');
    expect(existsSync(join(c.stateDir, 'journal.json'))).toBe(false);

    const again = await applyIn(c, pol('v1'));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('no changes');
    expect(generations(c)).toEqual(gens);
    expect(await attachedId(c)).toBe(j.hashes.progId);
    const dry2 = await applyIn(c, [...pol('v1'), '--dry-run']);
    expect(dry2.code, dry2.stdout + dry2.stderr).toBe(0);
  }, 120_000);

  it('v1 -> v2 swaps to a new generation and unpins the old one; a bpftool fill gives the same maps', async () => {
    expect((await applyIn(c, pol('v1'))).code).toBe(0);
    const [g1] = generations(c);
    const id1 = await attachedId(c);
    const dry = await applyIn(c, [...pol('v2'), '--dry-run']);
    expect(dry.code).toBe(2);
    expect(dry.stdout).toMatch(/against the live generation: .*cw_verdict \+\d+ -\d+/);
    expect(dry.stdout).toContain(`unpin generation ${g1}`);
    const r = await applyIn(c, [...pol('v2'), '--fill', 'bpftool', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(await traffic()).toBe('v2');
    const gens = generations(c);
    expect(gens).toHaveLength(1);
    expect(gens[0]).not.toBe(g1);
    expect(await attachedId(c)).not.toBe(id1);
    expect(JSON.parse(readFileSync(join(c.stateDir, 'manifest.json'), 'utf8')).fill.method).toBe('bpftool');
    // the bpftool-filled maps hash like the compiled ones: the syscall path would not be "in sync" otherwise
    expect((await applyIn(c, pol('v2'))).stdout).toContain('no changes');
  }, 120_000);

  it('--payload DIR of `compile --backend ebpf` installs the same maps as POLICY (with the compiled object)', async () => {
    const out = mkdtempSync(join(env.tmp, 'out-'));
    const comp = await t.exec(t.cell, [process.execPath, BIN, 'compile', ...pol('v2'), '--backend', 'ebpf', '--out', out]);
    expect(comp.code, comp.stderr).toBe(0);
    expect((await applyIn(c, ['--payload', out])).code).toBe(0);
    expect(await traffic()).toBe('v2');
    expect(JSON.parse(readFileSync(join(c.stateDir, 'manifest.json'), 'utf8')).variant).toBe('compiled');
    expect((await applyIn(c, ['--payload', out])).stdout).toContain('no changes');
    // from POLICY the program differs (conntrack first), the maps do not
    const dry = await applyIn(c, [...pol('v2'), '--dry-run']);
    expect(dry.code).toBe(2);
    expect(dry.stdout).toContain('against the live generation: same entries');
    const missing = await applyIn(c, ['--payload', env.tmp]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read payload file|cellwall\.bpf\.o: cannot read/);
  }, 120_000);

  it('drift: our filter removed -> dry-run names the re-attach, apply repairs it without a new generation', async () => {
    expect((await applyIn(c, pol('v1'))).code).toBe(0);
    const gens = generations(c);
    const id = await attachedId(c);
    await t.exec(t.cell, ['tc', 'filter', 'del', 'dev', DEVICE, 'ingress', 'pref', '1', 'handle', '1', 'bpf']);
    expect(await traffic()).toBe('none');
    const dry = await applyIn(c, [...pol('v1'), '--dry-run']);
    expect(dry.code).toBe(2);
    expect(dry.stdout).toContain(`attach ${gens[0]} on ${DEVICE} ingress`);
    expect(dry.stdout).not.toContain('load generation');
    const r = await applyIn(c, pol('v1'));
    expect(r.code, r.stderr).toBe(0);
    expect(await traffic()).toBe('v1');
    expect(generations(c)).toEqual(gens);
    expect(await attachedId(c)).toBe(id);
  }, 120_000);

  it('a verify failure rolls back to the previous generation and names the step', async () => {
    expect((await applyIn(c, pol('v1'))).code).toBe(0);
    const gens = generations(c);
    const id = await attachedId(c);
    const r = await applyIn(c, pol('v2'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'ebpf-corrupt-map' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`apply failed and was rolled back to generation ${gens[0]}: step verify`);
    expect(r.stderr).toContain('read back with hash');
    expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/);
    expect(generations(c)).toEqual(gens);
    expect(await attachedId(c)).toBe(id);
    expect(await traffic()).toBe('v1');
    expect(existsSync(join(c.stateDir, 'journal.json'))).toBe(false);
  }, 120_000);

  it('when the conntrack program is refused, the stateless one is loaded and the warning says why', async () => {
    const r = await applyIn(c, pol('v1'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'ebpf-refuse-first' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('the conntrack program was refused (refused by the test hook); loaded the stateless program');
    expect(JSON.parse(readFileSync(join(c.stateDir, 'manifest.json'), 'utf8')).variant).toBe('stateless');
    expect(await traffic()).toBe('v1');
  }, 120_000);

  it('a first apply that fails leaves no filter and nothing pinned', async () => {
    const r = await applyIn(c, pol('v1'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'ebpf-corrupt-map' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('rolled back to no cellwall program: step verify');
    expect(generations(c)).toEqual([]);
    expect(await attachedId(c)).toBeNull();
    expect(await traffic()).toBe('none');
  }, 120_000);

  it('an apply killed after loading the new generation is undone by the next apply (journal)', async () => {
    expect((await applyIn(c, pol('v1'))).code).toBe(0);
    const gens = generations(c);
    const killed = await applyIn(c, pol('v2'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'after-load' });
    expect(killed.code).not.toBe(0);
    expect(existsSync(join(c.stateDir, 'journal.json'))).toBe(true);
    expect(generations(c)).toHaveLength(2);
    const dry = await applyIn(c, [...pol('v1'), '--dry-run']);
    expect(dry.stderr).toContain('left a journal');
    const r = await applyIn(c, pol('v1'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('recovered: restored the state from before the interrupted apply');
    expect(r.stdout).toContain('no changes');
    expect(generations(c)).toEqual(gens);
    expect(await traffic()).toBe('v1');
  }, 120_000);

  it('errors: a root outside a bpffs, bad --devices, --devices without --backend ebpf', async () => {
    const notBpf = await applyIn({ ...c, root: join(env.tmp, 'plain') }, pol('v1'));
    expect(notBpf.code).toBe(1);
    expect(notBpf.stderr).toContain('not on a bpf filesystem');
    const bad = await applyIn(c, [...pol('v1'), '--devices', 'to app']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--devices: expected comma-separated interface names or globs');
    const none = await applyIn(c, [...pol('v1'), '--devices', 'nosuch*']);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stderr).toContain('no network device here matches --devices nosuch*');
    const ipt = await t.exec(t.cell, [process.execPath, BIN, 'apply', ...pol('v1'), '--devices', 'x', '--dry-run']);
    expect(ipt.code).toBe(1);
    expect(ipt.stderr).toContain('--bpffs and --devices go with --backend ebpf');
  }, 120_000);

  it('--watch re-attaches a removed filter and stops on SIGTERM', async () => {
    const child = spawn('ip', ['netns', 'exec', t.cell, process.execPath, BIN, 'apply', '--backend', 'ebpf', '--bpffs', c.root, '--devices', DEVICE,
      '--state-dir', c.stateDir, ...pol('v1'), '--watch', '1', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      expect(await until(() => out.includes('"event":"applied"'), 30_000), out).toBe(true);
      const id = await attachedId(c);
      expect(id).not.toBeNull();
      await t.exec(t.cell, ['tc', 'filter', 'del', 'dev', DEVICE, 'ingress', 'pref', '1', 'handle', '1', 'bpf']);
      expect(await until(() => out.includes('"event":"repaired"'), 20_000), out).toBe(true);
      expect(await attachedId(c)).toBe(id);
      expect(await traffic()).toBe('v1');
    } finally {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    expect(out).toContain('"event":"stop"');
  }, 120_000);
});

