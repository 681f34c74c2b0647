import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { runCompile, runExplain } from '../../src/compile/cli.js';
import { sha256 } from '../../src/compile/util.js';
import { CellwallError } from '../../src/errors.js';
import { ctx } from '../helpers/cli-ctx.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const POLICY = join(ROOT, 'examples', 'cellwall.yaml');


const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('cellwall compile', () => {
  it('--out writes exactly the four files, byte-identical on a second run, manifest hashes match', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-compile-'));
    dirs.push(dir);
    const a = ctx();
    expect(await runCompile(POLICY, { segment: 'egress-restricted-1', out: dir }, a.ctx)).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['ipset.restore', 'iptables.v4', 'iptables.v6', 'manifest.json']);
    expect(a.out.stdout).toMatch(/IPv4: \d+ rules in \d+ chains, \d+ sets, \d+ set entries/);
    const first = Object.fromEntries(readdirSync(dir).map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    await runCompile(POLICY, { segment: 'egress-restricted-1', out: dir }, ctx().ctx);
    for (const f of Object.keys(first)) expect(readFileSync(join(dir, f), 'utf8')).toBe(first[f]);
    const m = JSON.parse(first['manifest.json']);
    for (const f of ['ipset.restore', 'iptables.v4', 'iptables.v6']) expect(m.files[f].sha256).toBe(sha256(first[f]));
    expect(m.segment).toBe('egress-restricted-1');
    expect(m.v4.sourceMap.length).toBe(m.v4.counts.rules - 1);
    expect(m.v4.sourceMap[0].locs[0].at).toMatch(/^cellwall\.yaml:\d+:\d+$/);
  });

  it('--json summary', async () => {
    const c = ctx();
    await runCompile(POLICY, { segment: 'shared', json: true }, c.ctx);
    const j = JSON.parse(c.out.stdout);
    expect(j.counts.v4.rules).toBeGreaterThan(0);
    expect(j.out).toBeNull();
  });

  it('unknown segment and unsupported backends are clear errors', async () => {
    await expect(runCompile(POLICY, { segment: 'nope' }, ctx().ctx)).rejects.toThrow(/unknown segment "nope" \(segments in .*: shared, egress-restricted-1\)/);
    await expect(runCompile(POLICY, { segment: 'shared', backend: 'bogus' }, ctx().ctx)).rejects.toThrow(/unknown backend "bogus"/);
    await expect(runCompile(POLICY, { segment: 'shared', backend: 'pf' }, ctx().ctx)).rejects.toThrow(CellwallError);
  });

  it('as a process: exit 1 with a one-line message, no stack', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'cellwall.js'), 'compile', POLICY, '--segment', 'nope'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^cellwall: unknown segment "nope"/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('cellwall explain', () => {
  it('restricted segment: running app to the internet is denied at step 3 with the policy location', async () => {
    const c = ctx();
    await runExplain(POLICY, { segment: 'egress-restricted-1', src: '10.255.0.5', dst: '8.8.8.8', proto: 'udp', port: '53' }, c.ctx);
    expect(c.out.stdout).toMatch(/^verdict: deny \(REJECT/);
    expect(c.out.stdout).toMatch(/decided by step 3 \(segment egress\)/);
    expect(c.out.stdout).toMatch(/from cellwall\.yaml:\d+:\d+ segments\.egress-restricted-1/);
    expect(c.out.stdout).toMatch(/-A CW-\S+ .*--reject-with icmp-port-unreachable/);
  });

  it('--json: a space member reaching brokered services is allowed by the logged ASG', async () => {
    const c = ctx();
    await runExplain(POLICY, { segment: 'egress-restricted-1', src: '10.255.0.5', dst: '10.0.0.10', proto: 'tcp', port: '5432', member: ['space-sandbox'], json: true }, c.ctx);
    const j = JSON.parse(c.out.stdout);
    expect(j).toMatchObject({ verdict: 'allow', target: 'RETURN', step: 4 });
    expect(j.logged).toEqual(['CW-ALLOW egress-restricted-1 ']);
    expect(j.locs[0].path).toMatch(/^security_groups\.trusted_local_networks_egress\[0\]/);
    expect(j.trace.at(-1).iptables).toMatch(/-j RETURN$/);
  });

  it('--dst-member: an app container of a dynamic group as the destination (app-to-app, step 2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-explain-'));
    dirs.push(dir);
    const file = join(dir, 'apps.yaml');
    writeFileSync(file, [
      'version: 1', 'mode: enforce',
      'networks: { overlay: [10.255.0.0/16] }',
      'security_groups: { web: [ { protocol: tcp, destination: 0.0.0.0/0, ports: "8080" } ] }',
      'groups: { frontend: { members: dynamic }, backend: { members: dynamic } }',
      'segments: { shared: { container_network: overlay, egress: open } }',
      'bindings: [ { security_groups: [web], phase: [running] } ]',
      'policies: { default: deny, rules: [ { from: frontend, to: backend, protocol: tcp, ports: "8080" } ] }',
    ].join('\n'));
    const explain = async (o: Record<string, unknown>) => {
      const c = ctx();
      await runExplain(file, { segment: 'shared', src: '10.255.0.2', dst: '10.255.0.3', proto: 'tcp', port: '8080', member: ['frontend'], json: true, ...o }, c.ctx);
      return JSON.parse(c.out.stdout) as { verdict: string; step: number; what: string; dstMembers?: string[]; dstPhase?: string };
    };
    // the destination in backend's running or staging member set: the policy allows it
    expect(await explain({ dstMember: ['backend'] })).toMatchObject({ verdict: 'allow', step: 2, what: 'policy frontend -> backend tcp 8080', dstMembers: ['backend'], dstPhase: 'running' });
    expect(await explain({ dstMember: ['backend'], dstPhase: 'staging' })).toMatchObject({ verdict: 'allow', step: 2 });
    // another port, another group, or no membership: the policies' default deny (the ASG allowing 8080 is never reached)
    expect(await explain({ dstMember: ['backend'], port: '8081' })).toMatchObject({ verdict: 'deny', step: 2 });
    expect(await explain({ dstMember: ['frontend'] })).toMatchObject({ verdict: 'deny', step: 2, what: 'policies.default deny' });
    const none = await explain({});
    expect(none).toMatchObject({ verdict: 'deny', step: 2 });
    expect(none.dstMembers).toBeUndefined();
    await expect(explain({ dstMember: ['overlay'] })).rejects.toThrow(/--dst-member "overlay": not a dynamic group .*follows from --dst/);
    await expect(explain({ dstPhase: 'staging' })).rejects.toThrow(/--dst-phase needs --dst-member/);
    await expect(explain({ dstMember: ['backend'], dstPhase: 'later' })).rejects.toThrow(/--dst-phase: expected running or staging/);
  });

  it('ungoverned sources are untouched; bad queries are clear errors', async () => {
    const c = ctx();
    await runExplain(POLICY, { segment: 'shared', src: '172.16.0.1', dst: '8.8.8.8', proto: 'tcp', port: '443', json: true }, c.ctx);
    expect(JSON.parse(c.out.stdout)).toMatchObject({ verdict: 'untouched', step: null });
    await expect(runExplain(POLICY, { segment: 'shared', src: '10.255.0.1', dst: '8.8.8.8', phase: 'staging' }, ctx().ctx)).rejects.toThrow(/--phase staging needs --member/);
    await expect(runExplain(POLICY, { segment: 'shared', src: '10.255.0.1', dst: '8.8.8.8', member: ['hr'], port: '1' }, ctx().ctx)).rejects.toThrow(/not a dynamic group/);
    await expect(runExplain(POLICY, { segment: 'shared', src: '10.255.0.1', dst: '8.8.8.8', proto: 'tcp' }, ctx().ctx)).rejects.toThrow(/--port N is required/);
    await expect(runExplain(POLICY, { segment: 'shared', src: '10.255.0.1', dst: '2001:db8::1', port: '1' }, ctx().ctx)).rejects.toThrow(/different address families/);
    await expect(runExplain(POLICY, { segment: 'shared', src: 'fd00::1', dst: '2001:db8::1', proto: 'icmp' }, ctx().ctx)).rejects.toThrow(/icmpv6/);
  });
});
