// cellwall push --backend nft against real sshd's: every cell is a cwt-*
// namespace running its own sshd; the push command runs in an operator namespace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { pingFlood, udpFlood } from '../helpers/floods.js';
import { nftCanon } from '../../src/fleet/plan.js';
import { nftSetIndex } from '../../src/fleet/script.js';
import { Fleet } from './harness.mjs';

const gate = kernelGate(['ip', 'sshd', 'ssh', 'ssh-keygen', 'nft']);
const trafficGate = kernelGate(['ip', 'sshd', 'ssh', 'ssh-keygen', 'nft', 'ping']);
const ROOT = resolve(__dirname, '../..');
const CLI = join(ROOT, 'bin/cellwall.js');
const PWN = ['/tmp/cwt-pwn-nft', '/tmp/cwt-pwn-nft2', '/tmp/cwt-pwn-nft-name'];

const policy = (version: 1 | 2) => `version: 1
mode: tighten
networks:
  overlay: [10.255.0.0/16]
  vpc: [10.0.0.0/8]
security_groups:
  dns:
    - { protocol: udp, destination: 0.0.0.0/0, ports: "53", description: "dns $(touch ${PWN[0]}) \`touch ${PWN[1]}\` 'q' \\"dq\\"" }
  web:
    - { protocol: tcp, destination: ${version === 1 ? '192.0.2.0/24' : '198.51.100.0/24'}, ports: "${version === 1 ? '443' : '443,8443'}" }
groups:
  sandbox: { members: dynamic }
segments:
  seg-a: { container_network: overlay, egress: open }
  seg-b: { container_network: overlay, egress: restricted, egress_allow: [vpc] }
bindings:
  - { security_groups: [dns], phase: [running, staging] }
  - { security_groups: [web], groups: [sandbox], phase: running }
`;

// cells 0-3: two per segment; 4: a cell whose table holds what must be redeclared (or cannot be staged);
// 5: a cell where someone else flushes our base chain right after each load (the verify fails);
// 6: a cell whose nft (a wrapper) logs each nft -f and refuses the switch transaction
const REFUSE = 4, MEDDLE = 5, REFUSE_SWITCH = 6;
const REFUSER = (log: string) => `#!/bin/sh
case "$*" in
  *-f*.nft) echo "$*" >> ${log} ;;
esac
case "$*" in
  *-f*/tx.nft) echo "tx.nft: Error: refused by the test wrapper" >&2; exit 1 ;;
  *) exec /usr/sbin/nft "$@" ;;
esac
`;
const MEDDLER = `#!/bin/sh
case "$*" in
  *-f*/tx.nft|*-f*/final.nft) /usr/sbin/nft "$@" || exit $?; exec /usr/sbin/nft flush chain inet cellwall forward ;;
  *) exec /usr/sbin/nft "$@" ;;
esac
`;

describe('nftSetIndex (operator side: where ruleset.nft holds each set\'s full block)', () => {
  const script = [
    'table inet cellwall {', '  set cw-d-g-r4 {', '    type ipv4_addr; flags interval;', '  }', '  set cw4n-a {', '    type ipv4_addr; flags interval;', '  }', '}',
    'flush chain inet cellwall forward',
    'table inet cellwall {', '  set cw4n-a {', '    type ipv4_addr; flags interval;', '    elements = {', '      10.0.0.0/8', '    }', '  }', '}', '',
  ].join('\n');
  it('a dynamic set in the first table block, a filled one in the second', () => {
    expect(nftSetIndex(script)).toBe('cw-d-g-r4 1\ncw4n-a 2\n');
  });
  it('refuses a set name that is not a plain identifier (it would reach the remote shell\'s sed and awk)', () => {
    expect(() => nftSetIndex(script.replace('set cw4n-a {', 'set cw4n-a/x {'))).toThrow(/not a plain identifier/);
  });
});

