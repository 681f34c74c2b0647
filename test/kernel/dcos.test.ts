/**
 * Scenario 3 (DC/OS overlay isolation, IT/HR), in the kernel:
 * examples/dcos-it-hr.yaml in enforce mode with drop. Four container
 * namespaces (two per virtual network) so that traffic inside a network is
 * forwarded by the cell too. The platform's FORWARD policy is DROP with no
 * rule of its own: everything that passes was ACCEPTed by cellwall,
 * replies included. See docs/scenarios.md.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { Topology, type SideSpec } from './netns.js';
import { compile, EXAMPLES, explain, expectProbes, type Compiled } from './cli.js';
import { logRules } from './payload.js';

const kernel = kernelGate();
const POLICY = join(EXAMPLES, 'dcos-it-hr.yaml');

const side = (role: string, v4: string, v6: string): SideSpec => ({
  role,
  nets: [
    { gw: `${v4}.1/24`, hosts: [`${v4}.10`] },
    { gw: `${v6}::1/64`, hosts: [`${v6}::10`] },
  ],
});
const SIDES = [
  side('hr1', '192.168.1', 'fd00:168:0:1'),
  side('hr2', '192.168.2', 'fd00:168:0:2'),
  side('it1', '10.150.1', 'fd00:150:0:1'),
  side('it2', '10.150.2', 'fd00:150:0:2'),
];
const HR1 = '192.168.1.10', HR2 = '192.168.2.10', IT1 = '10.150.1.10', IT2 = '10.150.2.10';
const HR1v6 = 'fd00:168:0:1::10', HR2v6 = 'fd00:168:0:2::10', IT1v6 = 'fd00:150:0:1::10', IT2v6 = 'fd00:150:0:2::10';

describe.skipIf(kernel.skip)('scenario 3: DC/OS IT/HR overlay isolation (kernel, enforce + drop)', () => {
  let t: Topology;
  let c: Compiled;

  beforeAll(async () => {
    t = await Topology.create(SIDES);
    c = await compile(POLICY, 'dcos-agents');
    await t.load(c.dir);
    await t.platform({ policy: 'DROP' });
  });
  afterAll(async () => {
    await t?.destroy();
    c?.cleanup();
  });

  it('enforce mode: allowed traffic is ACCEPTed by cellwall, denied is dropped after a LOG', () => {
    for (const text of [c.v4, c.v6]) {
      expect(text).toMatch(/-j ACCEPT/);
      expect(text).not.toMatch(/-j RETURN/);
      const deny = logRules(text).filter((l) => l.prefix === 'CW-DENY dcos-agents ');
      expect(deny.length).toBeGreaterThan(0);
      for (const l of deny) expect(l.next?.verdict).toBe('DROP');
    }
  });

  it('HR -> IT on tcp/80 is allowed and the replies come back', async () => {
    await expectProbes(t, [
      ['tcp', HR1, IT1, 80, 'ok'],
      ['tcp', HR2, IT2, 80, 'ok'],
      ['tcp', HR1v6, IT2v6, 80, 'ok'],
    ]);
  });

  it('within each network everything is allowed (tcp, udp, icmp; v4 and v6)', async () => {
    await expectProbes(t, [
      ['tcp', HR1, HR2, 443, 'ok'],
      ['udp', HR2, HR1, 53, 'ok'],
      ['icmp', HR1, HR2, null, 'ok'],
      ['tcp', IT1, IT2, 5432, 'ok'],
      ['udp', IT2, IT1, 53, 'ok'],
      ['icmp', IT1v6, IT2v6, null, 'ok'],
      ['tcp', HR2v6, HR1v6, 8080, 'ok'],
    ]);
  });

  it('IT -> HR is dropped, and HR -> IT on anything but tcp/80 too', async () => {
    // drops are timeouts: a handful, run together
    await expectProbes(t, [
      ['tcp', IT1, HR1, 80, 'timeout'],
      ['icmp', IT2v6, HR1v6, null, 'timeout'],
      ['tcp', HR1, IT1, 443, 'timeout'],
      ['udp', HR2, IT1, 80, 'timeout'],
    ]);
  });

  it('without the ESTABLISHED short-circuit the replies IT -> HR are dropped (the rule is what lets them back)', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-dcos-'));
    const file = join(tmp, 'dcos-no-established.yaml');
    const text = readFileSync(POLICY, 'utf8');
    expect(text).toMatch(/established: accept/);
    writeFileSync(file, text.replace('established: accept', 'established: none'));
    const none = await compile(file, 'dcos-agents');
    try {
      await t.reset();
      await t.load(none.dir);
      await t.platform({ policy: 'DROP' });
      // explain agrees: the SYN-ACK from IT to HR is a new IT -> HR packet, denied
      const reply = await explain(file, { segment: 'dcos-agents', src: IT1, dst: HR1, proto: 'tcp', port: 80 });
      expect(reply.verdict).toBe('deny');
      await expectProbes(t, [
        ['tcp', HR1, IT1, 80, 'timeout'],
        ['tcp', IT1, IT2, 443, 'ok'],
      ]);
    } finally {
      none.cleanup();
      rmSync(tmp, { recursive: true, force: true });
      // back to the example for any later test
      await t.reset();
      await t.load(c.dir);
      await t.platform({ policy: 'DROP' });
    }
  });
});
