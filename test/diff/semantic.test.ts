/**
 * `cellwall diff` semantics on real policy text: policies written differently
 * that mean the same are equal; real changes are reported precisely.
 */
import { describe, expect, it } from 'vitest';
import { compileSegment } from '../../src/compile/index.js';
import { AddrSet } from '../../src/core/index.js';
import { diffPlans, type SemanticChange } from '../../src/diff/semantic.js';
import { loadPolicyText } from '../../src/policy/index.js';

const BASE = `
version: 1
mode: tighten
defaults: { deny: reject, log_denied: false, established: accept }
networks:
  vpc: [10.0.0.0/8]
  overlay: [10.255.0.0/16]
security_groups:
  web:
    - { protocol: tcp, destination: 203.0.113.0/24, ports: "80,443" }
    - { protocol: tcp, destination: 203.0.113.0/24, ports: "8080-8082" }
  db:
    - { protocol: tcp, destination: "172.16.0.0/12,10.0.0.0/8", ports: "5432" }
    - { protocol: udp, destination: 10.1.0.0/16, ports: "53" }
  extra:
    - { protocol: tcp, destination: 198.51.100.0/24, ports: "22" }
groups:
  hr: { networks: [192.168.0.0/16] }
  sandbox: { members: dynamic }
segments:
  shared:
    container_network: overlay
    egress: open
bindings:
  - { security_groups: [web, db], phase: [running, staging] }
  - { security_groups: [extra], groups: [sandbox], phase: running }
policies:
  default: deny
  rules:
    - { from: hr, to: hr }
`;

/** the same meaning, written differently */
const SAME = `
version: 1
mode: tighten
defaults: { deny: reject, log_denied: false, established: accept }
networks:
  vpc-low: [10.0.0.0/9]
  vpc-high: [10.128.0.0-10.255.255.255]
  overlay: [10.255.0.0-10.255.127.255, 10.255.128.0/17]
security_groups:
  extra:
    - { protocol: tcp, destination: 198.51.100.0-198.51.100.255, ports: "22" }
  db-udp:
    - { protocol: udp, destination: "10.1.0.0/17,10.1.128.0/17", ports: "53" }
  web-b:
    - { protocol: tcp, destination: "203.0.113.128/25", ports: "8082,8081,8080,443" }
    - { protocol: tcp, destination: "203.0.113.0/25", ports: "8080-8082" }
    - { protocol: tcp, destination: "203.0.113.0/25", ports: "443" }
  web-a:
    - { protocol: tcp, destination: 203.0.113.0/24, ports: "80" }
  db-tcp:
    - { protocol: tcp, destination: "vpc-high,vpc-low", ports: "5432" }
    - { protocol: tcp, destination: "172.16.0.0/13,172.24.0.0/13", ports: "5432" }
groups:
  sandbox: { members: dynamic }
  hr: { networks: [192.168.0.0/17, 192.168.128.0/17] }
segments:
  shared:
    container_network: overlay
    egress: open
bindings:
  - { security_groups: [extra], groups: [sandbox], phase: running }
  - { security_groups: [db-tcp, web-b, db-udp], phase: [staging, running] }
  - { security_groups: [web-a], phase: [running] }
  - { security_groups: [web-a], phase: [staging] }
policies:
  default: deny
  rules:
    - { from: hr, to: hr }
`;

async function plan(text: string, name: string) {
  const policy = await loadPolicyText(text, `/policies/${name}.yaml`, '/policies');
  return compileSegment(policy, 'shared').plan;
}

async function diff(a: string, b: string): Promise<SemanticChange[]> {
  return diffPlans(await plan(a, 'old'), await plan(b, 'new'));
}

const union = (cs: SemanticChange[], f: (c: SemanticChange) => string[]) => AddrSet.of(cs.flatMap(f));
const GOVERNED = AddrSet.of(['10.255.0.0/16', '192.168.0.0/16']);

describe('semantic diff', () => {
  it('finds two policies written differently equal', async () => {
    expect(await diff(BASE, SAME)).toEqual([]);
    expect(await diff(SAME, BASE)).toEqual([]);
  });

  it('reports a port added, only for that port and destination', async () => {
    const cs = await diff(BASE, BASE.replace('"80,443"', '"80,443,8443"'));
    expect(cs.length).toBeGreaterThan(0);
    for (const c of cs) {
      expect([c.family, c.services, c.dst, c.from, c.to, c.established]).toEqual([4, ['tcp 8443'], ['203.0.113.0/24'], 'deny', 'allow', false]);
    }
    // every governed source, in both phases
    const plain = cs.filter((c) => c.source === 'no dynamic group');
    expect(union(plain, (c) => c.src).equals(GOVERNED)).toBe(true);
    expect(new Set(cs.map((c) => c.source))).toEqual(new Set(['no dynamic group', 'running member of sandbox', 'staging member of sandbox']));
  });

  it('reports a CIDR removed', async () => {
    const cs = await diff(BASE, BASE.replace('"172.16.0.0/12,10.0.0.0/8"', '"10.0.0.0/8"'));
    expect(cs.length).toBeGreaterThan(0);
    for (const c of cs) expect([c.services, c.dst, c.from, c.to]).toEqual([['tcp 5432'], ['172.16.0.0/12'], 'allow', 'deny']);
  });

  it('reports a segment made restricted: running traffic outside egress_allow becomes denied', async () => {
    const cs = await diff(BASE, BASE.replace('egress: open', 'egress: restricted\n    egress_allow: [vpc]'));
    expect(cs.length).toBeGreaterThan(0);
    for (const c of cs) {
      expect([c.from, c.to]).toEqual(['allow', 'deny']);
      expect(c.source).not.toMatch(/^staging/);
      expect(AddrSet.of(['10.0.0.0/8']).intersect(AddrSet.of(c.dst)).isEmpty()).toBe(true);
    }
    const dsts = union(cs, (c) => c.dst);
    expect(dsts.equals(AddrSet.of(['203.0.113.0/24', '172.16.0.0/12', '198.51.100.0/24']))).toBe(true);
  });

  it('reports a binding moved from running to staging, for that group only', async () => {
    const cs = await diff(BASE, BASE.replace('groups: [sandbox], phase: running', 'groups: [sandbox], phase: staging'));
    const got = cs.map((c) => [c.source, c.services, c.dst, c.from, c.to, c.src]).sort();
    expect(got).toEqual([
      ['running member of sandbox', ['tcp 22'], ['198.51.100.0/24'], 'allow', 'deny', ['0.0.0.0/0']],
      ['staging member of sandbox', ['tcp 22'], ['198.51.100.0/24'], 'deny', 'allow', ['0.0.0.0/0']],
    ].sort());
  });

  it('reports a change of the established default as a change of replies only', async () => {
    const cs = await diff(BASE, BASE.replace('established: accept', 'established: none'));
    expect(cs.length).toBeGreaterThan(0);
    expect(cs.every((c) => c.established)).toBe(true);
  });
});
