import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AddrSet } from '../../src/core/index.js';
import { DiagnosticsError, formatDiagnostic } from '../../src/errors.js';
import { loadPolicy, loadPolicyText, type Policy } from '../../src/policy/index.js';

const GOOD = join(import.meta.dirname, '..', 'policies', 'good');
const tmp = mkdtempSync(join(tmpdir(), 'cw-policy-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const set = (...entries: string[]) => AddrSet.of(entries);

async function errorsOf(text: string, file = 'p.yaml', baseDir = tmp): Promise<string[]> {
  try {
    await loadPolicyText(text, file, baseDir);
  } catch (e) {
    if (e instanceof DiagnosticsError) return e.diagnostics.filter((d) => d.severity === 'error').map(formatDiagnostic);
    throw e;
  }
  return [];
}

describe('the SPEC §1 example', () => {
  let p: Policy;
  beforeAll(async () => { p = await loadPolicy(join(GOOD, 'spec-example.yaml')); });

  it('loads defaults, mode and every section', () => {
    expect(p.version).toBe(1);
    expect(p.mode).toBe('tighten');
    expect(p.defaults).toEqual({ deny: 'reject', logDenied: false, established: 'accept' });
    expect([...p.networks.keys()]).toEqual(['vpc', 'overlay', 'link-local', 'internet']);
    expect([...p.securityGroups.keys()]).toEqual(['public_networks', 'dns', 'trusted_local_networks_egress', 'public_networks_egress']);
    expect([...p.groups.keys()]).toEqual(['hr', 'it', 'space-sandbox']);
    expect([...p.segments.keys()]).toEqual(['shared', 'egress-restricted-1']);
    expect(p.warnings).toEqual([]);
  });

  it('resolves network names and applies exclusions after inclusions', () => {
    const internet = p.networks.get('internet')!.set;
    const expected = set('0.0.0.0/0', '::/0').difference(set('10.0.0.0/8', '169.254.0.0/16', 'fe80::/10', 'fc00::/7'));
    expect(internet.equals(expected)).toBe(true);
    expect(internet.contains(set('8.8.8.8'))).toBe(true);
    expect(internet.contains(set('10.1.2.3'))).toBe(false);
  });

  it('keeps CF rules with resolved destinations, merged ports and locations', () => {
    const trusted = p.securityGroups.get('trusted_local_networks_egress')!.rules[0];
    expect(trusted.destination.equals(set('10.0.0.0/8'))).toBe(true);
    expect(trusted.destinationText).toBe('vpc');
    expect(trusted.ports).toEqual([{ from: 443, to: 443 }, { from: 3306, to: 3306 }, { from: 5432, to: 5432 }, { from: 6379, to: 6379 }]);
    expect(trusted.log).toBe(true);
    expect(trusted.description).toBe('brokered services');
    expect(trusted.loc).toMatchObject({ line: 23, path: 'security_groups.trusted_local_networks_egress[0]' });
    const pub = p.securityGroups.get('public_networks')!.rules[0];
    expect(pub.destination.contains(set('192.169.0.0', '11.0.0.1'))).toBe(true);
    expect(pub.destination.contains(set('10.0.0.1'))).toBe(false);
    expect(pub.destination.contains(set('192.168.1.1'))).toBe(false);
  });

  it('loads the CF rules-array JSON file with its own locations', () => {
    const sg = p.securityGroups.get('public_networks_egress')!;
    expect(sg.rules.map((r) => r.protocol)).toEqual(['tcp', 'icmp']);
    expect(sg.rules[0].ports).toEqual([{ from: 80, to: 80 }, { from: 443, to: 443 }]);
    expect(sg.rules[1]).toMatchObject({ icmpType: 0, icmpCode: -1 });
    expect(sg.rules[1].loc.file).toBe(join(GOOD, 'asgs', 'public_networks_egress.json'));
    expect(sg.rules[1].loc.line).toBe(8);
  });

  it('loads groups, segments and bindings', () => {
    expect(p.groups.get('space-sandbox')).toMatchObject({ kind: 'dynamic' });
    expect(p.groups.get('hr')!.set!.equals(set('192.168.0.0/16'))).toBe(true);
    const iso = p.segments.get('egress-restricted-1')!;
    expect(iso).toMatchObject({ egress: 'restricted', placementTags: ['egress-restricted-1'],
      cells: { instanceGroup: 'isolated-diego-cell-egress-restricted-1', instances: 3, instanceType: 'small' } });
    expect(iso.containerNetwork.equals(set('10.255.0.0/16'))).toBe(true);
    expect(iso.egressAllow!.equals(set('10.0.0.0/8'))).toBe(true);
    expect(p.segments.get('shared')!.egressAllow).toBeUndefined();
    expect(p.bindings.map((b) => [b.securityGroups, b.groups, b.phases])).toEqual([
      [['public_networks', 'dns'], null, ['running', 'staging']],
      [['trusted_local_networks_egress'], ['space-sandbox'], ['running']],
    ]);
  });

  it('loads app rules from the file and from CF policy-server JSON', () => {
    expect(p.policies.default).toBe('deny');
    expect(p.policies.rules.map((r) => [r.from, r.to, r.protocol, r.ports])).toEqual([
      ['hr', 'it', 'tcp', [{ from: 80, to: 80 }]],
      ['it', 'it', 'all', undefined],
      ['hr', 'hr', 'all', undefined],
      ['hr', 'it', 'tcp', [{ from: 8080, to: 8090 }]],
      ['it', 'hr', 'udp', [{ from: 53, to: 53 }]],
    ]);
    expect(p.policies.rules[3].loc.file).toBe(join(GOOD, 'policies.json'));
  });
});

describe('CF v3 security group objects', () => {
  it('maps globally_enabled to global bindings and relationships to groups named by space GUID', async () => {
    const p = await loadPolicy(join(GOOD, 'v3-object.yaml'));
    const space = '2f35885d-0c9d-4423-83ad-fd05066f8576';
    expect(p.bindings.map((b) => [b.securityGroups, b.groups, b.phases])).toEqual([
      [['services'], null, ['running']],
      [['services'], [space], ['running']],
    ]);
    expect(p.securityGroups.get('services')!.rules.map((r) => r.protocol)).toEqual(['tcp', 'icmp', 'icmpv6']);
    expect(p.warnings).toHaveLength(1);
    expect(formatDiagnostic(p.warnings[0])).toContain('space "ffffffff-0000-0000-0000-000000000000" is not a group of this policy');
    expect(p.warnings[0].loc.file).toBe(join(GOOD, 'asgs', 'v3-services.json'));
  });
});

describe('descriptions are data', () => {
  it('keeps quotes, newlines, $() and backticks intact', async () => {
    const p = await loadPolicy(join(GOOD, 'description-quoting.yaml'));
    expect(p.securityGroups.get('tricky')!.rules[0].description)
      .toBe('it\'s "quoted"\nsecond line $(rm -rf /) `id` ; echo pwned & \\ end');
  });
});

describe('loader behaviour', () => {
  it('lists every error, not just the first, in source order', async () => {
    const errs = await errorsOf([
      'version: 1',
      'networks:',
      '  a: [10.0.0.0./8]',
      '  b: [10.0.0.1/8]',
      'security_groups:',
      '  x: [{ protocol: tcp, destination: a, ports: "0" }]',
      'mode: loose',
    ].join('\n'));
    expect(errs).toHaveLength(4);
    expect(errs.map((e) => e.split(': ')[0])).toEqual(['p.yaml:3:7', 'p.yaml:4:7', 'p.yaml:6:47', 'p.yaml:7:7']);
  });

  it('accepts host bits with strict: false and masks them', async () => {
    const p = await loadPolicyText('version: 1\nstrict: false\nnetworks:\n  vpc: [10.0.0.1/8]\n', 'p.yaml');
    expect(p.networks.get('vpc')!.set.equals(set('10.0.0.0/8'))).toBe(true);
    expect(await errorsOf('version: 1\nnetworks:\n  vpc: [10.0.0.1/8]\n')).toHaveLength(1);
  });

  it('applies exclusions after all inclusions, whatever their order', async () => {
    const p = await loadPolicyText('version: 1\nnetworks:\n  n: ["!10.1.0.0/16", 10.0.0.0/8, "!10.2.0.0/16", 10.1.0.0/16]\n', 'p.yaml');
    expect(p.networks.get('n')!.set.equals(set('10.0.0.0/8').difference(set('10.1.0.0/16', '10.2.0.0/16')))).toBe(true);
  });

  it('resolves YAML anchors and aliases', async () => {
    const p = await loadPolicyText([
      'version: 1',
      'security_groups:',
      '  a: &rules [{ protocol: udp, destination: 192.0.2.0/24, ports: "53" }]',
      '  b: *rules',
    ].join('\n'), 'p.yaml');
    expect(p.securityGroups.get('b')!.rules[0].destination.equals(set('192.0.2.0/24'))).toBe(true);
  });

  it('reports an alias bomb instead of expanding it', async () => {
    const lines = ['version: 1', 'x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]'];
    for (let i = 1; i < 8; i++) lines.push(`x${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]`);
    const errs = await errorsOf(lines.join('\n'));
    expect(errs.some((e) => e.includes('alias'))).toBe(true);
  });

  it('reads a policy written in JSON with line:col', async () => {
    const errs = await errorsOf('{\n  "version": 1,\n  "networks": {"vpc": ["10.0.0.0/33"]}\n}\n', 'p.json');
    expect(errs).toHaveLength(1);
    expect(errs[0]).toMatch(/^p\.json:3:24: error: networks\.vpc\[0\]: invalid address "10\.0\.0\.0\/33"/);
  });

  it('resolves CF JSON paths against baseDir', async () => {
    mkdirSync(join(tmp, 'cf'), { recursive: true });
    writeFileSync(join(tmp, 'cf', 'dns.json'), '[{"protocol":"udp","destination":"192.0.2.53","ports":"53"}]');
    const p = await loadPolicyText('version: 1\nsecurity_groups:\n  dns: cf/dns.json\n', 'inline.yaml', tmp);
    expect(p.securityGroups.get('dns')!.rules[0].destination.equals(set('192.0.2.53'))).toBe(true);
  });

  it('accepts ports written with spaces, and integer ports in app rules', async () => {
    const p = await loadPolicyText([
      'version: 1',
      'security_groups:',
      '  w: [{ protocol: tcp, destination: 10.0.0.0/8, ports: "443, 80 ,8080" }, { protocol: udp, destination: 10.0.0.0/8, ports: " 1000 - 2000 " }]',
      'groups: { g: { members: dynamic } }',
      'policies:',
      '  default: allow',
      '  rules: [{ from: g, to: g, protocol: tcp, ports: 8080 }, { from: g, to: g, protocol: icmp }]',
    ].join('\n'), 'p.yaml');
    const [a, b] = p.securityGroups.get('w')!.rules;
    expect(a.ports).toEqual([{ from: 80, to: 80 }, { from: 443, to: 443 }, { from: 8080, to: 8080 }]);
    expect(b.ports).toEqual([{ from: 1000, to: 2000 }]);
    expect(p.policies.default).toBe('allow');
    expect(p.policies.rules[0].ports).toEqual([{ from: 8080, to: 8080 }]);
    expect(p.policies.rules[1]).toMatchObject({ protocol: 'icmp', icmpType: -1, icmpCode: -1 });
  });

  it('restricts a network destination of an icmp rule to IPv4', async () => {
    const p = await loadPolicyText([
      'version: 1',
      'networks: { ll: [169.254.0.0/16, "fe80::/10"] }',
      'security_groups:',
      '  p: [{ protocol: icmp, destination: ll, type: -1, code: -1 }]',
    ].join('\n'), 'p.yaml');
    expect(p.securityGroups.get('p')!.rules[0].destination.equals(set('169.254.0.0/16'))).toBe(true);
  });

  it('unites a literal destination list of an icmp/icmpv6 rule, and names the entry of the wrong family', async () => {
    const p = await loadPolicyText([
      'version: 1',
      'security_groups:',
      '  p: [{ protocol: icmp, destination: "192.0.2.0/25,192.0.2.128-192.0.2.255,198.51.100.7", type: 8, code: 0 },',
      '      { protocol: icmpv6, destination: "2001:db8::/33,2001:db8:8000::/33", type: 128, code: 0 }]',
    ].join('\n'), 'p.yaml');
    const [v4, v6] = p.securityGroups.get('p')!.rules;
    expect(v4.destination.equals(set('192.0.2.0/24', '198.51.100.7'))).toBe(true);
    expect(v6.destination.equals(set('2001:db8::/32'))).toBe(true);
    const errs = await errorsOf('version: 1\nsecurity_groups:\n  p: [{ protocol: icmp, destination: "192.0.2.0/25,2001:db8::1,198.51.100.7", type: 8, code: 0 }]\n');
    expect(errs).toEqual([expect.stringMatching(/^p\.yaml:3:52: error: security_groups\.p\[0\]\.destination: IPv6 destination "2001:db8::1" in an icmp rule/)]);
  });

  it('warns (does not fail) on type/code for a tcp rule, as Cloud Controller accepts them', async () => {
    const p = await loadPolicyText('version: 1\nsecurity_groups:\n  w: [{ protocol: tcp, destination: 10.0.0.0/8, ports: "80", type: 8 }]\n', 'p.yaml');
    expect(p.warnings.map(formatDiagnostic)).toEqual([expect.stringContaining('type is ignored for protocol tcp')]);
  });

  it('warns about overlapping and empty static groups', async () => {
    const p = await loadPolicyText([
      'version: 1',
      'groups:',
      '  a: { networks: [10.0.0.0/8] }',
      '  b: { networks: [10.1.0.0/16, 192.0.2.0/24] }',
      '  c: { networks: ["10.0.0.0/8", "!10.0.0.0/8"] }',
      '  d: { networks: [192.168.0.0/16] }',
    ].join('\n'), 'p.yaml');
    expect(p.warnings.map(formatDiagnostic)).toEqual([
      expect.stringMatching(/^p\.yaml:4:3: warning: groups\.b: static groups "a" \(p\.yaml:3:3\) and "b" overlap \(e\.g\. 10\.1\.0\.0\/16\)/),
      expect.stringMatching(/^p\.yaml:5:3: warning: groups\.c: group "c" has no addresses/),
    ]);
  });

  it('names the file, line and column of errors inside CF policy-server JSON', async () => {
    writeFileSync(join(tmp, 'pol.json'), '{"policies":[{"source":{"id":"a"},"destination":{"id":"zz","protocol":"tcp","ports":{"start":1,"end":2}}}]}');
    const errs = await errorsOf('version: 1\ngroups: { a: { members: dynamic } }\npolicies: { from_cf: pol.json }\n');
    expect(errs).toEqual([expect.stringMatching(/^.*pol\.json:1:55: error: policies\[0\]\.destination\.id: undefined group "zz"/)]);
  });
});

describe('Policy.hash', () => {
  const block = 'version: 1\nnetworks:\n  vpc:\n    - 10.0.0.0/8\nsecurity_groups:\n  dns: cf/dns.json\n';
  const flow = '{ "security_groups": {"dns": "cf/dns.json"}, "networks": {"vpc": ["10.0.0.0/8"]}, "version": 1 }  # reformatted\n';

  it('does not change when the YAML is reformatted', async () => {
    mkdirSync(join(tmp, 'cf'), { recursive: true });
    writeFileSync(join(tmp, 'cf', 'dns.json'), '[{"protocol":"udp","destination":"192.0.2.53","ports":"53"}]');
    const a = await loadPolicyText(block, 'a.yaml', tmp);
    const b = await loadPolicyText(flow, 'b.yaml', tmp);
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(b.hash).toBe(a.hash);
  });

  it('is the same for a JSON policy as before the JSON fast path (the hash names kernel objects)', async () => {
    mkdirSync(join(tmp, 'pin', 'cf'), { recursive: true });
    writeFileSync(join(tmp, 'pin', 'cf', 'dns.json'), '[{"protocol":"udp","destination":"192.0.2.53","ports":"53"}]');
    const json = [
      '{',
      '  "version": 1,',
      '  "networks": {"vpc": ["10.0.0.0/8"], "z": ["192.0.2.0/24", "2001:db8::/32"]},',
      '  "security_groups": {"dns": "cf/dns.json", "web": [{"protocol": "tcp", "destination": "vpc,198.51.100.0/24", "ports": "443, 80", "description": "web \\"tier\\" caf\\u00e9", "log": true}]},',
      '  "strict": true',
      '}',
    ].join('\n');
    // computed by the loader of commit 67fc1a5 (YAML parser, canonical JSON of doc.toJS())
    expect((await loadPolicyText(json, 'p.json', join(tmp, 'pin'))).hash).toBe('ba930c7068fab30419fa466fa7d679182f49fdaae8e0bcf6a811f5e334ba0bb6');
  });

  it('changes with the content, including the CF JSON files it loads', async () => {
    const before = await loadPolicyText(block, 'a.yaml', tmp);
    const edited = await loadPolicyText(block.replace('10.0.0.0/8', '10.0.0.0/9'), 'a.yaml', tmp);
    expect(edited.hash).not.toBe(before.hash);
    writeFileSync(join(tmp, 'cf', 'dns.json'), '[{"protocol":"udp","destination":"192.0.2.54","ports":"53"}]');
    const cfEdited = await loadPolicyText(block, 'a.yaml', tmp);
    expect(cfEdited.hash).not.toBe(before.hash);
  });
});
