/**
 * ruleset.nft in the kernel (cwt-* namespace only): every example policy
 * segment and the hostile quoting corpus pass `nft -c -f`, load, reload
 * (idempotent), and the live table holds exactly the script's rules, each
 * with its comment, under one forward base chain at priority 0. Dynamic
 * member sets keep their members across reloads and policy changes, and a
 * script that fails leaves the previous rules in place (one transaction).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { kernelGate } from '../helpers/caps.js';
import { Topology } from '../kernel/netns.js';
import { EXAMPLES } from '../kernel/cli.js';
import { compileNft, liveTable, scriptRules, scriptSets } from './nft.js';
import { compileSegment } from '../../src/compile/index.js';
import { loadPolicy } from '../../src/policy/index.js';
import { nftLiveNames, renderNft, renderNftCleanup } from '../../src/render/nft.js';

const kernel = kernelGate(['ip', 'nft', 'socat', 'ping']);

const QUOTING = fileURLToPath(new URL('../render/fixtures/quoting.yaml', import.meta.url));
const SPEC = fileURLToPath(new URL('../policies/good/spec-example.yaml', import.meta.url));

function segmentsOf(file: string): string[] {
  return Object.keys((parse(readFileSync(file, 'utf8')) as { segments: Record<string, unknown> }).segments);
}

const cases = [
  ...readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml')).sort().map((f) => join(EXAMPLES, f)),
  QUOTING,
  SPEC,
].flatMap((file) => segmentsOf(file).map((segment) => ({ file, name: file.split('/').pop()!, segment })));

describe.skipIf(kernel.skip)('ruleset.nft in the kernel', () => {
  let t: Topology;
  beforeAll(async () => {
    t = await Topology.create([]); // just a cell
  });
  afterAll(async () => {
    await t?.destroy();
  });

  it('covers the examples and the quoting corpus', () => {
    expect(cases.map((c) => c.name)).toEqual(expect.arrayContaining(['cellwall.yaml', 'govuk-isolation.yaml', 'quoting.yaml']));
  });

  it.each(cases)('$name --segment $segment: nft -c, load, reload, live rules = script rules', async ({ file, segment }) => {
    const c = await compileNft(file, segment);
    try {
      await t.cellExec(['nft', 'flush', 'ruleset']);
      await t.cellExec(['nft', '-c', '-f', c.file]);
      await t.cellExec(['nft', '-f', c.file]);
      await t.cellExec(['nft', '-f', c.file]); // a reload of the same script changes nothing
      const live = await liveTable(t);
      const script = scriptRules(c.nft);
      const base = live.chains.filter((ch) => ch.hook);
      expect(base).toEqual([expect.objectContaining({ name: 'forward', hook: 'forward', prio: 0, type: 'filter', policy: 'accept' })]);
      for (const [chain, rules] of script) {
        const got = live.rules.filter((r) => r.chain === chain);
        expect(got.length, `rules in ${chain}`).toBe(rules.length);
        // every rule carries its comment, as written (quoting survived the parser)
        const want = rules.map((r) => /comment "([^"]*)"$/.exec(r)?.[1]);
        expect(got.map((r) => r.comment)).toEqual(want);
        for (const w of want) expect(w, `comment in ${chain}`).toBeTruthy();
      }
      expect(live.rules.every((r) => script.has(r.chain)), 'no rule outside the script').toBe(true);
      // after the reload every filled set holds exactly its elements once (re-adding changed nothing)
      for (const [name, elements] of scriptSets(c.nft)) {
        const s = live.sets.find((x) => x.name === name);
        expect(s?.elem?.length ?? 0, `elements of ${name}`).toBe(elements);
      }
    } finally {
      c.cleanup();
    }
  });

  it('dynamic member sets keep their members across a reload and a policy change', async () => {
    const a = await compileNft(join(EXAMPLES, 'cellwall.yaml'), 'egress-restricted-1');
    const b = await compileNft(join(EXAMPLES, 'cellwall.yaml'), 'shared');
    try {
      expect(a.nft).not.toBe(b.nft);
      await t.cellExec(['nft', 'flush', 'ruleset']);
      await t.cellExec(['nft', '-f', a.file]);
      await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', 'cw-d-space-sandbox-r4', '{ 10.255.0.7, 10.255.9.0/24 }']);
      await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', 'cw-d-space-sandbox-s6', '{ fd00:255::7 }']);
      const members = async () => {
        const live = await liveTable(t);
        return Object.fromEntries(
          live.sets.filter((s) => s.name.startsWith('cw-d-')).map((s) => [s.name, JSON.stringify(s.elem ?? [])]),
        );
      };
      const before = await members();
      expect(before['cw-d-space-sandbox-r4']).toContain('10.255.0.7');
      expect(before['cw-d-space-sandbox-s6']).toContain('fd00:255::7');
      await t.cellExec(['nft', '-f', a.file]);
      expect(await members()).toEqual(before);
      await t.cellExec(['nft', '-f', b.file]);
      expect(await members()).toEqual(before);
      // and the live rules are b's
      const live = await liveTable(t);
      const fwd = live.rules.filter((r) => r.chain === 'forward');
      expect(JSON.stringify(fwd)).toContain(scriptRules(b.nft).get('forward')![0].match(/jump (\S+)/)![1]);
    } finally {
      a.cleanup();
      b.cleanup();
    }
  });

  it('a script that fails changes nothing: the previous rules stay (one transaction)', async () => {
    const a = await compileNft(join(EXAMPLES, 'cellwall.yaml'), 'egress-restricted-1');
    const b = await compileNft(join(EXAMPLES, 'cellwall.yaml'), 'shared');
    try {
      await t.cellExec(['nft', 'flush', 'ruleset']);
      await t.cellExec(['nft', '-f', a.file]);
      const before = await t.cellExec(['nft', 'list', 'table', 'inet', 'cellwall']);
      // b's script, with a rule the kernel refuses at its very end (a goto to a chain that does not exist)
      const broken = join(b.dir, 'broken.nft');
      writeFileSync(broken, `${b.nft}add rule inet cellwall forward goto no-such-chain\n`);
      const r = await t.exec(t.cell, ['nft', '-f', broken]);
      expect(r.code).not.toBe(0);
      expect(await t.cellExec(['nft', 'list', 'table', 'inet', 'cellwall'])).toBe(before);
    } finally {
      a.cleanup();
      b.cleanup();
    }
  });

  it('renderNftCleanup, appended to the script, removes an older policy\'s chains and sets in the same transaction', async () => {
    const policy = await loadPolicy(join(EXAMPLES, 'cellwall.yaml'));
    const a = compileSegment(policy, 'egress-restricted-1').plan;
    const b = compileSegment(policy, 'shared').plan;
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-nftclean-'));
    try {
      await t.cellExec(['nft', 'flush', 'ruleset']);
      writeFileSync(join(tmp, 'a.nft'), renderNft(a));
      await t.cellExec(['nft', '-f', join(tmp, 'a.nft')]);
      await t.cellExec(['nft', 'add', 'element', 'inet', 'cellwall', 'cw-d-space-sandbox-r4', '{ 10.255.0.7 }']);
      const before = nftLiveNames(await t.cellExec(['nft', '-j', 'list', 'table', 'inet', 'cellwall']));
      const cleanup = renderNftCleanup(b, before);
      expect(cleanup).toMatch(/delete chain inet cellwall /);
      writeFileSync(join(tmp, 'b.nft'), renderNft(b) + cleanup);
      await t.cellExec(['nft', '-c', '-f', join(tmp, 'b.nft')]);
      await t.cellExec(['nft', '-f', join(tmp, 'b.nft')]);
      const after = nftLiveNames(await t.cellExec(['nft', '-j', 'list', 'table', 'inet', 'cellwall']));
      const bScript = renderNft(b);
      const wantChains = [...scriptRules(bScript).keys()].sort();
      expect(after.chains.sort()).toEqual(wantChains);
      const bSets = new Set([4, 6].flatMap((f) => b.families[f as 4 | 6].sets.map((s) => s.name)));
      for (const s of after.sets) expect(bSets.has(s) || s.startsWith('cw-d-'), s).toBe(true);
      expect(JSON.stringify((await liveTable(t)).sets.find((s) => s.name === 'cw-d-space-sandbox-r4'))).toContain('10.255.0.7');
      // nothing stale left: a second cleanup is empty
      expect(renderNftCleanup(b, after)).toBe('');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
