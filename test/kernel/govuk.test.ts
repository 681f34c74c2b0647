/**
 * Scenario 1 (GOV.UK isolation segment) and scenario 4 (logging), in the
 * kernel: examples/govuk-isolation.yaml compiled by the real CLI, loaded in
 * the cell namespace, real connections from the container namespace.
 * See docs/scenarios.md.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { dynamicSetName } from '../../src/policy/names.js';
import { Topology } from './netns.js';
import { compile, EXAMPLES, expectProbes, type Compiled, type Row } from './cli.js';
import { logRules } from './payload.js';

const kernel = kernelGate();
const POLICY = join(EXAMPLES, 'govuk-isolation.yaml');

// container addresses: .2 runs, .3 stages (added to the staging member set)
const RUN4 = '10.255.0.2';
const STAGE4 = '10.255.0.3';
const RUN6 = 'fd00:255::2';
const STAGE6 = 'fd00:255::3';
const VPC4 = '10.0.0.10';
const VPC6 = 'fd00:10::10';
const NET4 = '203.0.113.10';
const NET4B = '198.51.100.10';
const NET6 = '2001:db8::10';

describe.skipIf(kernel.skip)('scenario 1: GOV.UK isolation segment (kernel)', () => {
  let t: Topology;
  const compiled: Compiled[] = [];

  beforeAll(async () => {
    t = await Topology.create();
  });
  afterAll(async () => {
    await t?.destroy();
    for (const c of compiled) c.cleanup();
  });

  /** load a segment's payload with a tighten-mode platform behind it: RETURN -> platform ACCEPT */
  async function loadSegment(segment: string): Promise<Compiled> {
    const c = await compile(POLICY, segment);
    compiled.push(c);
    await t.reset();
    await t.load(c.dir);
    await t.platform({ policy: 'DROP', after: [['-j', 'ACCEPT']] });
    return c;
  }

  it('egress-restricted-1: running apps reach only the VPC, whatever the ASGs say; staging apps reach the internet', async () => {
    const c = await loadSegment('egress-restricted-1');
    // staging containers: members of the dynamic group's staging set
    const s4 = dynamicSetName('space-govuk', 'staging', 4);
    const s6 = dynamicSetName('space-govuk', 'staging', 6);
    expect(c.ipset).toContain(s4);
    expect(c.ipset).toContain(s6);
    await t.cellExec(['ipset', 'add', s4, STAGE4]);
    await t.cellExec(['ipset', 'add', s6, STAGE6]);

    await expectProbes(t, [
      // running: public_networks_egress allows these, the segment's restriction wins
      ['tcp', RUN4, NET4, 443, 'refused'],
      ['udp', RUN4, NET4B, 53, 'refused'],
      ['icmp', RUN4, NET4, null, 'refused'],
      ['tcp', RUN6, NET6, 443, 'refused'],
      ['icmp', RUN6, NET6, null, 'refused'],
      // running: VPC services stay reachable (ASG vpc_services, dns)
      ['tcp', RUN4, VPC4, 5432, 'ok'],
      ['tcp', RUN4, VPC4, 6379, 'ok'],
      ['udp', RUN4, VPC4, 53, 'ok'],
      ['icmp', RUN4, VPC4, null, 'ok'],
      ['tcp', RUN6, VPC6, 443, 'ok'],
      ['udp', RUN6, VPC6, 53, 'ok'],
      ['icmp', RUN6, VPC6, null, 'ok'],
      // running: inside egress_allow the ASGs still decide (no ASG opens 8080)
      ['tcp', RUN4, VPC4, 8080, 'refused'],
      ['tcp', RUN6, VPC6, 8080, 'refused'],
      // staging: not restricted, public_networks_egress applies
      ['tcp', STAGE4, NET4, 443, 'ok'],
      ['udp', STAGE4, NET4B, 53, 'ok'],
      ['icmp', STAGE4, NET4, null, 'ok'],
      ['tcp', STAGE6, NET6, 443, 'ok'],
      ['icmp', STAGE6, NET6, null, 'ok'],
      ['tcp', STAGE4, VPC4, 5432, 'ok'],
      ['tcp', STAGE4, VPC4, 8080, 'refused'],
    ]);
  });

  it('a staging member that leaves the set is restricted again (the sets are live)', async () => {
    const s4 = dynamicSetName('space-govuk', 'staging', 4);
    await t.cellExec(['ipset', 'del', s4, STAGE4]);
    await expectProbes(t, [['tcp', STAGE4, NET4, 443, 'refused']]);
  });

  it('shared segment (egress open): the same running apps reach the internet through the ASG', async () => {
    await loadSegment('shared');
    await expectProbes(t, [
      ['tcp', RUN4, NET4, 443, 'ok'],
      ['udp', RUN4, NET4B, 53, 'ok'],
      ['tcp', RUN6, NET6, 80, 'ok'],
      ['tcp', RUN4, VPC4, 5432, 'ok'],
      ['tcp', RUN4, VPC4, 8080, 'refused'],
    ]);
  });

  it('traffic from outside the governed sources is untouched (falls through to the platform)', async () => {
    await loadSegment('egress-restricted-1');
    // the VPC opening connections into the internet is not cellwall's business
    await expectProbes(t, [
      ['tcp', VPC4, NET4, 443, 'ok'],
      ['tcp', VPC6, NET6, 443, 'ok'],
    ]);
  });
});

