/**
 * The BOSH job's scripts, rendered with real ERB (test/bosh/render.rb), run in
 * a cwt-* cell namespace with VCAP_ROOT pointing at a temp dir: pre-start
 * twice (idempotent), post-start after a simulated silk wipe of the filter
 * table, and the monit process (cellwall_ctl start: apply --watch) repairing
 * a wipe, then stopped.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelGate } from '../helpers/caps.js';
import { Topology } from '../kernel/netns.js';
import { stateHashes, type StateHashes } from '../../src/state/index.js';
import { cwPartOf, parseSave } from '../../src/state/iptables.js';
import { cwSets, parseIpset } from '../../src/state/ipset.js';

const kernel = kernelGate(['ip', 'iptables-restore', 'ip6tables-restore', 'iptables-save', 'ipset', 'flock', 'ruby', 'setsid']);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const JOB = join(ROOT, 'bosh', 'jobs', 'cellwall');

const POLICY = `version: 1
mode: tighten
defaults: { deny: reject, log_denied: false, established: accept }
networks:
  overlay: [10.255.0.0/16]
security_groups:
  db:
    - { protocol: tcp, destination: 10.0.0.0/8, ports: "5432" }
  dns:
    - { protocol: udp, destination: 0.0.0.0/0, ports: "53" }
segments:
  shared: { container_network: overlay, egress: open }
bindings:
  - { security_groups: [db, dns], phase: [running, staging] }
`;

const SILK_WIPE = '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n';

describe.skipIf(kernel.skip)('BOSH job scripts on a cell (kernel)', () => {
  let t: Topology;
  let vcap: string;
  let env: string[];
  beforeAll(async () => {
    vcap = mkdtempSync(join(tmpdir(), 'cwt-bosh-'));
    const props = join(vcap, 'props.json');
    writeFileSync(props, JSON.stringify({ cellwall: { policy: POLICY, segment: 'shared', watch_interval: 1 } }));
    execFileSync('ruby', [join(ROOT, 'test', 'bosh', 'render.rb'), JOB, props, join(vcap, 'jobs', 'cellwall')]);
    const bin = join(vcap, 'cellwall');
    writeFileSync(bin, `#!/bin/sh\nexec ${process.execPath} ${join(ROOT, 'bin', 'cellwall.js')} "$@"\n`);
    chmodSync(bin, 0o755);
    writeFileSync(join(vcap, 'silk-wipe.rules'), SILK_WIPE);
    env = ['env', `VCAP_ROOT=${vcap}`, `CELLWALL_BIN=${bin}`];
    t = await Topology.create();
  });
  afterAll(async () => {
    if (t && vcap) await t.exec(t.cell, [...env, 'bash', join(vcap, 'jobs/cellwall/bin/cellwall_ctl'), 'stop']);
    await t?.destroy();
    if (vcap) rmSync(vcap, { recursive: true, force: true });
  });

  const script = (name: string, ...args: string[]) => t.exec(t.cell, [...env, 'bash', join(vcap, 'jobs/cellwall/bin', name), ...args], 90_000);
  const wipe = () => t.cellExec(['iptables-restore', join(vcap, 'silk-wipe.rules')]);

  async function hashes(): Promise<StateHashes> {
    const [s4, s6, ips] = await Promise.all([
      t.cellExec(['iptables-save', '-t', 'filter']), t.cellExec(['ip6tables-save', '-t', 'filter']), t.cellExec(['ipset', 'save']),
    ]);
    return stateHashes({ v4: cwPartOf(parseSave(s4).get('filter'), 4), v6: cwPartOf(parseSave(s6).get('filter'), 6), sets: cwSets(parseIpset(ips).sets) });
  }
  /** the policy lets the VPC database through and refuses the web */
  async function enforced(): Promise<boolean> {
    const [db, web] = await Promise.all([t.tcp('10.255.0.2', '10.0.0.10', 5432), t.tcp('10.255.0.3', '203.0.113.10', 80)]);
    return db.outcome === 'ok' && web.outcome === 'refused';
  }

  it('pre-start twice, post-start after a silk wipe, monit process repairs a wipe and stops', async () => {
    const first = await script('pre-start');
    expect(first.code, readFileSync(join(vcap, 'sys/log/cellwall/pre-start.log'), 'utf8')).toBe(0);
    const applied = await hashes();
    expect(await enforced()).toBe(true);
    expect((await script('pre-start')).code).toBe(0);
    expect(await hashes()).toEqual(applied);

    await wipe();
    expect(await hashes()).not.toEqual(applied);
    expect(await enforced()).toBe(false);
    const post = await script('post-start');
    const postLog = readFileSync(join(vcap, 'sys/log/cellwall/post-start.log'), 'utf8');
    expect(post.code, postLog).toBe(0);
    expect(postLog).toContain('post-start: verified');
    expect(await hashes()).toEqual(applied);
    expect(await enforced()).toBe(true);

    expect((await script('cellwall_ctl', 'start')).code).toBe(0);
    const pid = Number(readFileSync(join(vcap, 'sys/run/cellwall/cellwall.pid'), 'utf8'));
    expect((await script('cellwall_ctl', 'start')).code).toBe(0); // idempotent: same process
    expect(Number(readFileSync(join(vcap, 'sys/run/cellwall/cellwall.pid'), 'utf8'))).toBe(pid);
    await new Promise((r) => setTimeout(r, 1500));
    await wipe();
    let repaired = false;
    for (let i = 0; i < 40 && !repaired; i++) {
      await new Promise((r) => setTimeout(r, 500));
      repaired = JSON.stringify(await hashes()) === JSON.stringify(applied);
    }
    expect(repaired, readFileSync(join(vcap, 'sys/log/cellwall/cellwall.stderr.log'), 'utf8')).toBe(true);
    expect(await enforced()).toBe(true);

    expect((await script('cellwall_ctl', 'stop')).code).toBe(0);
    expect(existsSync(join(vcap, 'sys/run/cellwall/cellwall.pid'))).toBe(false);
    let alive = true;
    try { process.kill(pid, 0); } catch { alive = false; }
    expect(alive).toBe(false);
  }, 120_000);
});
