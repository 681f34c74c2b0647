/**
 * `cellwall apply` against a real kernel, in cwt-* namespaces (app -> cell ->
 * vpc/inet, test/kernel/netns.ts). Every CLI run is `ip netns exec <cell>
 * node bin/cellwall.js apply ...`, so it only ever sees the cell's netfilter
 * state. After every fault the cell is shown to be exactly in the old or the
 * new state by the state hash (parsed from iptables-save / ipset save and
 * compared with the payload's), by real traffic, and by the list of cw- sets.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernelGate } from '../helpers/caps.js';
import { Topology, run, type ExecResult } from '../kernel/netns.js';
import { ROOT } from '../kernel/cli.js';
import { cwPartOf, parseSave } from '../../src/state/iptables.js';
import { cwSets, parseIpset } from '../../src/state/ipset.js';
import { stateHashes, type StateHashes } from '../../src/state/index.js';
import { desiredFromPayload, readPayloadDir } from '../../src/apply/payload.js';
import { compileToPayload } from '../../src/apply/compile-input.js';
import { loadPolicy } from '../../src/policy/index.js';
import { EXAMPLES } from '../kernel/cli.js';
import { until } from '../helpers/until.js';

const kernel = kernelGate([...['ip', 'iptables-restore', 'ip6tables-restore', 'iptables-save', 'ipset', 'flock', 'mount']]);
const BIN = join(ROOT, 'bin', 'cellwall.js');
const FIX = (n: string): string => fileURLToPath(new URL(`./fixtures/${n}`, import.meta.url));
type Name = 'v1' | 'v2' | 'none';

describe.skipIf(kernel.skip)('apply on a cell (kernel)', () => {
  let t: Topology;
  let tmp: string;
  let stateDir: string;
  const expected = new Map<Name, { hashes: StateHashes; sets: string[] }>();

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-apply-'));
    t = await Topology.create();
    for (const n of ['v1', 'v2'] as const) {
      const want = desiredFromPayload(await readPayloadDir(FIX(n)));
      expected.set(n, { hashes: stateHashes(want), sets: [...want.sets.keys()].sort() });
    }
    const empty = { v4: { chains: new Map(), jumps: [] }, v6: { chains: new Map(), jumps: [] }, sets: new Map() };
    expected.set('none', { hashes: stateHashes(empty), sets: [] });
  });
  afterAll(async () => {
    await t?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await t.reset();
    stateDir = mkdtempSync(join(tmp, 'state-'));
  });

  function apply(args: string[], env: Record<string, string> = {}, dir = stateDir): Promise<ExecResult> {
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    return t.exec(t.cell, ['env', ...envArgs, process.execPath, BIN, 'apply', '--state-dir', dir, ...args], 60_000);
  }
  const payload = (n: Name): string[] => ['--payload', FIX(n)];

  async function liveHashes(): Promise<{ hashes: StateHashes; sets: string[] }> {
    const [s4, s6, ips] = await Promise.all([
      t.cellExec(['iptables-save', '-t', 'filter']), t.cellExec(['ip6tables-save', '-t', 'filter']), t.cellExec(['ipset', 'save']),
    ]);
    const sets = cwSets(parseIpset(ips).sets);
    const hashes = stateHashes({ v4: cwPartOf(parseSave(s4).get('filter'), 4), v6: cwPartOf(parseSave(s6).get('filter'), 6), sets });
    return { hashes, sets: [...sets.keys()].sort() };
  }

  /** which policy the traffic shows: v1 lets the VPC database through, v2 the web; with none everything passes */
  async function traffic(): Promise<Name | 'mixed'> {
    const r = await Promise.all([
      t.tcp('10.255.0.2', '10.0.0.10', 5432), t.tcp('10.255.0.3', '203.0.113.10', 80),
      t.tcp('fd00:255::2', 'fd00:10::10', 5432), t.tcp('fd00:255::3', '2001:db8::10', 80),
      t.udp('10.255.0.4', '198.51.100.10', 53),
    ]);
    const o = r.map((x) => x.outcome).join(',');
    if (o === 'ok,refused,ok,refused,ok') return 'v1';
    if (o === 'refused,ok,refused,ok,ok') return 'v2';
    if (o === 'ok,ok,ok,ok,ok') return 'none';
    return `mixed` as const;
  }

  /** exactly that state: hash, cw- sets (no leaks) and traffic */
  async function expectState(n: Name): Promise<void> {
    const live = await liveHashes();
    expect(live.sets).toEqual(expected.get(n)!.sets);
    expect(live.hashes).toEqual(expected.get(n)!.hashes);
    expect(await traffic()).toBe(n);
  }

  it('applies cold, then a second apply writes nothing; v1 -> v2 swaps the policy', async () => {
    await expectState('none');
    const cold = await apply([...payload('v1'), '--json']);
    expect(cold.code, cold.stderr).toBe(0);
    const coldJson = JSON.parse(cold.stdout) as { changed: boolean; backend: string; ms: { total: number } };
    expect(coldJson.changed).toBe(true);
    expect(coldJson.backend).toMatch(/^iptables-(nft|legacy)$/);
    await expectState('v1');
    const saved = async (): Promise<string> => (await t.cellExec(['iptables-save', '-t', 'filter'])).split('\n').filter((l) => !l.startsWith('#')).join('\n');
    const before = await saved();
    const again = await apply([...payload('v1'), '--json']);
    const againJson = JSON.parse(again.stdout) as { changed: boolean; ms: { total: number } };
    expect(againJson.changed).toBe(false);
    expect(await saved()).toBe(before);
    const text = await apply(payload('v1'));
    expect(text.stdout).toContain('no changes');
    console.log(`[measure] fixture v1 apply: cold ${coldJson.ms.total.toFixed(0)} ms, no-change ${againJson.ms.total.toFixed(0)} ms (in-process; CLI start not included)`);
    const v2 = await apply(payload('v2'));
    expect(v2.code, v2.stderr).toBe(0);
    await expectState('v2');
    const manifest = JSON.parse(await run(['cat', join(stateDir, 'manifest.json')]).then((r) => r.stdout)) as Record<string, unknown>;
    expect(manifest).toMatchObject({ cellwall: '0.1.0', hashes: expected.get('v2')!.hashes });
    expect(String(manifest['backend'])).toMatch(/^iptables-/);
  });

  it('--dry-run exits 0 when in sync, 2 when something would change, and writes nothing', async () => {
    expect((await apply(payload('v1'))).code).toBe(0);
    expect((await apply([...payload('v1'), '--dry-run'])).code).toBe(0);
    const d = await apply([...payload('v2'), '--dry-run']);
    expect(d.code).toBe(2);
    expect(d.stdout).toContain('ipv4: ~ chain CW-fix-R');
    expect(d.stdout).toContain('ipset: - set cw-vpc4-1111aaaa');
    await expectState('v1');
  });

  it('leaves other tools\' chains, rules and sets alone', async () => {
    await t.cellExec(['ipset', 'create', 'silk-keep', 'hash:ip']);
    await t.cellExec(['iptables', '-w', '-N', 'netout-keep']);
    await t.cellExec(['iptables', '-w', '-A', 'netout-keep', '-m', 'set', '--match-set', 'silk-keep', 'dst', '-j', 'DROP']);
    await t.cellExec(['iptables', '-w', '-A', 'FORWARD', '-j', 'netout-keep']);
    expect((await apply(payload('v1'))).code).toBe(0);
    expect((await apply(payload('v2'))).code).toBe(0);
    const save = await t.cellExec(['iptables-save', '-t', 'filter']);
    expect(save).toContain('-A FORWARD -j netout-keep');
    expect(save).toContain('-A netout-keep -m set --match-set silk-keep dst -j DROP');
    expect(save.indexOf('-A FORWARD -j CW-fix')).toBeLessThan(save.indexOf('-A FORWARD -j netout-keep'));
    expect(await t.cellExec(['ipset', 'list', '-n'])).toContain('silk-keep');
    await expectState('v2');
    await t.cellExec(['iptables', '-w', '-D', 'FORWARD', '-j', 'netout-keep']);
    await t.cellExec(['iptables', '-w', '-F', 'netout-keep']);
    await t.cellExec(['iptables', '-w', '-X', 'netout-keep']);
  });

  const FAULTS = ['after-journal', 'after-sets', 'after-v4', 'after-v6', 'after-destroy'];
  it.each(FAULTS.map((f, i) => [f, i % 2 === 0 ? 'v2' : 'v1'] as const))(
    'killed %s: the next apply recovers from the journal and reaches exactly %s', async (fault, next) => {
      expect((await apply(payload('v1'))).code).toBe(0);
      const killed = await apply(payload('v2'), { CELLWALL_TEST_HOOKS: '1', CELLWALL_TEST_FAULT: fault });
      expect(killed.code).not.toBe(0);
      expect(existsSync(join(stateDir, 'journal.json'))).toBe(true);
      // the hook is inert without CELLWALL_TEST_HOOKS=1
      const r = await apply(payload(next), { CELLWALL_TEST_FAULT: fault });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('recovered');
      expect(existsSync(join(stateDir, 'journal.json'))).toBe(false);
      await expectState(next);
    });

  it('a payload the kernel refuses (v6 refers to a missing set) is rolled back, with the policy entry named', async () => {
    expect((await apply(payload('v1'))).code).toBe(0);
    const r = await apply(['--payload', FIX('bad-v6')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('rolled back');
    expect(r.stderr).toContain('cw-missing6-0000');
    expect(r.stderr).toContain('policy entry "policy.yaml:14:7 security_groups.broken[0]" (iptables.v6 line 11)');
    expect(r.stderr).not.toMatch(/\n\s+at .*\.js:\d+/); // no stack trace
    await expectState('v1');
  });

  it('without ipset: a clear error and nothing changed', async () => {
    expect((await apply(payload('v1'))).code).toBe(0);
    const bin = join(tmp, `bin-${Date.now()}`);
    mkdirSync(bin);
    for (const dir of ['/usr/sbin', '/sbin', '/usr/bin']) {
      if (!existsSync(dir)) continue;
      for (const f of readdirSync(dir)) {
        if ((/tables/.test(f) || f === 'flock') && !existsSync(join(bin, f))) symlinkSync(join(dir, f), join(bin, f));
      }
    }
    const r = await apply(payload('v2'), { PATH: bin });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ipset: not found in PATH/);
    await expectState('v1');
  });

  it('state dir on a full disk: a clear error and nothing changed', async () => {
    expect((await apply(payload('v1'))).code).toBe(0);
    const full = mkdtempSync(join(tmp, 'full-'));
    await run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'cwt-apply-full', full]);
    try {
      // pinned backend as an earlier apply left it, so the journal write is what fails
      await run(['cp', join(stateDir, 'backend'), join(full, 'backend')]);
      await run(['dd', 'if=/dev/zero', `of=${join(full, 'fill')}`, 'bs=4k', 'count=64'], 10_000);
      const r = await apply(payload('v2'), {}, full);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/journal\.json: cannot write: no space left on device/);
      await expectState('v1');
    } finally {
      await run(['umount', full]);
    }
  });

  it('two applies at once: the lock serialises them and the cell ends in one of the two states', async () => {
    const [a, b] = await Promise.all([apply(payload('v1')), apply(payload('v2'))]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const live = await liveHashes();
    const which = (['v1', 'v2'] as const).find((n) => JSON.stringify(live.hashes) === JSON.stringify(expected.get(n)!.hashes));
    expect(which).toBeDefined();
    await expectState(which!);
  });

  it('--watch repairs a wiped filter table, a moved jump and a destroyed set within the interval; SIGTERM stops it', async () => {
    const child = spawn('ip', ['netns', 'exec', t.cell, process.execPath, BIN, 'apply', '--state-dir', stateDir, ...payload('v2'), '--watch', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d) => (log += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const inState = async (n: Name): Promise<boolean> => JSON.stringify((await liveHashes()).hashes) === JSON.stringify(expected.get(n)!.hashes);
    try {
      expect(await until(() => log.includes('applied'), 15_000), log).toBe(true);
      await expectState('v2');
      // silk's pre-start: iptables-restore without --noflush wipes the whole filter table
      const wipe = join(tmp, 'wipe.rules');
      writeFileSync(wipe, '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n');
      await t.cellExec(['iptables-restore', wipe]);
      await t.cellExec(['ip6tables-restore', wipe]);
      await t.cellExec(['ipset', 'destroy', 'cw-web6-2222bbbb']);
      expect(await until(() => inState('v2'), 4000), log).toBe(true);
      await expectState('v2');
      // another agent puts its rule first in FORWARD
      await t.cellExec(['iptables', '-w', '-I', 'FORWARD', '1', '-j', 'ACCEPT']);
      expect(await until(async () => (await t.cellExec(['iptables', '-w', '-S', 'FORWARD'])).split('\n')[1] === '-A FORWARD -j CW-fix', 4000), log).toBe(true);
      expect(log).toContain('drift repaired');
      await t.cellExec(['iptables', '-w', '-D', 'FORWARD', '-j', 'ACCEPT']);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(log).toContain('watcher stopped');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('works with iptables-legacy when asked, and pins what it detected', async () => {
    const r = await apply([...payload('v1'), '--iptables', 'legacy']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('backend: iptables-legacy');
    expect(await t.cellExec(['iptables-legacy-save', '-t', 'filter'])).toContain('-A FORWARD -j CW-fix');
    expect(await traffic()).toBe('v1');
    const again = await apply([...payload('v1'), '--iptables', 'legacy']);
    expect(again.stdout).toContain('no changes');
    for (const tool of ['iptables-legacy', 'ip6tables-legacy']) {
      await t.cellExec([tool, '-w', '-F']);
      await t.cellExec([tool, '-w', '-X']);
    }
    const auto = await apply(payload('v1'), {}, mkdtempSync(join(tmp, 'pin-')));
    expect(auto.stdout).toMatch(/backend: iptables-(nft|legacy)/);
  });

  it('every example policy and segment: applies from POLICY, verifies without warnings, re-applies as a no-op, and moves to the next one leaving no stale chain or set', async () => {
    const files = readdirSync(EXAMPLES).filter((f) => /\.ya?ml$/.test(f)).sort();
    expect(files.length).toBeGreaterThan(0);
    let count = 0;
    for (const f of files) {
      const file = join(EXAMPLES, f);
      const policy = await loadPolicy(file);
      for (const seg of policy.segments.keys()) {
        const r = await apply([file, '--segment', seg]);
        expect(r.code, `${f} ${seg}: ${r.stderr}`).toBe(0);
        expect(r.stderr, `${f} ${seg}`).not.toContain('warning');
        const want = desiredFromPayload((await compileToPayload(file, seg)).payload);
        const live = await liveHashes();
        expect(live.hashes, `${f} ${seg}`).toEqual(stateHashes(want));
        expect(live.sets, `${f} ${seg}`).toEqual([...want.sets.keys()].sort());
        const again = await apply([file, '--segment', seg, '--dry-run']);
        expect(again.code, `${f} ${seg}: ${again.stdout}`).toBe(0);
        count++;
      }
    }
    console.log(`[apply] ${count} example segments applied in sequence on one cell`);
  });
});
