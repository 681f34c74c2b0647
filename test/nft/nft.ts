/**
 * Helpers of the nft backend tests: compile with `--backend nft` through the
 * real CLI, load / check `ruleset.nft` in a cwt-* namespace, read the live
 * table back with `nft -j`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cellwall, ROOT } from '../kernel/cli.js';
import type { ExecResult, Topology } from '../kernel/netns.js';

/** `cellwall apply ... --backend nft --state-dir DIR` run inside the cell namespace (nft only ever sees the cell's table) */
export function applyNftIn(t: Topology, stateDir: string, args: string[], env: Record<string, string> = {}): Promise<ExecResult> {
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return t.exec(t.cell, ['env', ...envArgs, process.execPath, join(ROOT, 'bin', 'cellwall.js'), 'apply', '--backend', 'nft', '--state-dir', stateDir, ...args], 60_000);
}

/** the table as nft prints it with handles (rewritten objects get new ones) but without counter values; null without a table */
export async function tableJsonOf(t: Topology): Promise<string | null> {
  const r = await t.exec(t.cell, ['nft', '-j', 'list', 'table', 'inet', 'cellwall']);
  if (r.code !== 0) return null;
  return r.stdout.replace(/"counter": \{"packets": \d+, "bytes": \d+\}/g, '"counter": {}');
}

export interface CompiledNft {
  dir: string;
  nft: string;
  file: string;
  cleanup(): void;
}

/** `cellwall compile POLICY --segment S --backend nft --out DIR` into a fresh temporary directory */
export async function compileNft(policy: string, segment: string): Promise<CompiledNft> {
  const dir = mkdtempSync(join(tmpdir(), 'cwt-nft-'));
  const r = await cellwall(['compile', policy, '--segment', segment, '--backend', 'nft', '--out', dir]);
  if (r.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cellwall compile ${policy} --segment ${segment} --backend nft exited ${r.code}\n${r.stderr}${r.stdout}`);
  }
  const file = join(dir, 'ruleset.nft');
  return { dir, file, nft: readFileSync(file, 'utf8'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** the live rules of `table inet cellwall`, from `nft -j list table` */
export interface LiveRule { chain: string; comment?: string; expr: unknown[] }
export interface LiveTable {
  chains: Array<{ name: string; hook?: string; prio?: number; type?: string; policy?: string }>;
  sets: Array<{ name: string; elem?: unknown[] }>;
  rules: LiveRule[];
}

export async function liveTable(t: Topology): Promise<LiveTable> {
  const out = await t.cellExec(['nft', '-j', 'list', 'table', 'inet', 'cellwall']);
  const items = (JSON.parse(out) as { nftables: Array<Record<string, any>> }).nftables;
  const live: LiveTable = { chains: [], sets: [], rules: [] };
  for (const it of items) {
    if (it.chain) live.chains.push(it.chain);
    if (it.set) live.sets.push(it.set);
    if (it.rule) live.rules.push({ chain: it.rule.chain, comment: it.rule.comment, expr: it.rule.expr });
  }
  return live;
}

/** the rule lines of the refill part of a script (the chain bodies), per chain */
export function scriptRules(nft: string): Map<string, string[]> {
  const refill = nft.slice(nft.lastIndexOf('\ntable inet cellwall {'));
  const out = new Map<string, string[]>();
  let chain: string | null = null;
  for (const line of refill.split('\n')) {
    const m = /^ {2}chain (\S+) \{$/.exec(line);
    if (m) {
      out.set((chain = m[1]), []);
      continue;
    }
    if (line === '  }') chain = null;
    else if (chain && line.startsWith('    ') && !line.includes(' hook ')) out.get(chain)!.push(line.trim());
  }
  return out;
}

/** the number of elements the script gives each set it fills */
export function scriptSets(nft: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of nft.matchAll(/ {2}set (\S+) \{\n[^}]*?elements = \{\n([^}]*)\n {4}\}/g)) out.set(m[1], m[2].split(',\n').length);
  return out;
}
