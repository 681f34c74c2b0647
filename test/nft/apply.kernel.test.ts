/**
 * `cellwall apply --backend nft` against a real kernel, in cwt-* namespaces
 * (app -> cell -> vpc/inet, test/kernel/netns.ts). Every CLI run is
 * `ip netns exec <cell> node bin/cellwall.js apply ... --backend nft`, so nft
 * only ever sees the cell's table. Each state is shown by real traffic (v1
 * lets the VPC database through and refuses the web, v2 the other way round)
 * and by the live table (`nft -j list table inet cellwall`). Also
 * `members --backend nft`: a source that is only governed once it is a
 * member of the dynamic group.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { Topology, type ExecResult } from '../kernel/netns.js';
import { ROOT } from '../kernel/cli.js';
import { applyNftIn, compileNft, liveTable, tableJsonOf } from './nft.js';
import { until } from '../helpers/until.js';

const kernel = kernelGate(['ip', 'nft', 'socat', 'ping', 'unshare', 'flock']);
const BIN = join(ROOT, 'bin', 'cellwall.js');

const policy = (asgs: string): string => `version: 1
mode: tighten
defaults: { deny: reject }
networks:
  overlay: [10.255.0.2-10.255.0.4, "fd00:255::2-fd00:255::3"]     # .5 and ::5 only through membership
  vpc: [10.0.0.0/8, "fd00:10::/64"]
  anywhere: [0.0.0.0/0, "::/0"]
security_groups:
  db: [{ protocol: tcp, destination: vpc, ports: "5432" }]
  web: [{ protocol: tcp, destination: anywhere, ports: "80" }]
  dns: [{ protocol: udp, destination: anywhere, ports: "53" }]
groups:
  sandbox: { members: dynamic }
segments:
  cell: { container_network: overlay, egress: open }
bindings:
  - { security_groups: [${asgs}], phase: [running, staging] }
  - { security_groups: [dns], groups: [sandbox], phase: running }
`;

type Name = 'v1' | 'v2' | 'none';

describe.skipIf(kernel.skip)('apply --backend nft on a cell (kernel)', () => {
  let t: Topology;
  let tmp: string;
  let stateDir: string;
  const file = (n: 'v1' | 'v2'): string => join(tmp, `${n}.yaml`);

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-nftapply-'));
    writeFileSync(file('v1'), policy('db, dns'));
    writeFileSync(file('v2'), policy('web, dns'));
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

  const apply = (args: string[], env: Record<string, string> = {}): Promise<ExecResult> => applyNftIn(t, stateDir, args, env);
  const pol = (n: 'v1' | 'v2'): string[] => [file(n), '--segment', 'cell'];

  async function traffic(): Promise<Name | string> {
    const r = await Promise.all([
      t.tcp('10.255.0.2', '10.0.0.10', 5432, { timeoutMs: 4000 }), t.tcp('10.255.0.3', '203.0.113.10', 80, { timeoutMs: 4000 }),
      t.tcp('fd00:255::2', 'fd00:10::10', 5432, { timeoutMs: 4000 }), t.tcp('fd00:255::3', '2001:db8::10', 80, { timeoutMs: 4000 }),
      t.udp('10.255.0.4', '198.51.100.10', 53, { timeoutMs: 4000 }),
    ]);
    const o = r.map((x) => x.outcome).join(',');
    if (o === 'ok,refused,ok,refused,ok') return 'v1';
    if (o === 'refused,ok,refused,ok,ok') return 'v2';
    if (o === 'ok,ok,ok,ok,ok') return 'none';
    return `mixed: ${o}`;
  }

  const tableJson = (): Promise<string | null> => tableJsonOf(t);

  it('dry-run says 2 and writes nothing; apply loads v1; a second apply writes nothing; dry-run then says 0', async () => {
    expect(await traffic()).toBe('none');
    const dry = await apply([...pol('v1'), '--dry-run']);
    expect(dry.code, dry.stderr).toBe(2);
    expect(dry.stdout).toContain('+ table inet cellwall');
    expect(dry.stdout).toMatch(/\+ chain forward \(2 rules\)/);
    expect(await tableJson()).toBeNull();

    const cold = await apply([...pol('v1'), '--json']);
    expect(cold.code, cold.stderr).toBe(0);
    const j = JSON.parse(cold.stdout) as { changed: boolean; backend: string; hashes: { table: string } };
    expect(j.changed).toBe(true);
    expect(j.backend).toBe('nft');
    expect(await traffic()).toBe('v1');
    const manifest = JSON.parse(readFileSync(join(stateDir, 'manifest.json'), 'utf8')) as { backend: string; segment: string; hashes: { table: string } };
    expect(manifest.backend).toBe('nft');
    expect(manifest.segment).toBe('cell');
    expect(manifest.hashes.table).toBe(j.hashes.table);
    expect(existsSync(join(stateDir, 'journal.json'))).toBe(false);

    const before = await tableJson();
    const again = await apply(pol('v1'));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('no changes');
    expect(await tableJson()).toBe(before); // same handles: nothing was rewritten
    const dry2 = await apply([...pol('v1'), '--dry-run']);
    expect(dry2.code, dry2.stdout + dry2.stderr).toBe(0);
    expect(dry2.stdout).toContain('no changes');
    // without the manifest's record, the comparison of the live table with the script's state says the same
    rmSync(join(stateDir, 'manifest.json'));
    const dry3 = await apply([...pol('v1'), '--dry-run']);
    expect(dry3.code, dry3.stdout + dry3.stderr).toBe(0);
    const again3 = await apply(pol('v1'));
    expect(again3.stdout).toContain('no changes');
    expect(await tableJson()).toBe(before);
    expect(JSON.parse(readFileSync(join(stateDir, 'manifest.json'), 'utf8')).hashes.table).toBe(j.hashes.table);
  }, 120_000);

  it('v1 -> v2 in one transaction: the old chains and sets are gone, dynamic members stay', async () => {
    expect((await apply(pol('v1'))).code).toBe(0);
    await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', 'cw-d-sandbox-r4', '{ 10.255.0.9 }']);
    const v1 = await liveTable(t);
    const dry = await apply([...pol('v2'), '--dry-run']);
    expect(dry.code, dry.stderr).toBe(2);
    expect(dry.stdout).toMatch(/^- chain /m);
    expect(dry.stdout).toMatch(/^\+ chain /m);
    const r = await apply(pol('v2'));
    expect(r.code, r.stderr).toBe(0);
    expect(await traffic()).toBe('v2');
    // exactly the v2 script's chains and sets (plus the dynamic sets), loaded as `nft -f` alone would into an empty table
    const c = await compileNft(file('v2'), 'cell');
    try {
      const names = (l: Awaited<ReturnType<typeof liveTable>>): string[] => [...l.chains.map((x) => `chain ${x.name}`), ...l.sets.map((x) => `set ${x.name}`)].sort();
      const live = await liveTable(t);
      const declared = [...c.nft.matchAll(/^ {2}(chain|set) (\S+) \{$/gm)].map((m) => `${m[1]} ${m[2]}`);
      expect(names(live)).toEqual([...new Set(declared)].sort());
      expect(names(live)).not.toEqual(names(v1));
      const dyn = live.sets.find((s) => s.name === 'cw-d-sandbox-r4');
      expect(dyn?.elem).toEqual(['10.255.0.9']);
    } finally {
      c.cleanup();
    }
    const again = await apply(pol('v2'));
    expect(again.stdout).toContain('no changes');
  }, 120_000);

  it('drift (a rule deleted, a set element added) is seen by dry-run and repaired by apply', async () => {
    expect((await apply(pol('v1'))).code).toBe(0);
    const live = await liveTable(t);
    const set = live.sets.find((s) => s.name.startsWith('cw4p-'))!;
    await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', set.name, '{ 192.0.2.0/24 . tcp . 80 }']);
    await t.cellExec(['nft', 'flush', 'chain', 'inet', 'cellwall', 'forward']);
    expect(await traffic()).toBe('none');
    const dry = await apply([...pol('v1'), '--dry-run']);
    expect(dry.code).toBe(2);
    expect(dry.stdout).toContain(`~ set ${set.name}: +0 -1 elements`);
    expect(dry.stdout).toContain('~ chain forward: 0 -> 2 rules');
    const r = await apply(pol('v1'));
    expect(r.code, r.stderr).toBe(0);
    expect(await traffic()).toBe('v1');
    expect((await liveTable(t)).sets.find((s) => s.name === set.name)!.elem).toEqual(set.elem);
  }, 120_000);

  it('a transaction the kernel refuses on its last line leaves the table exactly as before', async () => {
    expect((await apply(pol('v1'))).code).toBe(0);
    const before = await tableJson();
    const r = await apply(pol('v2'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'nft-fail-last-line' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('nothing was changed (the nft transactions are atomic)');
    expect(r.stderr).toContain('cw-test-no-such-set');
    expect(r.stderr).toContain('of the transaction (added by apply around ruleset.nft)');
    expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/); // no stack trace
    expect(await tableJson()).toBe(before);
    expect(await traffic()).toBe('v1');
    expect(existsSync(join(stateDir, 'journal.json'))).toBe(false);
  }, 120_000);

  it('a script that does not load names its line and changes nothing', async () => {
    expect((await apply(pol('v1'))).code).toBe(0);
    const before = await tableJson();
    const c = await compileNft(file('v2'), 'cell');
    try {
      const bad = join(tmp, 'bad');
      mkdirSync(bad, { recursive: true });
      const lines = c.nft.split('\n');
      const at = lines.findIndex((l) => l.includes('counter return'));
      lines[at] = lines[at]!.replace('counter return', 'counter bogus-verdict');
      writeFileSync(join(bad, 'ruleset.nft'), lines.join('\n'));
      const r = await apply(['--payload', bad]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`ruleset.nft line ${at + 1}`);
      expect(r.stderr).toContain('bogus-verdict');
      expect(await tableJson()).toBe(before);
      expect(await traffic()).toBe('v1');
    } finally {
      c.cleanup();
    }
  }, 120_000);

  it('an apply killed after the load is rolled back from its journal by the next apply', async () => {
    expect((await apply(pol('v1'))).code).toBe(0);
    const before = await tableJson();
    const killed = await apply(pol('v2'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: 'after-load' });
    expect(killed.code).not.toBe(0);
    expect(existsSync(join(stateDir, 'journal.json'))).toBe(true);
    expect(await traffic()).toBe('v2');
    const dry = await apply([...pol('v1'), '--dry-run']);
    expect(dry.stderr).toContain('left a journal');
    const r = await apply(pol('v1'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('recovered');
    expect(r.stdout).toContain('no changes');
    expect(existsSync(join(stateDir, 'journal.json'))).toBe(false);
    expect(await traffic()).toBe('v1');
    // same rules and sets as before the killed apply (the snapshot reloads them, so handles may differ)
    const strip = (s: string | null): string => (s ?? '').replace(/"handle": \d+(, )?/g, '');
    expect(strip(await tableJson())).toBe(strip(before));
  }, 120_000);

  function members(args: string[]): Promise<ExecResult> {
    return t.exec(t.cell, [process.execPath, BIN, 'members', ...args, '--backend', 'nft'], 60_000);
  }

  it('members --backend nft: add governs the source (both families, one transaction), list shows it, del releases it', async () => {
    const none = await members(['list', 'sandbox']);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain('apply a policy');
    expect((await apply(pol('v1'))).code).toBe(0);
    const web = async (): Promise<string> => (await Promise.all([
      t.tcp('10.255.0.5', '203.0.113.10', 80, { timeoutMs: 4000 }), t.tcp('fd00:255::5', '2001:db8::10', 80, { timeoutMs: 4000 }),
    ])).map((r) => r.outcome).join(',');
    expect(await web()).toBe('ok,ok'); // not governed yet
    const add = await members(['add', 'sandbox', '10.255.0.5', 'fd00:255::5']);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toContain('added 2 running member(s) of sandbox');
    expect(await web()).toBe('refused,refused');
    expect((await t.tcp('10.255.0.5', '10.0.0.10', 5432, { timeoutMs: 4000 })).outcome).toBe('ok');
    const list = await members(['list', 'sandbox', '--json']);
    expect((JSON.parse(list.stdout) as { members: string[] }).members).toEqual(['10.255.0.5', 'fd00:255::5']);
    // a bad address: nothing changes
    const bad = await members(['add', 'sandbox', '10.255.0.6', '10.255.0.300']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('10.255.0.300');
    expect((await members(['list', 'sandbox'])).stdout).toBe('10.255.0.5\nfd00:255::5\n');
    // a re-apply keeps the members
    expect((await apply(pol('v1'))).stdout).toContain('no changes');
    const del = await members(['del', 'sandbox', '10.255.0.5', 'fd00:255::5', '10.255.0.6']);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toContain('removed 2 running member(s)');
    expect((await members(['list', 'sandbox'])).stdout).toBe('');
    expect(await web()).toBe('ok,ok');
  }, 120_000);

  it('--watch --backend nft repairs a deleted table and an emptied chain within the interval; SIGTERM stops it', async () => {
    const child = spawn('ip', ['netns', 'exec', t.cell, process.execPath, BIN, 'apply', '--backend', 'nft', '--state-dir', stateDir, ...pol('v1'), '--watch', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d) => (log += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      expect(await until(() => log.includes('applied (nft)'), 15_000), log).toBe(true);
      expect(await traffic()).toBe('v1');
      const strip = (x: string | null): string => (x ?? '').replace(/"handle": \d+(, )?/g, '');
      const applied = strip(await tableJson());
      await t.cellExec(['nft', 'delete', 'table', 'inet', 'cellwall']);
      expect(await until(async () => strip(await tableJson()) === applied, 15_000), log).toBe(true);
      expect(await traffic()).toBe('v1');
      const chain = (await liveTable(t)).chains.find((c) => c.name.startsWith('CW-P-'))!.name;
      await t.cellExec(['nft', 'flush', 'chain', 'inet', 'cellwall', chain]);
      expect(await until(async () => strip(await tableJson()) === applied, 15_000), log).toBe(true);
      // the watcher logs the repair after its verify, a moment after the table is whole again
      expect(await until(() => log.includes(`~ chain ${chain}`), 15_000), log).toBe(true);
      expect(log).toContain('drift repaired');
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(log).toContain('watcher stopped');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});
