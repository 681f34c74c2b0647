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
import { NFT_FAMILY, NFT_TABLE, nftQuote } from '../render/nft.js';
import { run } from './exec.js';
import { sha256 } from '../core/sha256.js';

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

/**
 * Other tables' base chains on the forward hook whose policy is drop (e.g.
 * iptables-nft's `ip filter FORWARD` at policy DROP), as `family table chain`.
 * Our `accept` cannot override them: see "enforce" in docs/nft.md.
 */
export async function forwardDropChains(): Promise<string[]> {
  const r = await run('nft', ['-j', 'list', 'chains']);
  if (r.code !== 0) return [];
  const items = (JSON.parse(r.stdout) as { nftables?: Json[] }).nftables ?? [];
  return items.flatMap((it) => {
    const c = it.chain as { family: string; table: string; name: string; hook?: string; policy?: string } | undefined;
    return c && c.hook === 'forward' && c.policy === 'drop' && !(c.family === NFT_FAMILY && c.table === NFT_TABLE) ? [`${c.family} ${c.table} ${c.name}`] : [];
  });
}

/** the mode ruleset.nft was compiled for, from its first line (`# cellwall V segment S (MODE) policy H`) */
export const scriptMode = (script: string): string | null => /^# cellwall \S+ segment .* \((tighten|enforce)\) policy \S+$/m.exec(script.split('\n', 1)[0] ?? '')?.[1] ?? null;

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

export const nftStateHash = (s: NftState | null): string => sha256(nftStateText(s));

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

/** elements are added in lines of at most this many */
const ELEMS_PER_LINE = 1000;

/** the name under which a set whose declaration must change is staged while the rules switch over */
export const stagingName = (set: string): string => `cw-tmp-${set}`;

/** `add set` + `add element` lines creating set `name` with the declaration of `s` (as `nft -j` printed it) and `elems` */
export function createSetLines(name: string, s: NftSet, elems: string[]): string[] {
  const d = JSON.parse(s.decl) as Json & { type: string | string[]; flags?: string[]; comment?: string };
  const known = new Set(['family', 'name', 'table', 'type', 'flags', 'comment', 'policy', 'size', 'timeout', 'gc-interval']);
  const other = Object.keys(d).filter((k) => !known.has(k));
  if (other.length) throw new Error(`nft: cannot recreate set ${s.name}: unexpected declaration field(s) ${other.join(', ')}`);
  const spec = [
    `type ${Array.isArray(d.type) ? d.type.join(' . ') : d.type};`,
    ...(d.flags?.length ? [`flags ${d.flags.join(',')};`] : []),
    ...(d.policy ? [`policy ${d.policy};`] : []),
    ...(d.size ? [`size ${d.size};`] : []),
    ...(d.timeout ? [`timeout ${d.timeout}s;`] : []),
    ...(d['gc-interval'] ? [`gc-interval ${d['gc-interval']}s;`] : []),
    ...(d.comment !== undefined ? [`comment ${nftQuote(d.comment)};`] : []),
  ];
  const out = [`add set ${NFT_REF} ${name} { ${spec.join(' ')} }`];
  for (let i = 0; i < elems.length; i += ELEMS_PER_LINE) out.push(`add element ${NFT_REF} ${name} { ${elems.slice(i, i + ELEMS_PER_LINE).join(', ')} }`);
  return out;
}

/** `script` with every whole-word occurrence of the given set names replaced by their staging names */
export function renameSets(script: string, names: string[]): string {
  if (!names.length) return script;
  const esc = names.map((n) => n.replace(/[.]/g, '\\.'));
  return script.replace(new RegExp(`(?<![A-Za-z0-9_.-])(${esc.join('|')})(?![A-Za-z0-9_.-])`, 'g'), (n) => stagingName(n));
}

/**
 * The lines around `script` in the transaction that switches the rules over
 * (see nftTransactions):
 *
 * - before it: when a chain must be redeclared (hook, priority or policy
 *   differ), flush EVERY live chain (nothing references it any more; the
 *   script refills our chains) and delete it; the script creates it anew.
 *   Flush the content-addressed sets whose elements were altered (the script
 *   never flushes sets), except those being redeclared (deleted after it).
 * - after it: remove the chains and content-addressed sets of an older policy
 *   (flushed before deleted: nft deletes only empty, unreferenced chains).
 *   Dynamic member sets are kept, as with ipset.
 */
