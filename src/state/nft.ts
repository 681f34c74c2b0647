/**
 * Live state of `table inet cellwall` (the nft backend), read with
 * `nft -j list table inet cellwall`, in a canonical form that compares
 * chains, rules and set elements exactly.
 *
 * The desired state is not guessed from the script text: the script is loaded
 * into a private, empty network namespace (`unshare -n`: anonymous, gone when
 * the process exits, never the cell's) and read back the same way. So the
 * comparison is the kernel's own normal form on both sides, whatever nft
 * prints for our input (prefixes, single addresses, concatenations, `icmpx`).
 */
import { CellwallError } from '../errors.js';
import { NFT_FAMILY, NFT_TABLE } from '../render/nft.js';
import { run } from './exec.js';
import { sha } from './index.js';

export const NFT_REF = `${NFT_FAMILY} ${NFT_TABLE}`;
export const isDynamicSet = (name: string): boolean => name.startsWith('cw-d-');

export interface NftSet { name: string; decl: string; elems: string[]; dynamic: boolean }
export interface NftChain { name: string; decl: string; rules: string[] }
export interface NftState { sets: Map<string, NftSet>; chains: Map<string, NftChain> }

type Json = Record<string, unknown>;

/** a rule's expressions without its counter values (they change with traffic) */
function zeroCounters(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(zeroCounters);
  if (v && typeof v === 'object') {
    const o: Json = {};
    for (const [k, x] of Object.entries(v as Json)) o[k] = k === 'counter' && x && typeof x === 'object' ? null : zeroCounters(x);
    return o;
  }
  return v;
}

const without = (o: Json, ...keys: string[]): Json => Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));

/** one set element as text: `10.0.0.0/8`, `192.0.2.1`, `a-b`, `10.0.0.0/8 . tcp . 5432` */
export function elemText(e: unknown): string {
  if (typeof e === 'string' || typeof e === 'number') return String(e);
  const o = e as Json;
  if (o.prefix) { const p = o.prefix as { addr: string; len: number }; return `${p.addr}/${p.len}`; }
  if (o.range) return (o.range as unknown[]).map(elemText).join('-');
  if (o.concat) return (o.concat as unknown[]).map(elemText).join(' . ');
  if (o.elem) return elemText((o.elem as Json).val);
  return JSON.stringify(e);
}

/** `nft -j list table inet cellwall` output -> canonical state */
export function parseNftJson(json: string): NftState {
  const items = (JSON.parse(json) as { nftables?: Json[] }).nftables ?? [];
  const st: NftState = { sets: new Map(), chains: new Map() };
  const rules: Array<{ chain: string; text: string }> = [];
  for (const it of items) {
    if (it.set) {
      const s = it.set as Json & { name: string; elem?: unknown[] };
      st.sets.set(s.name, { name: s.name, decl: JSON.stringify(without(s, 'handle', 'elem')), elems: (s.elem ?? []).map(elemText), dynamic: isDynamicSet(s.name) });
    } else if (it.chain) {
      const c = it.chain as Json & { name: string };
      st.chains.set(c.name, { name: c.name, decl: JSON.stringify(without(c, 'handle')), rules: [] });
    } else if (it.rule) {
      const r = it.rule as Json & { chain: string };
      rules.push({ chain: r.chain, text: JSON.stringify(zeroCounters(without(r, 'handle'))) });
    }
  }
  for (const r of rules) st.chains.get(r.chain)?.rules.push(r.text);
  return st;
}

const NO_TABLE = /No such file or directory|does not exist/i;

