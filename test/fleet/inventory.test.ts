import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseInventory, resolveSegments } from '../../src/fleet/inventory.js';
import { sshArgs } from '../../src/fleet/ssh.js';
import { buildScript, remoteCommand, shq } from '../../src/fleet/script.js';
import { bundleHash } from '../../src/fleet/bundle.js';
import { applyStream, parseCellCpu, parseMaxInFlight, rawSegments } from '../../src/fleet/push.js';
import { bundlePart } from '../../src/fleet/plan.js';
import { diffNft, diffPart, lineDiff, nftCanon, normalizeRule } from '../../src/fleet/plan.js';
import { DiagnosticsError } from '../../src/errors.js';

const INV = `ssh:
  user: vcap
  identity_file: ~/.ssh/cells
  known_hosts: /etc/cw/known_hosts
  proxy_jump: jumpbox.example.internal
cells:
  - { name: cell-1, host: 10.0.16.11, segment: egress-restricted-1 }
  - { name: cell-2, host: 10.0.16.12, port: 2222, segment: shared, user: root }
`;

function errors(text: string): string[] {
  try {
    parseInventory(text, 'inv.yml');
  } catch (e) {
    if (e instanceof DiagnosticsError) return e.message.split('\n');
    throw e;
  }
  return [];
}