export function transactionAround(plan: NftPlan, live: NftState | null): { before: string[]; after: string[] } {
  const redeclared = new Set(plan.sets.redeclare.map((r) => r.name));
  const before = [
    ...(live && plan.chains.redeclare.length ? [...live.chains.keys()].map((c) => `flush chain ${NFT_REF} ${c}`) : []),
    ...(live ? plan.chains.redeclare.map((c) => `delete chain ${NFT_REF} ${c.name}`) : []),
    ...plan.sets.refill.filter((s) => !redeclared.has(s.name)).map((s) => `flush set ${NFT_REF} ${s.name}`),
  ];
  const after = [
    ...plan.chains.remove.map((c) => `flush chain ${NFT_REF} ${c}`),
    ...plan.chains.remove.map((c) => `delete chain ${NFT_REF} ${c}`),
    ...plan.sets.remove.map((s) => `delete set ${NFT_REF} ${s}`),
  ];
  return { before, after };
}

/** one `nft -f` (one kernel transaction): `before` + `script` (when given) + `after` */
export interface NftTxn { step: 'stage' | 'switch' | 'recreate' | 'final'; before: string[]; script: string | null; after: string[] }

export const txnText = (t: NftTxn): string => [...t.before, ...(t.script === null ? [] : [t.script]), ...t.after, ''].join('\n');

/**
 * The transactions that turn `live` into the script's state. Each is atomic
 * and each leaves a table that means either the old policy or the new one.
 *
 * Why more than one: the kernel publishes a set's contents to the packet path
 * at the end of the commit, after the new rules are already live, so a rule
 * that refers to a set created (or recreated) in the same transaction sees it
 * EMPTY for a moment (measured on 6.18, see docs/nft.md). Hence:
 *
 *  1. stage: create, unreferenced, every set the live table lacks (with its
 *     elements), and every set whose declaration must change (a comment,
 *     type, flags) under its staging name `cw-tmp-<name>`, holding the new
 *     elements (dynamic sets: their live members);
 *  2. switch: the script (with redeclared sets renamed to their staging
 *     names) + the lines of transactionAround + delete the old redeclared
 *     sets (no rule references them any more);
 *  3. recreate (only with redeclared sets): create them under their own
 *     names with the new declaration, unreferenced;
 *  4. final (idem): the script as it is (the rules move to those sets) +
 *     delete the staging sets.
 * With no live table there are no rules to protect: the script alone.
 */
export function nftTransactions(plan: NftPlan, want: NftState, live: NftState | null, script: string): NftTxn[] {
  const around = transactionAround(plan, live);
  if (!live) return [{ step: 'switch', ...around, script }];
  const redeclared = plan.sets.redeclare.map((r) => r.name);
  const elemsOf = (n: string): string[] => (want.sets.get(n)!.dynamic ? live.sets.get(n)?.elems ?? [] : want.sets.get(n)!.elems);
  const stage = [
    ...plan.sets.create.flatMap((n) => createSetLines(n, want.sets.get(n)!, elemsOf(n))),
    ...redeclared.flatMap((n) => createSetLines(stagingName(n), want.sets.get(n)!, elemsOf(n))),
  ];
  const txns: NftTxn[] = [];
  if (stage.length) txns.push({ step: 'stage', before: stage, script: null, after: [] });
  txns.push({
    step: 'switch', before: around.before, script: renameSets(script, redeclared),
    after: [...around.after, ...redeclared.map((n) => `delete set ${NFT_REF} ${n}`)],
  });
  if (redeclared.length) {
    txns.push({ step: 'recreate', before: redeclared.flatMap((n) => createSetLines(n, want.sets.get(n)!, elemsOf(n))), script: null, after: [] });
    txns.push({ step: 'final', before: [], script, after: redeclared.map((n) => `delete set ${NFT_REF} ${stagingName(n)}`) });
  }
  return txns;
}

/** A transaction that puts the table back to a snapshot (`snapshotNft()` text; null = no table). */
export function restoreScript(snapshot: string | null): string {
  return `table ${NFT_REF} {}\ndelete table ${NFT_REF}\n${snapshot ?? ''}`;
}
