/** ruleset.nft as text (no kernel): structure, quoting, list:set expansion, determinism. */
import { fileURLToPath } from 'node:url';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { runCompile } from '../../src/compile/cli.js';
import { sha256 } from '../../src/compile/util.js';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileSegment } from '../../src/compile/index.js';
import { loadPolicy } from '../../src/policy/index.js';
import { nftChainName, nftQuote, renderNft } from '../../src/render/nft.js';
import { EXAMPLES } from '../kernel/cli.js';
import { scriptRules } from './nft.js';

const QUOTING = fileURLToPath(new URL('../render/fixtures/quoting.yaml', import.meta.url));

async function render(file: string, segment?: string) {
  const policy = await loadPolicy(file);
  const plan = compileSegment(policy, segment ?? [...policy.segments.keys()][0]).plan;
  return { plan, nft: renderNft(plan) };
}

describe('nft renderer', () => {
  it('nftQuote: no way out of the string (nft has no escapes inside quotes)', () => {
    expect(nftQuote('a "b" \\ c\nd\te')).toBe(`"a 'b' / c d e"`);
    const long = nftQuote('é"'.repeat(300));
    expect(long.length).toBeLessThanOrEqual(129);
    expect(long.slice(1, -1)).not.toMatch(/["\\\x00-\x1f]/);
  });

  it('one table, one forward base chain at priority filter, family-suffixed chains, every rule counted and commented', async () => {
    const { plan, nft } = await render(join(EXAMPLES, 'cellwall.yaml'), 'egress-restricted-1');
    expect(nft).not.toMatch(/delete table|flush ruleset|flush table/);
    expect(nft.match(/type filter hook forward priority filter; policy accept;/g)).toHaveLength(2);
    const rules = scriptRules(nft);
    for (const f of [4, 6] as const) {
      for (const c of plan.families[f].chains) expect(rules.has(nftChainName(c.name, f)), c.name).toBe(true);
    }
    expect(rules.get('forward')).toEqual([
      expect.stringMatching(/^meta nfproto ipv4 counter jump \S+-v4 comment "/),
      expect.stringMatching(/^meta nfproto ipv6 counter jump \S+-v6 comment "/),
    ]);
    for (const [chain, lines] of rules) {
      for (const l of lines) expect(l, chain).toMatch(/(^| )counter (return|accept|drop|goto \S+|jump \S+|reject with .+|log prefix "[^"]*") comment "[^"]*"$/);
    }
    // tighten: allowed = return; no accept anywhere
    expect(nft).not.toMatch(/ accept comment/);
    // dynamic sets are declared once (no elements) and never flushed
    expect(nft).toMatch(/set cw-d-space-sandbox-r4 \{\n\s+type ipv4_addr; flags interval;\n\s+comment "[^"]*"\n\s+\}/);
    expect(nft).not.toMatch(/^flush set/m);
    // addr . proto . port sets
    expect(nft).toMatch(/type ipv4_addr \. inet_proto \. inet_service; flags interval;/);
    expect(nft).toMatch(/10\.0\.0\.0\/8 \. tcp \. 5432/);
    expect(nft).toMatch(/ip daddr \. meta l4proto \. th dport @cw4p-/);
  });

  it('a list:set match: one rule per member set, or every member negated in one rule', async () => {
    const { plan, nft } = await render(join(EXAMPLES, 'cellwall.yaml'), 'egress-restricted-1');
    const fp = plan.families[4];
    const list = fp.sets.find((s) => s.kind.type === 'list');
    expect(list).toBeDefined();
    const members = list!.kind.type === 'list' ? list!.kind.members : [];
    const chain = fp.chains.find((c) => c.rules.some((r) => r.match.src?.set === list!.name || r.match.dst?.set === list!.name))!;
    const lines = scriptRules(nft).get(nftChainName(chain.name, 4))!;
    for (const m of members) expect(lines.some((l) => l.includes(`@${m} `)), m).toBe(true);
    expect(nft).not.toContain(`@${list!.name}`);
  });

  it('enforce mode allows with accept; deny with log, reject and drop', async () => {
    const { nft } = await render(QUOTING);
    expect(nft).toMatch(/ counter accept comment/);
    expect(nft).not.toMatch(/ counter return comment "[^"]*asg/);
    expect(nft).toMatch(/limit rate 10\/minute burst 5 packets counter log prefix "CW-/);
    expect(nft).toMatch(/meta l4proto tcp counter reject with tcp reset/);
    expect(nft).toMatch(/counter reject with icmpx type port-unreachable/);
  });

  it('hostile names and descriptions stay inside their quotes, one rule per line', async () => {
    const { nft } = await render(QUOTING);
    for (const line of nft.split('\n')) {
      if (line.startsWith('#')) {
        expect(line).not.toMatch(/[\r]/);
        continue;
      }
      // every quote on a line opens and closes a string: an even number, and nothing but `comment`/`prefix` opens one
      expect((line.match(/"/g) ?? []).length % 2, line).toBe(0);
      for (const m of line.matchAll(/(\S+) "[^"]*"/g)) expect(['comment', 'prefix'], line).toContain(m[1]);
    }
    expect(nft).toContain('$(rm -rf /) `id`');
    expect(nft).not.toMatch(/-A FORWARD -j DROP\n/);
  });

  it('an unchanged policy renders byte-identical scripts', async () => {
    const a = await render(join(EXAMPLES, 'govuk-isolation.yaml'), 'egress-restricted-1');
    const b = await render(join(EXAMPLES, 'govuk-isolation.yaml'), 'egress-restricted-1');
    expect(a.nft).toBe(b.nft);
  });

  it('compile --backend nft --out writes ruleset.nft next to the iptables files, hashed in the manifest', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cwt-nftout-'));
    try {
      let out = '';
      const ctx = { setExit: () => {}, stdout: { write: (x: string) => ((out += x), true) }, stderr: { write: () => true } };
      await runCompile(join(EXAMPLES, 'cellwall.yaml'), { segment: 'shared', backend: 'nft', out: dir }, ctx as never);
      expect(readdirSync(dir).sort()).toEqual(['ipset.restore', 'iptables.v4', 'iptables.v6', 'manifest.json', 'ruleset.nft']);
      const nft = readFileSync(join(dir, 'ruleset.nft'), 'utf8');
      const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
      expect(manifest.files['ruleset.nft']).toEqual({ sha256: sha256(nft), bytes: Buffer.byteLength(nft) });
      expect(out).toContain('ruleset.nft');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
