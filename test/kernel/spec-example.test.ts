/**
 * The SPEC §1 example in full (examples/cellwall.yaml, with its CF JSON files
 * asgs/public_networks_egress.json and policies.json), segment
 * egress-restricted-1, in the kernel: static groups hr and it, the dynamic
 * group space-sandbox, CF policy-server rules from `from_cf`.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { dynamicSetName } from '../../src/policy/names.js';
import { Topology, type SideSpec } from './netns.js';
import { compile, EXAMPLES, expectProbes, type Compiled } from './cli.js';

const kernel = kernelGate();
const POLICY = join(EXAMPLES, 'cellwall.yaml');

const v4 = (role: string, gw: string, hosts: string[]): SideSpec => ({ role, nets: [{ gw, hosts }] });
const SIDES = [
  v4('app', '10.255.0.1/16', ['10.255.0.2', '10.255.0.3']),
  v4('hr', '192.168.1.1/24', ['192.168.1.10']),
  v4('it', '10.150.1.1/24', ['10.150.1.10']),
  v4('vpc', '10.0.0.1/24', ['10.0.0.10']),
  v4('inet', '203.0.113.1/24', ['203.0.113.10']),
];
const APP = '10.255.0.2';
const SANDBOX = '10.255.0.3'; // space-sandbox, running
const HR = '192.168.1.10';
const IT = '10.150.1.10';
const VPC = '10.0.0.10';
const NET = '203.0.113.10';

describe.skipIf(kernel.skip)('SPEC §1 example, segment egress-restricted-1 (kernel)', () => {
  let t: Topology;
  let c: Compiled;

  beforeAll(async () => {
    t = await Topology.create(SIDES);
    c = await compile(POLICY, 'egress-restricted-1');
    await t.load(c.dir);
    await t.platform({ policy: 'DROP', after: [['-j', 'ACCEPT']] });
    await t.cellExec(['ipset', 'add', dynamicSetName('space-sandbox', 'running', 4), SANDBOX]);
  });
  afterAll(async () => {
    await t?.destroy();
    c?.cleanup();
  });

  it('ASGs per group and phase, under the segment restriction', async () => {
    await expectProbes(t, [
      // trusted_local_networks_egress is bound to space-sandbox (running) only
      ['tcp', SANDBOX, VPC, 5432, 'ok'],
      ['tcp', APP, VPC, 5432, 'refused'],
      // dns is global
      ['udp', APP, VPC, 53, 'ok'],
      ['tcp', SANDBOX, VPC, 53, 'ok'],
      // public_networks allows it, egress_allow [vpc] does not
      ['tcp', APP, NET, 443, 'refused'],
      ['tcp', HR, NET, 443, 'refused'],
    ]);
  });

  it('app-to-app: the policies rules and the CF policy-server JSON (from_cf)', async () => {
    await expectProbes(t, [
      ['tcp', HR, IT, 80, 'ok'], // rules: hr -> it tcp 80
      ['tcp', HR, IT, 443, 'ok'], // policies.json: hr -> it 443
      ['tcp', SANDBOX, IT, 8080, 'ok'], // policies.json: space-sandbox -> it 8080-8089
      ['tcp', HR, IT, 8080, 'refused'],
      ['tcp', APP, IT, 8080, 'refused'],
      ['tcp', IT, HR, 80, 'refused'], // default deny
      ['udp', HR, IT, 53, 'refused'],
    ]);
  });
});