describe.skipIf(kernel.skip)('scenario 4: logging rules (kernel)', () => {
  let t: Topology;
  let c: Compiled;

  beforeAll(async () => {
    t = await Topology.create();
    c = await compile(POLICY, 'egress-restricted-1');
    await t.load(c.dir);
    await t.platform({ policy: 'DROP', after: [['-j', 'ACCEPT']] });
  });
  afterAll(async () => {
    await t?.destroy();
    c?.cleanup();
  });

  it('every LOG rule is rate-limited, has a prefix, and sits right before the verdict it announces', () => {
    for (const [family, text] of [[4, c.v4], [6, c.v6]] as const) {
      const logs = logRules(text);
      expect(logs.length, `v${family} LOG rules`).toBeGreaterThan(0);
      for (const l of logs) {
        expect(l.log.limit, `rate limit on ${l.log.rule}`).toBeDefined();
        expect(l.prefix, l.log.rule).not.toBe('');
        expect(l.next, `a rule after ${l.log.rule}`).toBeDefined();
        expect(l.next!.verdict, `after ${l.log.rule}: ${l.next!.rule}`).toMatch(/^(RETURN|ACCEPT|REJECT|DROP)$/);
        // the verdict applies to (at least) every packet the LOG rule logged
        for (const m of l.log.matches) expect(l.next!.matches, `${l.log.rule}\n${l.next!.rule}`).toContain(m);
      }
      // the deny log (log_denied: true) and the log of the ASG rule with `log: true` (tighten: RETURN)
      expect(logs.some((l) => l.prefix === 'CW-DENY egress-restricted-1 ' && /^(REJECT|DROP)$/.test(l.next!.verdict))).toBe(true);
      expect(logs.some((l) => l.next!.verdict === 'RETURN')).toBe(true);
    }
  });

  it('the kernel hits the LOG rule, then the verdict; the log is rate-limited', async () => {
    await t.zeroCounters();
    // one allowed connection with log: true (vpc_services), then many denied packets
    await expectProbes(t, [['tcp', RUN4, VPC4, 5432, 'ok']]);
    const denied = 12;
    await expectProbes(t, Array.from({ length: denied }, (): Row => ['udp', RUN4, NET4, 53, 'refused']));
    const live = logRules(await t.save(4));

    const allowLog = live.find((l) => l.next?.verdict === 'RETURN' && l.log.packets! > 0);
    expect(allowLog, 'an allow LOG rule counted the SYN to 5432').toBeDefined();
    expect(allowLog!.next!.packets).toBeGreaterThanOrEqual(allowLog!.log.packets!);

    const denyLog = live.find((l) => l.prefix === 'CW-DENY egress-restricted-1 ' && l.log.packets! > 0);
    expect(denyLog, 'the deny LOG rule counted').toBeDefined();
    const logged = denyLog!.log.packets!;
    // rate-limited: at most the burst (plus one refill) of the denied packets were logged...
    expect(logged).toBeLessThanOrEqual(denyLog!.log.limit!.burst + 1);
    expect(logged).toBeLessThan(denied);
    // ...but every one of them was rejected by the rules after the LOG
    const rejected = denyLog!.following.filter((r) => /^(REJECT|DROP)$/.test(r.verdict)).reduce((n, r) => n + r.packets!, 0);
    expect(rejected).toBeGreaterThanOrEqual(denied);
  });
});
