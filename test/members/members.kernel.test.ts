/**
 * `cellwall members add|del|list` in the kernel: the real CLI run inside the
 * cell namespace changes a dynamic group's member set, and real traffic from
 * the container follows (examples/govuk-isolation.yaml: staging members of
 * space-govuk may reach the internet, running apps may not).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { kernelGate } from '../helpers/caps.js';
import { dynamicSetName } from '../../src/policy/names.js';
import { Topology } from '../kernel/netns.js';
import { compile, EXAMPLES, expectProbes, ROOT, type Compiled } from '../kernel/cli.js';

const kernel = kernelGate();
const APP4 = '10.255.0.3';
const APP6 = 'fd00:255::3';
const NET4 = '203.0.113.10';
const NET6 = '2001:db8::10';

describe.skipIf(kernel.skip)('cellwall members (kernel)', () => {
  let t: Topology;
  let c: Compiled;

  beforeAll(async () => {
    t = await Topology.create();
    c = await compile(join(EXAMPLES, 'govuk-isolation.yaml'), 'egress-restricted-1');
    await t.load(c.dir);
    await t.platform({ policy: 'DROP', after: [['-j', 'ACCEPT']] });
  });
  afterAll(async () => {
    await t?.destroy();
    c?.cleanup();
  });

  const members = (args: string[]) => t.exec(t.cell, [process.execPath, join(ROOT, 'bin', 'cellwall.js'), 'members', ...args]);
  const setContent = async (name: string) => (await t.exec(t.cell, ['ipset', 'list', name, '-o', 'save'])).stdout;

  it('add puts v4 and v6 members into the phase sets and traffic follows; del takes them out', async () => {
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'refused'], ['tcp', APP6, NET6, 443, 'refused']]);

    const add = await members(['add', 'space-govuk', '--phase', 'staging', APP4, APP6]);
    expect(add.stderr).toBe('');
    expect(add.code).toBe(0);
    expect(await setContent(dynamicSetName('space-govuk', 'staging', 4))).toContain(`add ${dynamicSetName('space-govuk', 'staging', 4)} ${APP4}`);
    expect(await setContent(dynamicSetName('space-govuk', 'staging', 6))).toContain(APP6);
    // running sets untouched
    expect(await setContent(dynamicSetName('space-govuk', 'running', 4))).not.toContain(APP4);
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'ok'], ['tcp', APP6, NET6, 443, 'ok']]);

    const list = await members(['list', 'space-govuk', '--phase', 'staging', '--json']);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout).members.sort()).toEqual([APP4, APP6].sort());

    const del = await members(['del', 'space-govuk', '--phase', 'staging', APP4, APP6]);
    expect(del.code).toBe(0);
    expect((await members(['list', 'space-govuk', '--phase', 'staging'])).stdout).toBe('');
    await expectProbes(t, [['tcp', APP4, NET4, 443, 'refused'], ['tcp', APP6, NET6, 443, 'refused']]);
  });

  it('a bad address changes nothing and says which one is wrong, without a stack trace', async () => {
    const r = await members(['add', 'space-govuk', '--phase', 'staging', APP4, '10.255.0.300']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('"10.255.0.300"');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await setContent(dynamicSetName('space-govuk', 'staging', 4))).not.toContain(APP4);
  });

  it('an unknown or static group is refused', async () => {
    const r = await members(['add', 'no-such-space', APP4]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no running member sets on this cell');
  });
});