describe('inventory', () => {
  it('reads the SPEC §4 example with per-cell overrides', () => {
    const inv = parseInventory(INV, 'inv.yml');
    expect(inv.cells.map((c) => [c.name, c.host, c.port, c.user, c.segment, c.proxyJump])).toEqual([
      ['cell-1', '10.0.16.11', undefined, 'vcap', 'egress-restricted-1', 'jumpbox.example.internal'],
      ['cell-2', '10.0.16.12', 2222, 'root', 'shared', 'jumpbox.example.internal'],
    ]);
    expect(inv.cells[0].identityFile).not.toContain('~');
    expect(inv.cells[1].loc).toMatchObject({ file: 'inv.yml', line: 8, col: 5 });
  });

  it('reports unknown keys, bad values and duplicates with file:line:col, field and expected form', () => {
    const e = errors(`ssh:
  usr: vcap
cells:
  - { name: a, host: "-oProxyCommand=touch /tmp/x", segment: s }
  - { name: b, host: 10.0.0.2, segment: s, port: 70000 }
  - { name: b, host: 10.0.0.3, segment: s }
  - { name: c, host: 10.0.0.4 }
  - { name: d, host: 10.0.0.5, segment: s, proxy_jump: "a b" }
`);
    expect(e).toEqual([
      'inv.yml:2:3: error: ssh.usr: unknown key "usr" (expected one of: user, port, identity_file, known_hosts, proxy_jump)',
      expect.stringMatching(/^inv\.yml:4:22: error: cells\[0\]\.host: invalid value "-oProxyCommand=touch \/tmp\/x" \(expected a host name or IP address/),
      'inv.yml:5:50: error: cells[1].port: invalid port 70000 (expected an integer 1..65535)',
      'inv.yml:6:13: error: cells[2].name: duplicate cell name "b" (first at 5:5) (expected unique cell names)',
      'inv.yml:7:5: error: cells[3].segment: missing (expected a segment name from the policy)',
      expect.stringMatching(/^inv\.yml:8:56: error: cells\[4\]\.proxy_jump: invalid value "a b"/),
    ]);
    expect(errors('cells: {}\n')[0]).toBe('inv.yml:1:8: error: cells: not a list (expected a list of cells: - { name, host, segment })');
    expect(errors('cells: [\n')[0]).toMatch(/^inv\.yml:\d+:\d+: error: /);
  });

  it('checks segments against the policy', () => {
    const inv = parseInventory(INV, 'inv.yml');
    expect(() => resolveSegments(inv, ['shared'], new Map())).toThrow(
      'inv.yml:7:5: error: cells[0].segment: unknown segment "egress-restricted-1" (expected one of the policy\'s segments: shared)');
  });

  it('reads bosh instances --json and maps instance groups to segments', () => {
    const bosh = JSON.stringify({ Tables: [{ Content: 'instances', Rows: [
      { instance: 'isolated-diego-cell/abc-1', process_state: 'running', ips: '10.0.16.11' },
      { instance: 'diego-cell/def-2', process_state: 'running', ips: '10.0.17.5\n10.0.18.5' },
      { instance: 'router/0', process_state: 'running', ips: '10.0.1.1' },
      { instance: 'smoke-tests/1', process_state: '', ips: '' },
    ] }], Blocks: null, Lines: [] }, null, 1);
    const inv = resolveSegments(parseInventory(bosh, 'bosh.json'), ['iso', 'shared'],
      new Map([['isolated-diego-cell', 'iso'], ['diego-cell', 'shared']]));
    expect(inv.cells.map((c) => [c.name, c.host, c.segment])).toEqual([
      ['isolated-diego-cell/abc-1', '10.0.16.11', 'iso'], ['diego-cell/def-2', '10.0.17.5', 'shared']]);
    expect(inv.ignored.map((i) => i.instance)).toEqual(['smoke-tests/1', 'router/0']);
  });
});

describe('transport and stream', () => {
  const cell = parseInventory(INV, 'inv.yml').cells[1];

  it('verifies host keys, never prompts, ends options before the host', () => {
    const a = sshArgs(cell, { acceptNewHostKeys: false, connectTimeoutSec: 7 }, 'CMD');
    const opts = a.filter((_, i) => a[i - 1] === '-o');
    expect(opts).toEqual(expect.arrayContaining(['BatchMode=yes', 'StrictHostKeyChecking=yes', 'ConnectTimeout=7',
      'UserKnownHostsFile="/etc/cw/known_hosts"']));
    // one session per cell: no ControlMaster of ours (the operator's ssh config still applies)
    expect(opts.filter((o) => o.startsWith('Control'))).toEqual([]);
    expect(a.slice(-3)).toEqual(['--', '10.0.16.12', 'CMD']);
    expect(sshArgs(cell, { acceptNewHostKeys: true, connectTimeoutSec: 7 }, 'C')).toContain('StrictHostKeyChecking=accept-new');
  });

  it('keeps the remote command constant and carries data in quoted here-documents', () => {
    // constant: the bootstrap is the same text for every cell and policy
    expect(remoteCommand()).toBe(remoteCommand());
    expect(remoteCommand()).toMatch(/^cw_boot='[^]*'; if \[ "\$\(id -u\)" -eq 0 \]; then exec sh -c "\$cw_boot"; else exec sudo -n sh -c "\$cw_boot"; fi$/);
    expect(remoteCommand()).toMatch(/gz\) gzip -dc \| sh -s; exit ;;/);
    const evil = '$(touch /tmp/x) `id` \'q\'\nCW_EOF_x\n';
    const files = { 'ipset.restore': evil, 'iptables.v4': '*filter\nCOMMIT\n', 'iptables.v6': '' };
    const s = buildScript('apply', { segment: 's', files, hash: bundleHash(files) });
    const delims = [...s.matchAll(/<<'(CW_EOF_[0-9a-f]{16})'\n/g)].map((m) => m[1]);
    expect(delims).toHaveLength(3);
    for (const d of delims) expect(s.split('\n').filter((l) => l === d)).toHaveLength(1);
    expect(s.startsWith('{\n')).toBe(true);
    expect(s.trimEnd().endsWith('cw_main\n}')).toBe(true);
    expect(shq("a'b")).toBe(`'a'\\''b'`);
  });

  it('builds and compresses the apply stream once per bundle; the probe carries nothing from a policy', () => {
    const files = { 'ipset.restore': 'create cw4n-abc hash:net family inet\nadd cw4n-abc 10.0.0.0/8 -exist\n', 'iptables.v4': '*filter\nCOMMIT\n', 'iptables.v6': '' };
    const b = { segment: 's', files, hash: bundleHash(files) };
    const gz = applyStream(b, 'apply', true);
    expect(applyStream(b, 'apply', true)).toBe(gz);
    expect(applyStream(b, 'apply', false).length).toBeGreaterThan(gz.length);
    expect(applyStream({ ...b }, 'apply', true)).not.toBe(gz);
    // the probe is part of the constant bootstrap
    expect(remoteCommand()).toMatch(/probe\) cw_probe/);
    expect(remoteCommand()).not.toMatch(/CW_EOF_|cw4n-abc/);
    // the compiler's set names count as cellwall's in the dry-run view too
    expect(bundlePart(b).sets).toEqual(['create cw4n-abc hash:net family inet', 'add cw4n-abc 10.0.0.0/8 -exist']);
  });

  it('reads the cell-side CPU from `times` (dash and bash spellings)', () => {
    expect(parseCellCpu('CW-RESULT changed\nCW-CPU 0m0.020000s 0m0.010000s\n0m0.860000s 0m1.260000s\n')).toBe(2150);
    expect(parseCellCpu('CW-CPU 0m0.001s 0m0.000s\n1m2.5s 0m0.5s\n')).toBe(63001);
    expect(parseCellCpu('no marker')).toBe(0);
    // the probe (bootstrap shell) and the stream's shell each print one: both count
    expect(parseCellCpu('CW-PROBE a b c\nCW-CPU 0m0.010s 0m0.000s\n0m0.000s 0m0.000s\nCW-RESULT changed\nCW-CPU 0m0.020s 0m0.000s\n0m1.000s 0m0.000s\n')).toBe(1030);
  });

  it('reads only the segments of a policy for --bundles (no validation; JSON as JSON)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-raw-'));
    try {
      const f = join(dir, 'p.json');
      writeFileSync(f, JSON.stringify({ version: 1, not_a_key: true, segments: { a: { cells: { instance_group: 'g-a' } }, b: {} } }));
      const r = rawSegments(f);
      expect(r.segments).toEqual(['a', 'b']);
      expect([...r.instanceGroups]).toEqual([['g-a', 'a']]);
      writeFileSync(f, 'segments: {x: {cells: {instance_group: gx}}}\n');
      expect([...rawSegments(f).instanceGroups]).toEqual([['gx', 'x']]);
      writeFileSync(f, 'segments: [unclosed\n');
      expect(() => rawSegments(f)).toThrow(/p\.json: cannot parse the policy/);
      expect(() => rawSegments(join(dir, 'none.yaml'))).toThrow(/none\.yaml: cannot read the policy \(ENOENT\)/);
    } finally { rmSync(dir, { recursive: true, force: true }); }
  });

  it('parses --max-in-flight as a number or a percentage', () => {
    expect(parseMaxInFlight('3', 10)).toBe(3);
    expect(parseMaxInFlight('25%', 10)).toBe(3);
    expect(parseMaxInFlight('1%', 10)).toBe(1);
    expect(() => parseMaxInFlight('0', 10)).toThrow(/--max-in-flight/);
    expect(() => parseMaxInFlight('150%', 10)).toThrow(/--max-in-flight/);
  });
});