/** the live table, or null when there is none */
export async function readLiveNft(): Promise<NftState | null> {
  const r = await run('nft', ['-j', 'list', 'table', NFT_FAMILY, NFT_TABLE]);
  if (r.code !== 0) {
    if (NO_TABLE.test(r.stderr)) return null;
    throw new CellwallError(`nft -j list table ${NFT_REF} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return parseNftJson(r.stdout);
}

/** the live table as nft prints it (reloadable text: the rollback snapshot), or null when there is none */
export async function snapshotNft(): Promise<string | null> {
  const r = await run('nft', ['list', 'table', NFT_FAMILY, NFT_TABLE]);
  if (r.code !== 0) {
    if (NO_TABLE.test(r.stderr)) return null;
    throw new CellwallError(`nft list table ${NFT_REF} failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** the first `FILE:LINE:COL` nft reports, as a line number */
export function nftErrorLine(stderr: string): number | null {
  const m = /^[^:\n]*:(\d+):\d+(?:-\d+)?: Error/m.exec(stderr);
  return m ? Number(m[1]) : null;
}

export interface NftRunError { code: number; stderr: string; line: number | null }

/** `nft -f` of a script (one transaction); null on success */
export async function loadNft(script: string): Promise<NftRunError | null> {
  const r = await run('nft', ['-f', '/dev/stdin'], script);
  if (r.code === 0) return null;
  return { code: r.code, stderr: r.stderr.trim(), line: nftErrorLine(r.stderr) };
}

/**
 * What the kernel holds after loading `script` into an empty table: loaded in
 * a private network namespace (`unshare -n`) and read back. Throws the nft
 * error (with the line) when the script does not load.
 */
export async function desiredNft(script: string): Promise<{ state: NftState } | { error: NftRunError }> {
  const r = await run('unshare', ['-n', 'sh', '-c', `nft -f /dev/stdin && nft -j list table ${NFT_REF}`], script);
  if (r.code !== 0) {
    if (/unshare:/.test(r.stderr)) throw new CellwallError(`unshare -n failed (needs root and util-linux): ${r.stderr.trim()}`);
    return { error: { code: r.code, stderr: r.stderr.trim(), line: nftErrorLine(r.stderr) } };
  }
  return { state: parseNftJson(r.stdout) };
}

/** Canonical text of the table (dynamic sets by declaration only: their members are run-time state). */
export function nftStateText(s: NftState | null): string {
  if (!s) return '';
  const lines: string[] = [];
  for (const n of [...s.sets.keys()].sort()) {
    const x = s.sets.get(n)!;
    lines.push(`set ${x.decl}`);
    if (!x.dynamic) for (const e of x.elems) lines.push(`  ${e}`);
  }
  for (const n of [...s.chains.keys()].sort()) {
    const c = s.chains.get(n)!;
    lines.push(`chain ${c.decl}`);
    for (const r of c.rules) lines.push(`  ${r}`);
  }
  return lines.join('\n') + '\n';
}

export const nftStateHash = (s: NftState | null): string => sha(nftStateText(s));

/** an object whose declaration differs, and the fields that differ (`comment`, `type`, `prio`, ...) */
export interface Redeclared { name: string; fields: string[] }

/** the top-level keys of two declarations (JSON text) whose values differ */
function declFields(a: string, b: string): string[] {
  const x = JSON.parse(a) as Json;
  const y = JSON.parse(b) as Json;
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k])).sort();
}

/** What turns `live` into `want`. */
export interface NftPlan {
  empty: boolean;
  table: 'create' | null;
  sets: {
    create: string[];
    /** content-addressed sets of an older policy */
    remove: string[];
    /** elements differ: flushed and refilled */
    refill: Array<{ name: string; added: string[]; removed: string[] }>;
    /** declaration differs (type, flags, comment, ...): deleted and recreated in the same transaction */
    redeclare: Redeclared[];
  };
  chains: {
    create: string[];
    remove: string[];
    /** declaration differs (hook, priority, policy, ...): deleted and recreated in the same transaction */
    redeclare: Redeclared[];
    replace: Array<{ name: string; rules: number; was: number; added: number; removed: number; decl: boolean }>;
  };
}

export function emptyNftPlan(): NftPlan {
  return { empty: true, table: null, sets: { create: [], remove: [], refill: [], redeclare: [] }, chains: { create: [], remove: [], redeclare: [], replace: [] } };
}

export function diffNft(want: NftState, live: NftState | null): NftPlan {
  const have: NftState = live ?? { sets: new Map(), chains: new Map() };
  const p: NftPlan = { ...emptyNftPlan(), table: live ? null : 'create' };
  for (const [n, s] of want.sets) {
    const h = have.sets.get(n);
    if (!h) { p.sets.create.push(n); continue; }
    if (h.decl !== s.decl) p.sets.redeclare.push({ name: n, fields: declFields(h.decl, s.decl) });
    if (!s.dynamic && h.elems.join('\n') !== s.elems.join('\n')) {
      const hs = new Set(h.elems);
      const ws = new Set(s.elems);
      p.sets.refill.push({ name: n, added: s.elems.filter((e) => !hs.has(e)), removed: h.elems.filter((e) => !ws.has(e)) });
    }
  }
  for (const n of have.sets.keys()) if (!want.sets.has(n) && !isDynamicSet(n)) p.sets.remove.push(n);
  for (const [n, c] of want.chains) {
    const h = have.chains.get(n);
    if (!h) { p.chains.create.push(n); continue; }
    if (h.decl !== c.decl) p.chains.redeclare.push({ name: n, fields: declFields(h.decl, c.decl) });
    if (h.decl !== c.decl || h.rules.join('\n') !== c.rules.join('\n')) {
      const hs = new Set(h.rules);
      const ws = new Set(c.rules);
      p.chains.replace.push({
        name: n, rules: c.rules.length, was: h.rules.length, decl: h.decl !== c.decl,
        added: c.rules.filter((r) => !hs.has(r)).length, removed: h.rules.filter((r) => !ws.has(r)).length,
      });
    }
  }
  for (const n of have.chains.keys()) if (!want.chains.has(n)) p.chains.remove.push(n);
  p.empty = !p.table && [p.sets.create, p.sets.remove, p.sets.refill, p.sets.redeclare, p.chains.create, p.chains.remove, p.chains.replace].every((a) => a.length === 0);
  return p;
}

