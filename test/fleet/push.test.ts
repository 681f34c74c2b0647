// cellwall push against real sshd's: every cell is a cwt-* namespace running
// its own sshd; the push command runs in an operator namespace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { Fleet, writeBundles } from './harness.mjs';

const gate = kernelGate(['ip', 'sshd', 'ssh', 'ssh-keygen', 'iptables-restore', 'ipset']);
const ROOT = resolve(__dirname, '../..');
const CLI = join(ROOT, 'bin/cellwall.js');
const POLICY = join(ROOT, 'test/fleet/fixtures/policy.yaml');
const HOSTILE = "dns $(touch /tmp/cwt-pwn-desc) `touch /tmp/cwt-pwn-desc2` 'q' \"dq\"";

// 12 cells across 2 segments (0-11), an unknown-host-key cell (12), a slow cell (13), a refusing cell (14)
const N = 15, SLOW = 13, REFUSE = 14, UNKNOWN = 12;
const segOf = (i: number) => (i < 6 ? 'seg-a' : 'seg-b');

describe.skipIf(gate.skip)('cellwall push over ssh', () => {
  let fleet: any;
  let tmp: string;
  let v1: string, v2: string, hostile: string;
  const push = (args: string[]) => fleet.run('node', [CLI, 'push', POLICY, ...args]);
  const json = (r: { stdout: string; stderr: string }) => {
    try { return JSON.parse(r.stdout); } catch { throw new Error(`not JSON: ${r.stdout}\nstderr: ${r.stderr}`); }
  };

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-fleet-bundles-'));
    v1 = writeBundles(join(tmp, 'v1'), ['seg-a', 'seg-b'], 1);
    v2 = writeBundles(join(tmp, 'v2'), ['seg-a', 'seg-b'], 2);
    hostile = writeBundles(join(tmp, 'hostile'), ['seg-a', 'seg-b'], 2, { description: HOSTILE });
    fleet = await new Fleet(N).start({ slow: [SLOW] });
    // the refusing cell: a set with a v2 name but the wrong family: the kernel refuses the v6 rule using it
    fleet.inCell(REFUSE, 'ipset', ['create', 'cw-a6-sega2', 'hash:net', 'family', 'inet']);
  });

  afterAll(() => {
    fleet?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    for (const f of ['/tmp/cwt-pwn-desc', '/tmp/cwt-pwn-desc2', '/tmp/cwt-pwn-name']) rmSync(f, { force: true });
  });

  it('dry-run on fresh cells shows the diff per cell and exits 2, writing nothing', async () => {
    const cells = Array.from({ length: 12 }, (_, i) => ({ i, segment: segOf(i) }));
    const inv = fleet.inventory(cells);
    const r = await push(['--inventory', inv, '--bundles', v1, '--dry-run', '--json', '--max-in-flight', '100%']);
    expect(r.code, r.stderr).toBe(2);
    const rep = json(r);
    expect(rep.cells).toHaveLength(12);
    for (const c of rep.cells) {
      expect(c.outcome).toBe('would-change');
      expect(c.diff.chainsAdded).toEqual(c.segment === 'seg-a' ? ['CW-sega', 'CW-sega-R'] : ['CW-segb', 'CW-segb-R']);
      expect(c.diff.entriesAdded).toBe(3);
      expect(c.diff.text.some((l: string) => l.startsWith('+ -A FORWARD -j CW-seg'))).toBe(true);
    }
    expect(fleet.cwState(0)).toBe('\n--\n\n--\n');
    // the human form lists each cell with its changes
    const t = await push(['--inventory', inv, '--bundles', v1, '--dry-run', '--max-in-flight', '6']);
    expect(t.code).toBe(2);
    expect(t.stdout).toMatch(/== cell-7 \(seg-b\): \+2 chains/);
    expect(t.stdout).toMatch(/cell-11\s+seg-b\s+would-change/);
  });

  it('pushes to 12 cells across 2 segments; a re-push writes nothing', async () => {
    const cells = Array.from({ length: 12 }, (_, i) => ({ i, segment: segOf(i) }));
    const inv = fleet.inventory(cells);
    const r = await push(['--inventory', inv, '--bundles', v1, '--json', '--max-in-flight', '25%', '--canaries', '2']);
    expect(r.code, r.stderr).toBe(0);
    const rep = json(r);
    expect(rep.summary.changed).toBe(12);
    expect(rep.cells.filter((c: any) => c.canary).map((c: any) => c.name)).toEqual(['cell-0', 'cell-1']);
    for (const c of rep.cells) { expect(c.compressed).toBe(true); expect(c.bytesSent).toBeGreaterThan(0); }
    const stateA = fleet.cwState(0), stateB = fleet.cwState(6);
    expect(stateA).toMatch(/^-A FORWARD -j CW-sega$/m);
    expect(stateA).toMatch(/cw-a4-sega1 10\.0\.1\.7/);
    expect(stateB).toMatch(/^-A FORWARD -j CW-segb$/m);
    for (let i = 1; i < 6; i++) expect(fleet.cwState(i)).toBe(stateA);
    for (let i = 7; i < 12; i++) expect(fleet.cwState(i)).toBe(stateB);

    const recorded = join(fleet.cells[3].stateDir, 'fleet-applied');
    const mtime = statSync(recorded).mtimeMs;
    const again = await push(['--inventory', inv, '--bundles', v1, '--json', '--max-in-flight', '12']);
    expect(again.code, again.stderr).toBe(0);
    const rep2 = json(again);
    expect(rep2.summary.unchanged).toBe(12);
    expect(statSync(recorded).mtimeMs).toBe(mtime);
    expect(fleet.cwState(3)).toBe(stateA);
    // dry-run agrees: nothing would change, exit 0
    const dry = await push(['--inventory', inv, '--bundles', v1, '--dry-run', '--json', '--max-in-flight', '12']);
    expect(dry.code).toBe(0);
    expect(json(dry).summary.unchanged).toBe(12);
    // drift is noticed: a rule deleted by hand makes the cell change again
    fleet.inCell(4, 'iptables', ['-D', 'CW-sega-R', '-p', 'udp', '--dport', '53', '-m', 'comment', '--comment', 'security_groups.dns[0]', '-j', 'RETURN']);
    const drift = await push(['--inventory', inv, '--bundles', v1, '--dry-run', '--json', '--max-in-flight', '12']);
    expect(drift.code).toBe(2);
    const d4 = json(drift).cells.find((c: any) => c.name === 'cell-4');
    expect(d4.outcome).toBe('would-change');
    expect(d4.diff.rulesChanged).toEqual([['CW-sega-R', 3, 4]]);
  });

  it('--bundles: the policy is not loaded (not even read for a YAML inventory); segments come from the bundle dirs', async () => {
    const inv = fleet.inventory([0, 6].map((i) => ({ i, segment: segOf(i) })));
    const r = await fleet.run('node', [CLI, 'push', join(tmp, 'no-such-policy.yaml'), '--inventory', inv, '--bundles', v1, '--json', '--dry-run', '--max-in-flight', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r).summary.unchanged).toBe(2);
    const bad = fleet.inventory([{ i: 0, segment: 'seg-zz' }]);
    const e = await fleet.run('node', [CLI, 'push', POLICY, '--inventory', bad, '--bundles', v1]);
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/cells\[0\]\.segment: unknown segment "seg-zz".*one of a bundle in .*v1: seg-a, seg-b/s);
  });

  it('fast path: an unchanged cell is skipped without the bundle; drift (rule or set entry) is still re-pushed', async () => {
    const inv = fleet.inventory([3, 4, 5].map((i) => ({ i, segment: 'seg-a' })));
    const stateA = fleet.cwState(3);
    // cell-4 still lacks the rule deleted by hand in the previous test; on cell-5 a set entry goes
    fleet.inCell(5, 'ipset', ['del', 'cw-a4-sega1', '10.0.1.7']);
    const mtime = (i: number) => statSync(join(fleet.cells[i].stateDir, 'fleet-applied')).mtimeMs;
    const m3 = mtime(3);
    const r = await push(['--inventory', inv, '--bundles', v1, '--json', '--max-in-flight', '3', '--canaries', '0']);
    expect(r.code, r.stderr).toBe(0);
    const by = Object.fromEntries(json(r).cells.map((c: any) => [c.name, c]));
    expect(by['cell-3'].outcome).toBe('unchanged');
    expect(by['cell-3'].fastPath).toBe(true);
    expect(by['cell-4'].outcome).toBe('changed');
    expect(by['cell-5'].outcome).toBe('changed');
    // the skipped cell got only the constant probe: far fewer bytes than a cell that received the bundle
    expect(by['cell-3'].bytesSent).toBeGreaterThan(0);
    expect(by['cell-3'].bytesSent).toBeLessThan(by['cell-4'].bytesSent - json(r).bundles[0].gzipBytes / 2);
    expect(mtime(3)).toBe(m3);
    for (const i of [4, 5]) expect(fleet.cwState(i)).toBe(stateA);
    for (const c of json(r).cells) expect(c.cellCpuMs).toBeGreaterThanOrEqual(0);

    // an entry swapped for another keeps the count: the probe cannot see it, the full comparison (--no-fast-path) does
    fleet.inCell(5, 'ipset', ['del', 'cw-a4-sega1', '10.0.1.7']);
    fleet.inCell(5, 'ipset', ['add', 'cw-a4-sega1', '10.0.1.8']);
    // the dry-run compares the printed sets with the bundle: it shows the swapped entry
    const dry = json(await push(['--inventory', inv, '--bundles', v1, '--json', '--max-in-flight', '3', '--dry-run']));
    const d5 = dry.cells.find((c: any) => c.name === 'cell-5');
    expect(d5.outcome).toBe('would-change');
    expect([d5.diff.entriesAdded, d5.diff.entriesRemoved]).toEqual([1, 1]);
    expect(dry.cells.find((c: any) => c.name === 'cell-3').outcome).toBe('unchanged');
    const full = await push(['--inventory', inv, '--bundles', v1, '--json', '--max-in-flight', '3', '--no-fast-path']);
    expect(full.code, full.stderr).toBe(0);
    const byFull = Object.fromEntries(json(full).cells.map((c: any) => [c.name, c]));
    expect(byFull['cell-5'].outcome).toBe('changed');
    expect(byFull['cell-3'].outcome).toBe('unchanged');
    expect(byFull['cell-3'].fastPath).toBeUndefined();
    expect(fleet.cwState(5)).toBe(stateA);

    // a record written before the fingerprint existed (two lines) is upgraded by a full comparison, then the fast path applies
    const rec = join(fleet.cells[3].stateDir, 'fleet-applied');
    writeFileSync(rec, readFileSync(rec, 'utf8').split('\n').slice(0, 2).join('\n') + '\n');
    const one = fleet.inventory([{ i: 3, segment: 'seg-a' }]);
    const up = json(await push(['--inventory', one, '--bundles', v1, '--json']));
    expect(up.cells[0].outcome).toBe('unchanged');
    expect(up.cells[0].fastPath).toBeUndefined();
    expect(readFileSync(rec, 'utf8').trim().split('\n')).toHaveLength(3);
    const fast = json(await push(['--inventory', one, '--bundles', v1, '--json']));
    expect(fast.cells[0].outcome).toBe('unchanged');
    expect(fast.cells[0].fastPath).toBe(true);
    expect(fleet.cwState(3)).toBe(stateA);
  });

  it('nothing from the inventory or the policy reaches a remote shell unquoted', async () => {
    const names = ['$(touch /tmp/cwt-pwn-name)', '`touch /tmp/cwt-pwn-name`', "it's \"quoted\"; touch /tmp/cwt-pwn-name"];
    const inv = fleet.inventory(names.map((name, k) => ({ i: 9 + k, segment: 'seg-b', name })));
    const r = await push(['--inventory', inv, '--bundles', hostile, '--json', '--max-in-flight', '3']);
    expect(r.code, r.stderr).toBe(0);
    const rep = json(r);
    expect(rep.cells.map((c: any) => c.name)).toEqual(names);
    expect(rep.summary.changed).toBe(3);
    expect(fleet.cwState(9)).toContain('--comment "dns $(touch /tmp/cwt-pwn-desc) `touch /tmp/cwt-pwn-desc2`');
    for (const f of ['/tmp/cwt-pwn-desc', '/tmp/cwt-pwn-desc2', '/tmp/cwt-pwn-name']) expect(existsSync(f)).toBe(false);
    // a newline in a name is refused by validation, naming file:line:col and the field
    const bad = fleet.inventory([{ i: 0, segment: 'seg-a', name: 'a\nb' }]);
    const e = await push(['--inventory', bad, '--bundles', v1]);
    expect(e.code).toBe(1);
    expect(e.stderr).toMatch(/inventory-\w+\.yml:\d+:\d+: error: cells\[0\]\.name: invalid value/);
    expect(e.stderr).not.toMatch(/\n\s+at /);
  });

  it('a cell whose kernel refuses the payload is rolled back; the others are fine', async () => {
    const before = fleet.cwState(REFUSE);
    const inv = fleet.inventory([{ i: 0, segment: 'seg-a' }, { i: REFUSE, segment: 'seg-a', name: 'refusing' }, { i: 1, segment: 'seg-a' }]);
    const r = await push(['--inventory', inv, '--bundles', v2, '--json', '--canaries', '0', '--max-in-flight', '3']);
    expect(r.code).toBe(1);
    const rep = json(r);
    const byName = Object.fromEntries(rep.cells.map((c: any) => [c.name, c]));
    expect(byName.refusing.outcome).toBe('rolled-back');
    // the wrong-family set holds none of the bundle's entries: its rebuild (swap) is refused by the kernel
    expect(byName.refusing.reason).toMatch(/ipset restore refused the sets: .*cannot be swapped: their type does not match/);
    expect(byName['cell-0'].outcome).toBe('changed');
    expect(byName['cell-1'].outcome).toBe('changed');
    expect(fleet.cwState(REFUSE)).toBe(before);
    expect(fleet.cwState(0)).toMatch(/cw-a4-sega2 10\.0\.2\.0\/23/);
    expect(r.stderr).toMatch(/refusing: rolled-back/);
  });

  it('a failing canary halts the rollout', async () => {
    const before = [2, 3].map((i) => fleet.cwState(i));
    const inv = fleet.inventory([{ i: REFUSE, segment: 'seg-a', name: 'refusing' }, { i: 2, segment: 'seg-a' }, { i: 3, segment: 'seg-a' }]);
    const r = await push(['--inventory', inv, '--bundles', v2, '--canaries', '1', '--max-in-flight', '2']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/refusing \(canary\)\s+seg-a\s+rolled-back/);
    expect(r.stdout).toMatch(/cell-2\s+seg-a\s+skipped\s+\S+\s+-\s+rollout stopped: canary refusing failed/);
    expect([2, 3].map((i) => fleet.cwState(i))).toEqual(before);
  });

  it('refuses an unknown host key unless --accept-new-host-keys', async () => {
    const kh = fleet.knownHostsWithout([UNKNOWN]);
    const inv = fleet.inventory([{ i: UNKNOWN, segment: 'seg-b' }], { knownHosts: kh });
    const r = await push(['--inventory', inv, '--bundles', v1, '--json']);
    expect(r.code).toBe(1);
    const c = json(r).cells[0];
    expect(c.outcome).toBe('failed');
    expect(c.reason).toMatch(/host key/i);
    expect(fleet.cwState(UNKNOWN)).toBe('\n--\n\n--\n');
    const ok = await push(['--inventory', inv, '--bundles', v1, '--json', '--accept-new-host-keys']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(json(ok).cells[0].outcome).toBe('changed');
    // recorded (hashed or not, as the operator's ssh config says)
    expect(execFileSync('ssh-keygen', ['-F', `10.201.${UNKNOWN}.2`, '-f', kh], { encoding: 'utf8' })).toMatch(/ssh-ed25519/);
  });

  it('a connection killed mid-transfer leaves the cell as it was', async () => {
    const i = 8;
    const before = fleet.cwState(i);
    const cell = { name: 'x', host: `10.201.${i}.2`, segment: 'seg-b', user: 'root',
      identityFile: join(fleet.dir, 'client_key'), knownHosts: join(fleet.dir, 'known_hosts') };
    const r = await fleet.run('node', [join(ROOT, 'test/fleet/killer.mjs'), JSON.stringify(cell), join(v2, 'seg-b'), 'seg-b', '0.5']);
    expect(r.code, r.stderr).toBe(0);
    const k = JSON.parse(r.stdout);
    expect(k.sent).toBeLessThan(k.total);
    expect(k.signal).toBe('SIGKILL');
    await new Promise((res) => setTimeout(res, 500));
    expect(fleet.cwState(i)).toBe(before);
  });

  it('a connection killed mid-apply leaves the cell old or new, never in between', async () => {
    const old = fleet.cwState(SLOW);
    const inv = fleet.inventory([{ i: SLOW, segment: 'seg-a', name: 'slow' }]);
    // the slow cell's iptables-restore takes 4s: the 2s per-cell timeout kills ssh while it applies
    const r = await push(['--inventory', inv, '--bundles', v2, '--json', '--timeout', '2']);
    expect(r.code).toBe(1);
    const c = json(r).cells[0];
    expect(c.outcome).toBe('failed');
    expect(c.reason).toMatch(/timed out after 2s while applying/);
    // wait (bounded) for the cell to finish on its own: it holds the apply lock until done
    const lock = join(fleet.cells[SLOW].stateDir, 'apply.lock');
    for (let t = 0; t < 40; t++) {
      const free = await fleet.run('flock', ['-n', lock, 'true'], { timeoutMs: 5000 });
      if (free.code === 0) break;
      await new Promise((res) => setTimeout(res, 250));
    }
    const after = fleet.cwState(SLOW);
    const reference = fleet.cwState(0); // cell-0 has v2 of seg-a
    expect([old, reference]).toContain(after);
    expect(after).toBe(reference); // HUP/PIPE are ignored on the cell: the apply completes
    // and the record matches: the next push writes nothing
    const again = await push(['--inventory', inv, '--bundles', v2, '--json']);
    expect(json(again).cells[0].outcome).toBe('unchanged');
  });

  it('reads `bosh instances --json` and maps instance groups to segments', async () => {
    const bosh = {
      Tables: [{
        Content: 'instances',
        Header: { instance: 'Instance', process_state: 'Process State', ips: 'IPs' },
        Rows: [
          { instance: 'diego-cell-a/0b1c', process_state: 'running', ips: '10.201.5.2' },
          { instance: 'diego-cell-b/9f8e', process_state: 'running', ips: '10.201.7.2' },
          { instance: 'router/1234', process_state: 'running', ips: '10.201.99.2' },
          { instance: 'smoke-tests/5678', process_state: '', ips: '' },
        ],
        Notes: null,
      }],
      Blocks: null,
      Lines: ['Using environment ...', 'Succeeded'],
    };
    const f = join(fleet.dir, 'bosh.json');
    writeFileSync(f, JSON.stringify(bosh, null, 2));
    const r = await push(['--inventory', f, '--bundles', v1, '--json', '--dry-run', '--user', 'root',
      '--identity-file', join(fleet.dir, 'client_key'), '--known-hosts', join(fleet.dir, 'known_hosts')]);
    expect(r.code, r.stderr).toBe(0);
    const rep = json(r);
    expect(rep.cells.map((c: any) => [c.name, c.segment, c.outcome])).toEqual([
      ['diego-cell-a/0b1c', 'seg-a', 'unchanged'],
      ['diego-cell-b/9f8e', 'seg-b', 'unchanged'],
    ]);
    expect(rep.ignored.map((g: any) => g.instance)).toEqual(['smoke-tests/5678', 'router/1234']);
  });
  it('SIGINT stops starting cells, lets the one in flight finish, and reports', async () => {
    const inv = fleet.inventory([2, 3, 4, 5].map((i) => ({ i, segment: 'seg-a' })));
    let sent = false;
    // bring them to v2 first, so that pushing v1 changes every one of them
    expect((await push(['--inventory', inv, '--bundles', v2, '--json', '--canaries', '0', '--max-in-flight', '4'])).code).toBe(0);
    const run = await fleet.run('node', [CLI, 'push', POLICY, '--inventory', inv, '--bundles', v1, '--json', '--canaries', '0', '--max-in-flight', '1'], {
      // `ip netns exec` execs node, so the child is the push process itself
      onStderr: (err: string, p: any) => { if (!sent && /cell-2: changed/.test(err)) { sent = true; p.kill('SIGINT'); } },
    });
    expect(sent).toBe(true);
    expect(run.code).toBe(1);
    const rep = json(run);
    expect(rep.interrupted).toBe(true);
    expect(rep.cells[0].outcome).toBe('changed');
    const skipped = rep.cells.filter((c: any) => c.outcome === 'skipped');
    expect(skipped.length).toBeGreaterThanOrEqual(1);
    for (const c of skipped) expect(c.reason).toMatch(/interrupted/);
    expect(rep.cells.every((c: any) => ['changed', 'skipped'].includes(c.outcome))).toBe(true);
  });
  it('compiles and pushes a real policy, replacing another segment\'s chains and sets', async () => {
    const policy = join(ROOT, 'examples/cellwall.yaml');
    const inv = fleet.inventory([6, 7].map((i) => ({ i, segment: 'shared' })));
    // a compiled set no bundle references any more (an older policy's) is destroyed by the next change
    fleet.inCell(6, 'ipset', ['create', 'cw4n-00000000000000stale', 'hash:net']);
    const r = await fleet.run('node', [CLI, 'push', policy, '--inventory', inv, '--json', '--max-in-flight', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r).summary.changed).toBe(2);
    const st = fleet.cwState(6);
    expect(st).toMatch(/^-A FORWARD .*-j CW-SHARED-[0-9a-f]+$/m);
    expect(st).not.toMatch(/CW-segb|cw-a4-segb1/);
    expect(st.match(/^-A FORWARD /gm)).toHaveLength(2); // one jump per family
    expect(fleet.cwState(7)).toBe(st);
    expect(st).toMatch(/^create cw4n-[0-9a-f]{20} /m);
    expect(fleet.inCell(6, 'ipset', ['list', '-n'])).not.toMatch(/stale/);
    const again = await fleet.run('node', [CLI, 'push', policy, '--inventory', inv, '--json', '--max-in-flight', '2']);
    expect(json(again).summary.unchanged).toBe(2);
    // the dry-run agrees: the compiler's add lines end with -exist, ipset save's do not; same entries
    const dry = await fleet.run('node', [CLI, 'push', policy, '--inventory', inv, '--json', '--max-in-flight', '2', '--dry-run']);
    expect(dry.code, dry.stdout).toBe(0);
    expect(json(dry).summary.unchanged).toBe(2);
    expect(json(again).cells.every((c: any) => c.fastPath)).toBe(true);
    // an entry deleted by hand from a compiled set: the probe sees the count, the set is rebuilt
    const entry = st.split('\n').find((l) => /^add cw4n-/.test(l))!.split(' ');
    fleet.inCell(7, 'ipset', ['del', entry[1], entry[2]]);
    expect(fleet.cwState(7)).not.toBe(st);
    const drift = json(await fleet.run('node', [CLI, 'push', policy, '--inventory', inv, '--json', '--max-in-flight', '2']));
    expect(drift.cells.map((c: any) => c.outcome)).toEqual(['unchanged', 'changed']);
    expect(fleet.cwState(7)).toBe(st);
  });
});
