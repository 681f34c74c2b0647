/**
 * Compiled payloads (`cellwall compile --out DIR` files) read into the
 * desired CellState. The payload may only touch CW- chains, one jump per host
 * chain into them, and cw- sets.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';
import { sha256 } from '../core/sha256.js';
import type { CellState } from '../state/index.js';
import { isCwChain, normalizeRule, ruleTarget, tokenize, type CwJump, type FamilyState, type IpFamily } from '../state/iptables.js';
import { isCwSet, parseIpset } from '../state/ipset.js';

export interface Payload {
  ipset: string;
  v4: string;
  v6: string;
  /** manifest.json as parsed (the compiler's), when present */
  manifest: Record<string, unknown> | null;
  /** where it came from, for messages (a directory or `POLICY --segment S`) */
  source: string;
}

export async function readPayloadDir(dir: string): Promise<Payload> {
  const rd = async (f: string): Promise<string> => {
    try { return await readFile(join(dir, f), 'utf8'); } catch (e) {
      throw new CellwallError(`${join(dir, f)}: cannot read payload file (${(e as NodeJS.ErrnoException).code ?? e}); expected the output of \`cellwall compile --out DIR\``);
    }
  };
  const [ipset, v4, v6] = await Promise.all([rd('ipset.restore'), rd('iptables.v4'), rd('iptables.v6')]);
  let manifest: Record<string, unknown> | null = null;
  try { manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Record<string, unknown>; } catch { /* optional */ }
  return { ipset, v4, v6, manifest, source: dir };
}

export function payloadHash(p: Payload): string {
  return sha256(`ipset.restore\0${p.ipset}\0iptables.v4\0${p.v4}\0iptables.v6\0${p.v6}`);
}

function fail(file: string, line: number, msg: string, expected: string): never {
  throw new CellwallError(`${file}:${line}:1: error: ${msg} (expected ${expected})`);
}

/** Parse one iptables payload (filter table, CW- chains, jumps into them). */
export function parseIptPayload(text: string, file: string, family: IpFamily): FamilyState {
  const st: FamilyState = { chains: new Map(), jumps: [] };
  const lines = text.split('\n');
  let table: string | null = null;
  const tops = new Map<string, CwJump[]>();
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    const ln = i + 1;
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) { table = line.slice(1); if (table !== 'filter') fail(file, ln, `table "${table}" is not managed by apply`, '*filter'); continue; }
    if (line === 'COMMIT') { table = null; continue; }
    if (table === null) fail(file, ln, 'rule outside a *filter ... COMMIT block', '*filter first');
    if (line.startsWith(':')) {
      const name = line.slice(1).split(/\s+/)[0]!;
      if (!isCwChain(name)) fail(file, ln, `chain "${name}" is not cellwall's`, 'only CW- chains declared');
      if (!st.chains.has(name)) st.chains.set(name, []);
      continue;
    }
    const w = tokenize(line);
    const origin = { file, line: ln };
    if (w[0] === '-A' && w[1] && isCwChain(w[1])) {
      const spec = line.replace(/^-A\s+\S+\s*/, '');
      const rules = st.chains.get(w[1]);
      if (!rules) fail(file, ln, `rule for undeclared chain "${w[1]}"`, `a ":${w[1]} - [0:0]" line first`);
      rules.push({ spec, norm: normalizeRule(spec, family), origin });
      continue;
    }
    if ((w[0] === '-A' || w[0] === '-I') && w[1] && !isCwChain(w[1])) {
      const host = w[1];
      let spec = line.replace(/^-[AI]\s+\S+\s*/, '');
      if (w[0] === '-I') spec = spec.replace(/^\d+\s+/, '');
      const target = ruleTarget(spec);
      if (!target || !isCwChain(target)) fail(file, ln, `rule in ${host} that does not jump to a CW- chain`, 'only `-I FORWARD 1 -j CW-...` outside CW- chains');
      const j: CwJump = { host, spec, norm: normalizeRule(spec, family), origin };
      const list = tops.get(host) ?? [];
      if (w[0] === '-I') list.unshift(j); else list.push(j);
      tops.set(host, list);
      continue;
    }
    fail(file, ln, `unsupported payload line "${line.slice(0, 60)}"`, 'chain declarations, -A CW-... rules and the FORWARD jump');
  }
  for (const [, list] of tops) st.jumps.push(...list);
  return st;
}

export function desiredFromPayload(p: Payload): CellState {
  const { sets, problems } = parseIpset(p.ipset, 'ipset.restore');
  if (problems.length) fail('ipset.restore', problems[0]!.line, `unsupported line "${problems[0]!.text.slice(0, 60)}"`, 'create and add lines only');
  for (const s of sets.values()) if (!isCwSet(s.name)) fail('ipset.restore', s.origin?.line ?? 0, `set "${s.name}" is not cellwall's`, 'names starting with cw- or cw4/cw6');
  const v4 = parseIptPayload(p.v4, 'iptables.v4', 4);
  const v6 = parseIptPayload(p.v6, 'iptables.v6', 6);
  return { v4, v6, sets };
}

/**
 * Map a payload line back to the policy entry: the compiler's source map in
 * manifest.json when it has one for the line, else the rule's comment.
 */
export function describeOrigin(p: Payload | null, origin: { file: string; line: number } | undefined): string {
  if (!origin) return 'a rule cellwall generated itself (jump or cleanup)';
  const text = (origin.file === 'iptables.v4' ? p?.v4 : origin.file === 'iptables.v6' ? p?.v6 : p?.ipset)?.split('\n')[origin.line - 1] ?? '';
  const fromMap = lookupSourceMap(p?.manifest ?? null, origin, origin.file === 'iptables.v4' ? p?.v4 : p?.v6);
  const w = tokenize(text);
  const ci = w.indexOf('--comment');
  const comment = ci >= 0 ? w[ci + 1] : undefined;
  const where = `${origin.file} line ${origin.line}`;
  if (fromMap) return `${fromMap} (${where})`;
  if (comment) return `policy entry "${comment}" (${where})`;
  return `${where}: ${text.trim().slice(0, 120)}`;
}

/**
 * The compiler's source map: manifest.v4|v6.sourceMap = [{ chain, rule (1-based
 * in the chain), comment, locs: [{ at, path }] }]. The payload line is turned
 * into (chain, rule) by counting the chain's -A lines up to it.
 */
function lookupSourceMap(m: Record<string, unknown> | null, origin: { file: string; line: number }, text: string | undefined): string | null {
  const fam = origin.file === 'iptables.v4' ? 'v4' : origin.file === 'iptables.v6' ? 'v6' : null;
  if (!m || !fam || text === undefined) return null;
  const sm = (m[fam] as { sourceMap?: unknown } | undefined)?.sourceMap;
  if (!Array.isArray(sm)) return null;
  const lines = text.split('\n');
  const chain = /^-A\s+(\S+)/.exec(lines[origin.line - 1] ?? '')?.[1];
  if (!chain) return null;
  let rule = 0;
  for (let i = 0; i < origin.line; i++) if (lines[i]!.trim().startsWith(`-A ${chain} `)) rule++;
  const e = sm.find((x: { chain?: string; rule?: number }) => x && x.chain === chain && x.rule === rule) as { locs?: { at?: string; path?: string }[] } | undefined;
  const locs = (e?.locs ?? []).map((l) => `${l.at ?? ''}${l.path ? ` ${l.path}` : ''}`.trim()).filter((x) => x);
  return locs.length ? locs.join(', ') : null;
}