export function formatNftPlan(p: NftPlan, want: NftState): string {
  if (p.empty) return '';
  const out: string[] = [];
  if (p.table) out.push(`+ table ${NFT_REF}`);
  for (const n of p.sets.create) out.push(`+ set ${n} (${want.sets.get(n)!.dynamic ? 'dynamic members' : `${want.sets.get(n)!.elems.length} elements`})`);
  for (const s of p.sets.refill) out.push(`~ set ${s.name}: +${s.added.length} -${s.removed.length} elements (refilled)`);
  for (const r of p.sets.redeclare) out.push(`~ set ${r.name}: declaration differs (${r.fields.join(', ')}): deleted and recreated in the same transaction`);
  for (const n of p.sets.remove) out.push(`- set ${n} (older policy)`);
  for (const n of p.chains.create) out.push(`+ chain ${n} (${want.chains.get(n)!.rules.length} rules)`);
  for (const c of p.chains.replace) {
    const why = c.decl ? `, declaration differs (${p.chains.redeclare.find((r) => r.name === c.name)?.fields.join(', ')}): deleted and recreated` : '';
    out.push(`~ chain ${c.name}: ${c.was} -> ${c.rules} rules (+${c.added} -${c.removed})${why}`);
  }
  for (const n of p.chains.remove) out.push(`- chain ${n} (older policy)`);
  return out.join('\n') + '\n';
}

/** dynamic members are re-added in lines of at most this many elements */
const ELEMS_PER_LINE = 1000;

/**
 * The lines around `script` that make it turn `live` into the script's state
 * in the same transaction (one `nft -f`: the kernel applies all of it or
 * none of it, so there is never a moment without rules):
 *
 * - before it: when an object of the live table must be redeclared (a set
 *   whose type, flags or comment differ, e.g. a set two segments share under
 *   different comments; a chain whose hook, priority or policy differ), flush
 *   EVERY live chain (nothing references anything any more; the script
 *   refills our chains) and delete those objects; the script then creates
 *   them anew. Otherwise only flush the content-addressed sets whose elements
 *   were altered (the script never flushes sets).
 * - after it: re-add the live members of a redeclared dynamic member set;
 *   remove the chains and content-addressed sets of an older policy (flushed
 *   before deleted: nft deletes only empty, unreferenced chains). Dynamic
 *   member sets are kept, as with ipset.
 */
export function transactionAround(plan: NftPlan, live: NftState | null): { before: string[]; after: string[] } {
  const redeclared = new Set(plan.sets.redeclare.map((r) => r.name));
  const rebuild = !!live && (redeclared.size > 0 || plan.chains.redeclare.length > 0);
  const before = [
    ...(rebuild ? [...live!.chains.keys()].map((c) => `flush chain ${NFT_REF} ${c}`) : []),
    ...(rebuild ? plan.chains.redeclare.map((c) => `delete chain ${NFT_REF} ${c.name}`) : []),
    ...(rebuild ? plan.sets.redeclare.map((s) => `delete set ${NFT_REF} ${s.name}`) : []),
    ...plan.sets.refill.filter((s) => !redeclared.has(s.name)).map((s) => `flush set ${NFT_REF} ${s.name}`),
  ];
  const members: string[] = [];
  for (const n of redeclared) {
    const s = live?.sets.get(n);
    if (!s?.dynamic) continue;
    for (let i = 0; i < s.elems.length; i += ELEMS_PER_LINE) members.push(`add element ${NFT_REF} ${n} { ${s.elems.slice(i, i + ELEMS_PER_LINE).join(', ')} }`);
  }
  const after = [
    ...members,
    ...plan.chains.remove.map((c) => `flush chain ${NFT_REF} ${c}`),
    ...plan.chains.remove.map((c) => `delete chain ${NFT_REF} ${c}`),
    ...plan.sets.remove.map((s) => `delete set ${NFT_REF} ${s}`),
  ];
  return { before, after };
}

/** A transaction that puts the table back to a snapshot (`snapshotNft()` text; null = no table). */
export function restoreScript(snapshot: string | null): string {
  return `table ${NFT_REF} {}\ndelete table ${NFT_REF}\n${snapshot ?? ''}`;
}
