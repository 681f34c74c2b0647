/**
 * Scenario 2 (cloud.gov space egress types), in the kernel:
 * examples/cloudgov.yaml, spaces modelled as dynamic groups whose running
 * member sets get one container address each. See docs/scenarios.md.
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { dynamicSetName } from '../../src/policy/names.js';
import { Topology } from './netns.js';
import { compile, EXAMPLES, expectProbes, type Compiled } from './cli.js';

const kernel = kernelGate();
const POLICY = join(EXAMPLES, 'cloudgov.yaml');

const VPC4 = '10.0.0.10';
const VPC6 = 'fd00:10::10';
const NET4 = '203.0.113.10';
const NET6 = '2001:db8::10';

// one container per space, v4 and v6; .5 is in no space; .6 stages in the closed space
const SPACES = {
  'space-closed-egress': ['10.255.0.2', 'fd00:255::2'],
  'space-restricted-egress': ['10.255.0.3', 'fd00:255::3'],
  'space-public-egress': ['10.255.0.4', 'fd00:255::4'],
} as const;
const [CLOSED4, CLOSED6] = SPACES['space-closed-egress'];
const [RESTR4, RESTR6] = SPACES['space-restricted-egress'];
const [PUB4, PUB6] = SPACES['space-public-egress'];
const NOSPACE4 = '10.255.0.5';
const STAGE4 = '10.255.0.6';
const STAGE6 = 'fd00:255::6';

describe.skipIf(kernel.skip)('scenario 2: cloud.gov closed / restricted / public egress (kernel)', () => {
  let t: Topology;
  let c: Compiled;

  beforeAll(async () => {
    t = await Topology.create();
    c = await compile(POLICY, 'shared');
    await t.load(c.dir);
    await t.platform({ policy: 'DROP', after: [['-j', 'ACCEPT']] });
    for (const [space, [a4, a6]] of Object.entries(SPACES)) {
      await t.cellExec(['ipset', 'add', dynamicSetName(space, 'running', 4), a4]);
      await t.cellExec(['ipset', 'add', dynamicSetName(space, 'running', 6), a6]);
    }
    await t.cellExec(['ipset', 'add', dynamicSetName('space-closed-egress', 'staging', 4), STAGE4]);
    await t.cellExec(['ipset', 'add', dynamicSetName('space-closed-egress', 'staging', 6), STAGE6]);
  });
  afterAll(async () => {
    await t?.destroy();
    c?.cleanup();
  });

  it('closed-egress: nothing leaves the container network', async () => {
    await expectProbes(t, [
      ['tcp', CLOSED4, VPC4, 5432, 'refused'],
      ['udp', CLOSED4, VPC4, 53, 'refused'],
      ['tcp', CLOSED4, NET4, 443, 'refused'],
      ['icmp', CLOSED4, NET4, null, 'refused'],
      ['tcp', CLOSED6, VPC6, 5432, 'refused'],
      ['tcp', CLOSED6, NET6, 443, 'refused'],
    ]);
  });

  it('restricted-egress: brokered services and DNS in the VPC, nothing else', async () => {
    await expectProbes(t, [
      ['tcp', RESTR4, VPC4, 5432, 'ok'],
      ['tcp', RESTR4, VPC4, 443, 'ok'],
      ['udp', RESTR4, VPC4, 53, 'ok'],
      ['tcp', RESTR4, VPC4, 8080, 'refused'],
      ['udp', RESTR4, VPC4, 5432, 'refused'],
      ['tcp', RESTR4, NET4, 443, 'refused'],
      ['icmp', RESTR4, NET4, null, 'refused'],
      ['tcp', RESTR6, VPC6, 6379, 'ok'],
      ['udp', RESTR6, VPC6, 53, 'ok'],
      ['tcp', RESTR6, NET6, 443, 'refused'],
    ]);
  });

  it('public-egress: the internet too (v4 and v6, ping), but not arbitrary VPC ports', async () => {
    await expectProbes(t, [
      ['tcp', PUB4, NET4, 443, 'ok'],
      ['udp', PUB4, NET4, 53, 'ok'],
      ['icmp', PUB4, NET4, null, 'ok'],
      ['tcp', PUB4, VPC4, 3306, 'ok'],
      ['tcp', PUB4, VPC4, 8080, 'refused'],
      ['tcp', PUB6, NET6, 80, 'ok'],
      ['icmp', PUB6, NET6, null, 'ok'],
      ['tcp', PUB6, VPC6, 8080, 'refused'],
    ]);
  });

  it('a container in no space gets the default deny; staging containers reach the internet', async () => {
    await expectProbes(t, [
      ['tcp', NOSPACE4, NET4, 443, 'refused'],
      ['tcp', NOSPACE4, VPC4, 5432, 'refused'],
      ['tcp', STAGE4, NET4, 443, 'ok'],
      ['udp', STAGE4, VPC4, 53, 'ok'],
      ['tcp', STAGE6, NET6, 443, 'ok'],
      ['tcp', STAGE4, VPC4, 5432, 'refused'],
    ]);
  });
});