describe.skipIf(gate.skip)('cellwall push --backend nft over ssh', () => {
  let fleet: any;
  let tmp: string;
  const pol: string[] = [];
  const bundles: string[] = [];
  const json = (r: { stdout: string; stderr: string }) => {
    try { return JSON.parse(r.stdout); } catch { throw new Error(`not JSON: ${r.stdout}\nstderr: ${r.stderr}`); }
  };
  const push = (version: 1 | 2, args: string[], { bundled = true } = {}) =>
    fleet.run('node', [CLI, 'push', pol[version - 1], '--backend', 'nft', ...(bundled ? ['--bundles', bundles[version - 1]] : []), '--json', ...args]);
  const listing = (i: number, flags: string[] = []) => {
    try { return fleet.inCell(i, 'nft', [...flags, 'list', 'table', 'inet', 'cellwall']); } catch { return ''; }
  };
  /** the table without counter values (and without handles): what a cell enforces */
  const state = (i: number) => listing(i).replace(/counter packets \d+ bytes \d+/g, 'counter');
  const canon = (i: number) => nftCanon(listing(i));
  const segOf = (i: number) => (i < 2 ? 'seg-a' : 'seg-b');

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-fleet-nft-'));
    for (const v of [1, 2] as const) {
      const f = join(tmp, `policy-v${v}.yaml`);
      writeFileSync(f, policy(v));
      pol.push(f);
      const dir = join(tmp, `v${v}`);
      for (const s of ['seg-a', 'seg-b']) execFileSync('node', [CLI, 'compile', f, '--segment', s, '--backend', 'nft', '--out', join(dir, s)], { stdio: 'pipe' });
      bundles.push(dir);
    }
    fleet = await new Fleet(7).start({ wrap: { [MEDDLE]: { nft: MEDDLER }, [REFUSE_SWITCH]: { nft: REFUSER(join(tmp, 'switch.log')) } } });
  });

  afterAll(() => {
    fleet?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    for (const f of PWN) rmSync(f, { force: true });
  });

  it('dry-run on fresh cells: per-cell diff, exit 2, nothing written', async () => {
    const inv = fleet.inventory([0, 1, 2, 3].map((i) => ({ i, segment: segOf(i) })));
    const r = await push(1, ['--inventory', inv, '--dry-run', '--max-in-flight', '4']);
    expect(r.code, r.stderr).toBe(2);
    for (const c of json(r).cells) {
      expect(c.outcome).toBe('would-change');
      expect(c.diff.chainsAdded).toContain('forward');
      expect(c.diff.setsAdded.length).toBeGreaterThan(0);
      expect(c.diff.entriesAdded).toBeGreaterThan(0);
    }
    expect(listing(0)).toBe('');
  });

  it('pushes to 4 cells; a re-push writes nothing (fast path, full comparison and dry-run agree)', async () => {
    const inv = fleet.inventory([0, 1, 2, 3].map((i) => ({ i, segment: segOf(i) })));
    const r = await push(1, ['--inventory', inv, '--max-in-flight', '4']);
    expect(r.code, r.stderr).toBe(0);
    const rep = json(r);
    expect(rep.summary.changed).toBe(4);
    expect(rep.bundles.map((b: any) => b.segment).sort()).toEqual(['seg-a', 'seg-b']);
    expect(state(1)).toBe(state(0));
    expect(state(3)).toBe(state(2));
    expect(state(0)).not.toBe(state(2));
    // the cell holds exactly the script's chains and sets
    const want = nftCanon(readFileSync(join(bundles[0], 'seg-a', 'ruleset.nft'), 'utf8'));
    const names = (lines: string[], k: string) => [...new Set(lines.filter((l) => l.startsWith(k)).map((l) => l.split(' ')[1]))].sort();
    expect(names(canon(0), 'C ')).toEqual(names(want, 'C '));
    expect(names(canon(0), 'S ')).toEqual(names(want, 'S '));
    expect(canon(0).filter((l) => l.startsWith('E ')).sort()).toEqual(want.filter((l) => l.startsWith('E ')).sort());

    // handles change on any reload: equal handles mean nothing was written
    const handles = [0, 1, 2, 3].map((i) => listing(i, ['-a']).replace(/counter packets \d+ bytes \d+/g, ''));
    const rec = join(fleet.cells[2].stateDir, 'fleet-applied');
    const mtime = statSync(rec).mtimeMs;
    const again = json(await push(1, ['--inventory', inv, '--max-in-flight', '4']));
    expect(again.summary.unchanged).toBe(4);
    expect(again.cells.every((c: any) => c.fastPath)).toBe(true);
    const full = json(await push(1, ['--inventory', inv, '--max-in-flight', '4', '--no-fast-path']));
    expect(full.summary.unchanged).toBe(4);
    expect(full.cells.some((c: any) => c.fastPath)).toBe(false);
    const dry = await push(1, ['--inventory', inv, '--max-in-flight', '4', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(json(dry).summary.unchanged).toBe(4);
    expect([0, 1, 2, 3].map((i) => listing(i, ['-a']).replace(/counter packets \d+ bytes \d+/g, ''))).toEqual(handles);
    expect(statSync(rec).mtimeMs).toBe(mtime);
  });

  it('drift: a rule deleted by hand is re-pushed; an element deleted by hand is found by the full comparison and the dry-run', async () => {
    const inv = fleet.inventory([0, 1].map((i) => ({ i, segment: 'seg-a' })));
    const ref = state(0);
    // cell-0: delete the first rule of the segment's v4 chain
    const top = canon(0).find((l) => /^C CW-SEG-A-.*-v4$/.test(l))!.split(' ')[1];
    const handle = /# handle (\d+)/.exec(fleet.inCell(0, 'nft', ['-a', 'list', 'chain', 'inet', 'cellwall', top]).split('\n').find((l: string) => / return /.test(l))!)![1];
    fleet.inCell(0, 'nft', ['delete', 'rule', 'inet', 'cellwall', top, 'handle', handle]);
    // cell-1: delete an element of a static set (the probe, which reads no elements, cannot see it)
    const el = canon(1).find((l) => /^E cw4p-\S+ 192\.0\.2\.0\/24 \. tcp \. 443$/.test(l))!.split(' ');
    fleet.inCell(1, 'nft', ['delete', 'element', 'inet', 'cellwall', el[1], `{ ${el.slice(2).join(' ')} }`]);
    expect(state(1)).not.toBe(ref);

    const dry = json(await push(1, ['--inventory', inv, '--max-in-flight', '2', '--dry-run']));
    const by = (rep: any) => Object.fromEntries(rep.cells.map((c: any) => [c.name, c]));
    expect(by(dry)['cell-0'].outcome).toBe('would-change');
    const [[chain, live, want]] = by(dry)['cell-0'].diff.rulesChanged;
    expect([chain, want - live]).toEqual([top, 1]);
    expect(by(dry)['cell-1'].outcome).toBe('would-change');
    expect([by(dry)['cell-1'].diff.entriesAdded, by(dry)['cell-1'].diff.entriesRemoved]).toEqual([1, 0]);

    const r = json(await push(1, ['--inventory', inv, '--max-in-flight', '2', '--canaries', '0']));
    expect(by(r)['cell-0'].outcome).toBe('changed');
    expect(by(r)['cell-1'].outcome).toBe('unchanged');
    expect(state(0)).toBe(ref);
    const full = json(await push(1, ['--inventory', inv, '--max-in-flight', '2', '--canaries', '0', '--no-fast-path']));
    expect(by(full)['cell-0'].outcome).toBe('unchanged');
    expect(by(full)['cell-1'].outcome).toBe('changed');
    expect(state(1)).toBe(ref);
  });

  it('a new policy (compiled by push) replaces the old chains and sets; dynamic members survive', async () => {
    const inv = fleet.inventory([2, 3].map((i) => ({ i, segment: 'seg-b' })));
    const dyn = canon(2).find((l) => /^S cw-d-sandbox-r4 /.test(l))!.split(' ')[1];
    fleet.inCell(2, 'nft', ['add', 'element', 'inet', 'cellwall', dyn, '{ 10.255.0.7 }']);
    const oldSets = canon(2).filter((l) => l.startsWith('S cw4')).map((l) => l.split(' ')[1]);
    const r = await push(2, ['--inventory', inv, '--max-in-flight', '2'], { bundled: false });
    expect(r.code, r.stderr).toBe(0);
    expect(json(r).summary.changed).toBe(2);
    const want = nftCanon(readFileSync(join(bundles[1], 'seg-b', 'ruleset.nft'), 'utf8'));
    const now = canon(2);
    const chains = (lines: string[]) => [...new Set(lines.filter((l) => l.startsWith('C ')))].sort();
    expect(chains(now)).toEqual(chains(want));
    const sets = now.filter((l) => l.startsWith('S ')).map((l) => l.split(' ')[1]);
    expect(sets.filter((s) => oldSets.includes(s) && !want.some((w) => w.startsWith(`S ${s} `)))).toEqual([]);
    expect(now).toContain(`E ${dyn} 10.255.0.7`);
    const staticElems = (lines: string[]) => lines.filter((l) => l.startsWith('E ') && !l.startsWith('E cw-d-')).sort();
    expect(staticElems(now)).toEqual(staticElems(want));
    const again = json(await push(2, ['--inventory', inv, '--max-in-flight', '2'], { bundled: false }));
    expect(again.summary.unchanged).toBe(2);
  });

  it('a stage the kernel refuses changes nothing (handles as before); the other cell changes', async () => {
    // a dynamic member set declared otherwise (IPv6) holds an IPv6 member, which its staging copy
    // (the script's IPv4 declaration) cannot take
    fleet.inCell(REFUSE, 'nft', ['add', 'table', 'inet', 'cellwall']);
    fleet.inCell(REFUSE, 'nft', ['add', 'set', 'inet', 'cellwall', 'cw-d-sandbox-r4', '{ type ipv6_addr; flags interval; }']);
    fleet.inCell(REFUSE, 'nft', ['add', 'element', 'inet', 'cellwall', 'cw-d-sandbox-r4', '{ fd00::7 }']);
    const before = listing(REFUSE, ['-a']);
    const inv = fleet.inventory([{ i: 0, segment: 'seg-a' }, { i: REFUSE, segment: 'seg-a', name: 'refusing' }]);
    const r = await push(2, ['--inventory', inv, '--max-in-flight', '2', '--canaries', '0']);
    expect(r.code).toBe(1);
    const by = Object.fromEntries(json(r).cells.map((c: any) => [c.name, c]));
    expect(by.refusing.outcome).toBe('rolled-back');
    expect(by.refusing.reason).toMatch(/nft refused the staged sets, nothing changed: .*Error/);
    expect(listing(REFUSE, ['-a'])).toBe(before);
    expect(by['cell-0'].outcome).toBe('changed');
  });

  it('a switch refused after the stage changes nothing: the sets staged for it are deleted again (handles as before)', async () => {
    // an earlier table, loaded by hand; the cell's nft (a wrapper in its ssh PATH) refuses the switch transaction
    fleet.inCell(REFUSE_SWITCH, 'nft', ['-f', join(bundles[0], 'seg-b', 'ruleset.nft')]);
    const before = listing(REFUSE_SWITCH, ['-a']);
    const r = json(await push(2, ['--inventory', fleet.inventory([{ i: REFUSE_SWITCH, segment: 'seg-a', name: 'refusing' }])]));
    expect(r.cells[0].outcome).toBe('rolled-back');
    expect(r.cells[0].reason).toMatch(/nft refused the transaction, nothing changed: .*refused by the test wrapper/);
    expect(listing(REFUSE_SWITCH, ['-a'])).toBe(before);
    // the stage did run: the wrapper logged its load before the refused switch
    expect(readFileSync(join(tmp, 'switch.log'), 'utf8')).toMatch(/stage\.nft\n.*tx\.nft\n/);
  });

  it('a set (another type) and a chain (another hook) of the script\'s names, declared otherwise on the cell, are replaced', async () => {
    const name = /^ {2}set (cw4p-\S+) \{$/m.exec(readFileSync(join(bundles[1], 'seg-a', 'ruleset.nft'), 'utf8'))![1];
    fleet.inCell(REFUSE, 'nft', ['delete', 'table', 'inet', 'cellwall']);
    fleet.inCell(REFUSE, 'nft', ['add', 'table', 'inet', 'cellwall']);
    fleet.inCell(REFUSE, 'nft', ['add', 'set', 'inet', 'cellwall', name, '{ type ipv6_addr; }']);
    fleet.inCell(REFUSE, 'nft', ['add', 'chain', 'inet', 'cellwall', 'forward', '{ type filter hook input priority 0; policy accept; }']);
    const r = json(await push(2, ['--inventory', fleet.inventory([{ i: REFUSE, segment: 'seg-a', name: 'redeclared' }])]));
    expect(r.cells[0].outcome, r.cells[0].reason).toBe('changed');
    // cell-0 holds v2 seg-a (the listing's order of chains follows their creation: compared as sorted canonical lines)
    expect(canon(REFUSE).sort()).toEqual(canon(0).sort());
    expect(canon(REFUSE)).toContain(`S ${name} type ipv4_addr . inet_proto . inet_service`);
    expect(canon(REFUSE)).toContain('R forward type filter hook forward priority filter; policy accept;');
    expect(canon(REFUSE).filter((l) => l.includes('cw-tmp-'))).toEqual([]);
  });

  it('a dynamic member set declared otherwise (an older cellwall) is recreated with its members', async () => {
    const old = canon(REFUSE).filter((l) => l.startsWith('C ')).map((l) => `flush chain inet cellwall ${l.split(' ')[1]}`);
    fleet.inCell(REFUSE, 'sh', ['-c', `printf '%s\\n' "$@" | nft -f -`, 'sh', ...old, 'delete set inet cellwall cw-d-sandbox-r4',
      'add set inet cellwall cw-d-sandbox-r4 { type ipv4_addr; flags interval; comment "members (older cellwall)"; }',
      'add element inet cellwall cw-d-sandbox-r4 { 10.255.0.5, 10.255.0.6 }']);
    expect(canon(REFUSE)).toContain('S cw-d-sandbox-r4 comment "members (older cellwall)"');
    const r = json(await push(2, ['--inventory', fleet.inventory([{ i: REFUSE, segment: 'seg-a', name: 'redeclared' }])]));
    expect(r.cells[0].outcome, r.cells[0].reason).toBe('changed');
    const now = canon(REFUSE);
    expect(now).toContain('S cw-d-sandbox-r4 comment "running members of sandbox"');
    expect(now.filter((l) => l.startsWith('E cw-d-sandbox-r4 '))).toEqual(['E cw-d-sandbox-r4 10.255.0.5', 'E cw-d-sandbox-r4 10.255.0.6']);
    expect(now.filter((l) => !l.startsWith('E cw-d-')).sort()).toEqual(canon(0).filter((l) => !l.startsWith('E cw-d-')).sort());
  });

  it('a verify failure after the load restores the previous table (snapshot, one transaction)', async () => {
    const inv = fleet.inventory([{ i: MEDDLE, segment: 'seg-a', name: 'meddled' }]);
    // first a state to go back to: v1 loads, then the meddler empties forward, so v1 already fails to verify
    const first = json(await push(1, ['--inventory', inv]));
    expect(first.cells[0].outcome).toBe('rolled-back');
    expect(listing(MEDDLE)).toBe('');
    // an earlier table (here made by hand) comes back as it was, elements and all
    fleet.inCell(MEDDLE, '/usr/sbin/nft', ['-f', join(bundles[0], 'seg-b', 'ruleset.nft')]);
    const before = state(MEDDLE);
    const r = json(await push(1, ['--inventory', inv]));
    expect(r.cells[0].outcome).toBe('rolled-back');
    expect(r.cells[0].reason).toMatch(/verification failed: .*forward/);
    expect(state(MEDDLE)).toBe(before);
  });

  it('nothing from the inventory or the policy reaches a remote shell unquoted', async () => {
    const names = [`$(touch ${PWN[2]})`, `\`touch ${PWN[2]}\`; it's`];
    const inv = fleet.inventory(names.map((name, k) => ({ i: k, segment: 'seg-a', name })));
    const r = await push(1, ['--inventory', inv, '--max-in-flight', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(json(r).cells.map((c: any) => c.name)).toEqual(names);
    expect(listing(0)).toContain(`dns $(touch ${PWN[0]}) \`touch ${PWN[1]}\``);
    for (const f of PWN) expect(existsSync(f)).toBe(false);
  });
});

/**
 * The remote sh stages the sets a cell lacks before the transaction that switches the rules (a set
 * created in that transaction looks empty for a moment, docs/nft.md). Traffic goes through a real sshd
 * cell: src (10.255.0.4) -> cell -> dst (VPC 10.0.0.11, internet 198.51.100.10).
 */
describe.skipIf(trafficGate.skip)('cellwall push --backend nft: no gap in traffic while a cell switches tables', () => {
  let fleet: any;
  let tmp: string;
  let src: string;
  /** 8000 separate addresses (none adjacent: 8000 elements) in 100.64.0.0/16: the container network gains them in B */
  const big = Array.from({ length: 8000 }, (_, i) => `100.64.${i >> 7}.${(i & 127) * 2}`).join(', ');
  /**
   * Both policies allow the VPC (tcp 5432, ICMP) and refuse the rest. B's container network is a new,
   * big set (a source set: looked up empty, a container would look ungoverned and pass), and the VPC
   * set is the same content-addressed set under another comment ("egress_allow of x" / "of y": redeclared;
   * looked up empty, `!= @vpc` would refuse the VPC)
   */
  const policy = (seg: string, withBig: boolean) => `version: 1
mode: tighten
defaults: { deny: reject }
networks:
  overlay: [10.255.0.0/24${withBig ? `, ${big}` : ''}]
  vpc: [10.0.0.0/8]
security_groups:
  db: [{ protocol: tcp, destination: vpc, ports: "5432" }, { protocol: icmp, destination: vpc, type: -1, code: -1 }]
segments:
  ${seg}: { container_network: overlay, egress: restricted, egress_allow: [vpc] }
bindings:
  - { security_groups: [db], phase: [running, staging] }
`;
  const cell = () => fleet.cells[0].ns;
  const ipn = (ns: string, ...args: string[]) => execFileSync('ip', ['-n', ns, ...args], { stdio: 'pipe' });

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'cwt-fleet-nftgap-'));
    writeFileSync(join(tmp, 'a.yaml'), policy('x', false));
    writeFileSync(join(tmp, 'b.yaml'), policy('y', true));
    for (const [f, seg] of [['a', 'x'], ['b', 'y']]) {
      execFileSync('node', [CLI, 'compile', join(tmp, `${f}.yaml`), '--segment', seg, '--backend', 'nft', '--out', join(tmp, f, seg)], { stdio: 'pipe' });
    }
    fleet = await new Fleet(1).start();
    src = `cwt-${fleet.id}-src`;
    const dst = `cwt-${fleet.id}-dst`;
    fleet.addNs(src);
    fleet.addNs(dst);
    ipn(src, 'link', 'add', 's0', 'type', 'veth', 'peer', 'name', 'cs', 'netns', cell());
    ipn(dst, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'cd', 'netns', cell());
    ipn(src, 'addr', 'add', '10.255.0.4/24', 'dev', 's0');
    ipn(cell(), 'addr', 'add', '10.255.0.1/24', 'dev', 'cs');
    ipn(cell(), 'addr', 'add', '10.0.0.1/24', 'dev', 'cd');
    ipn(cell(), 'addr', 'add', '198.51.100.1/24', 'dev', 'cd');
    ipn(dst, 'addr', 'add', '10.0.0.11/24', 'dev', 'd0');
    ipn(dst, 'addr', 'add', '198.51.100.10/24', 'dev', 'd0');
    for (const [ns, dev] of [[src, 's0'], [src, 'lo'], [dst, 'd0'], [dst, 'lo'], [cell(), 'cs'], [cell(), 'cd']]) ipn(ns, 'link', 'set', dev, 'up');
    ipn(src, 'route', 'add', 'default', 'via', '10.255.0.1');
    ipn(dst, 'route', 'add', 'default', 'via', '10.0.0.1');
    fleet.inCell(0, 'sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']); // the cell's namespace only
  }, 60_000);

  afterAll(() => {
    fleet?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  const push = async (file: string, seg: string) => {
    const r = await fleet.run('node', [CLI, 'push', join(tmp, file), '--bundles', join(tmp, file.replace('.yaml', '')), '--backend', 'nft', '--json', '--inventory', fleet.inventory([{ i: 0, segment: seg }])], { timeoutMs: 120_000 });
    return { code: r.code, stderr: r.stderr, cell: JSON.parse(r.stdout).cells[0] };
  };

  const probed = async (file: string, seg: string) => {
    const allowed = pingFlood(src, '10.0.0.11');
    const refused = await udpFlood(src, '10.255.0.4', '198.51.100.10', ([cmd, ...args]) => fleet.inCell(0, cmd!, args));
    const r = await push(file, seg);
    return { r, allowed: await allowed.stop(), refused: await refused.stop() };
  };
  const setComments = () => [...fleet.inCell(0, 'nft', ['-t', 'list', 'sets', 'inet']).matchAll(/comment "([^"]*)"/g)].map((m: string[]) => m[1]).sort();

  it('A -> B (a new 8000-element source set, a redeclared VPC set) -> A, 3 times: nothing both refuse gets through, nothing both allow is refused', async () => {
    const first = await push('a.yaml', 'x');
    expect(first.cell.outcome, first.stderr).toBe('changed');
    const swaps: Array<{ to: string; outcome: string; why: string; refused: { sent: number; passed: number }; allowed: { received: number; errors: number }; comments: string[] }> = [];
    for (const [file, seg] of Array.from({ length: 3 }, () => [['b.yaml', 'y'], ['a.yaml', 'x']]).flat()) {
      const p = await probed(file, seg);
      swaps.push({ to: seg, outcome: p.r.cell.outcome, why: `${p.r.cell.reason ?? ''} ${p.r.stderr}`.trim(), refused: p.refused, allowed: p.allowed, comments: setComments() });
    }
    const all = JSON.stringify(swaps.map(({ comments, ...w }) => w));
    expect(swaps.map((w) => w.outcome), all).toEqual(swaps.map(() => 'changed'));
    for (const w of swaps) {
      expect(w.refused.sent, all).toBeGreaterThan(0);
      expect(w.refused.passed, all).toBe(0); // not one datagram let through
      expect(w.allowed.received, all).toBeGreaterThan(0);
      expect(w.allowed.errors, all).toBe(0); // not one echo request refused
    }
    // the redeclared set carries the new comment (nft keeps the old one when a script merely redeclares it)
    for (const w of swaps) {
      expect(w.comments).toContain(`egress_allow of ${w.to}`);
      expect(w.comments).not.toContain(`egress_allow of ${w.to === 'x' ? 'y' : 'x'}`);
    }
    expect(fleet.inCell(0, 'nft', ['-t', 'list', 'sets', 'inet'])).not.toContain('cw-tmp-');
    expect((await push('a.yaml', 'x')).cell.outcome).toBe('unchanged');
  }, 240_000);
});