describe('dry-run diff', () => {
  it('nft: canonical lines of a script and of the kernel listing agree (spacing, /32, counters)', () => {
    const script = 'table inet cellwall {\n  set cw4p-a {\n    type ipv4_addr . inet_proto . inet_service; flags interval;\n    elements = {\n      10.0.0.1/32 . tcp . 443,\n      10.1.0.0/16 . udp . 53\n    }\n  }\n  chain forward {\n    type filter hook forward priority filter; policy accept;\n    counter jump CW-x-v4\n  }\n}\n';
    const kernel = 'table inet cellwall {\n\tset cw4p-a {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval\n\t\telements = { 10.0.0.1 . tcp . 443,\n\t\t\t     10.1.0.0/16 . udp . 53 }\n\t}\n\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tcounter packets 12 bytes 3400 jump CW-x-v4\n\t}\n}\n';
    expect(nftCanon(kernel)).toEqual(nftCanon(script));
    expect(nftCanon(script)).toEqual(['S cw4p-a type ipv4_addr . inet_proto . inet_service', 'S cw4p-a flags interval',
      'E cw4p-a 10.0.0.1 . tcp . 443', 'E cw4p-a 10.1.0.0/16 . udp . 53', 'C forward',
      'R forward type filter hook forward priority filter; policy accept;', 'R forward counter jump CW-x-v4']);
    const d = diffNft(nftCanon(kernel).filter((l) => !l.includes('udp . 53')), nftCanon(script));
    expect([d.entriesAdded, d.entriesRemoved, d.rulesChanged, d.chainsAdded]).toEqual([1, 0, [], []]);
  });

  it('normalises iptables-save spellings and diffs rules, chains and entries', () => {
    expect(normalizeRule('-I FORWARD 1 -j CW-x')).toBe('-A FORWARD -j CW-x');
    expect(normalizeRule('-A CW-x -p udp -m udp --dport 53 -m comment --comment "a b" -j RETURN'))
      .toBe(normalizeRule('-A CW-x -p udp --dport 53 -m comment --comment "a b" -j RETURN'));
    expect(lineDiff(['a', 'b', 'c'], ['a', 'c', 'd'])).toEqual(['- b', '+ d']);
    const d = diffPart(
      { v4: [':CW-x', '-A CW-x -j RETURN'], v6: [], sets: ['create cw-a hash:net family inet', 'add cw-a 10.0.0.1', 'add cw-a 10.1.0.0/16'] },
      { v4: [':CW-x', ':CW-y', '-A CW-x -j CW-y', '-A CW-x -j RETURN'], v6: [], sets: ['create cw-b hash:net family inet', 'add cw-b 10.0.0.1/32', 'add cw-b 10.2.0.0/16'] });
    expect(d.chainsAdded).toEqual(['CW-y']);
    expect(d.rulesChanged).toEqual([['CW-x', 1, 2]]);
    expect([d.setsAdded, d.setsRemoved, d.entriesAdded, d.entriesRemoved]).toEqual([['cw-b'], ['cw-a'], 1, 1]);
    expect(d.text).toEqual(['+ :CW-y', '+ -A CW-x -j CW-y']);
    // compiled add lines end with -exist; ipset save prints none and drops a host's /32
    const same = diffPart({ v4: [], v6: [], sets: ['create cw4p-a hash:net,port family inet', 'add cw4p-a 10.0.0.1,tcp:443', 'add cw4p-a 10.1.0.0/16,udp:53'] },
      { v4: [], v6: [], sets: ['create cw4p-a hash:net,port family inet -exist', 'add cw4p-a 10.0.0.1/32,tcp:443 -exist', 'add cw4p-a 10.1.0.0/16,udp:53 -exist'] });
    expect([same.entriesAdded, same.entriesRemoved]).toEqual([0, 0]);
  });
});
