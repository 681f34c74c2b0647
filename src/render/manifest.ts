/**
 * manifest.json: what was compiled, how to load it, content hashes of each
 * payload, rule/set/entry counts and the source map (rule -> policy entries).
 * Deterministic: no timestamps, so an unchanged policy gives identical bytes.
 */
import { basename } from 'node:path';
import type { Family } from '../core/index.js';
import type { Plan } from '../compile/plan.js';
import type { SourceLoc } from '../errors.js';
import { locText, sha256 } from '../compile/util.js';
import { forwardJump } from './iptables.js';

export interface Payloads {
  'ipset.restore': string;
  'iptables.v4': string;
  'iptables.v6': string;
}

export interface FamilyCounts {
  chains: number;
  rules: number;
  sets: number;
  /** entries in the sets compile fills (dynamic member sets are filled at run time) */
  entries: number;
}

export function familyCounts(plan: Plan, f: Family): FamilyCounts {
  const fp = plan.families[f];
  return {
    chains: fp.chains.length,
    // + the FORWARD jump
    rules: fp.chains.reduce((n, c) => n + c.rules.length, 0) + 1,
    sets: fp.sets.length,
    entries: fp.sets.reduce((n, s) => n + (s.kind.type === 'list' ? s.kind.members.length : s.entries), 0),
  };
}

/** a file's sha256 and length, as the manifest lists it */
export interface FileSum { sha256: string; bytes: number }

export function fileSum(data: string | Buffer): FileSum {
  return { sha256: sha256(data), bytes: typeof data === 'string' ? Buffer.byteLength(data) : data.length };
}

/**
 * `known`: sums of files already hashed (by name); `parts`: manifestFamilies(plan),
 * when already computed (compile builds them while a worker renders the ipset payload).
 */
export function renderManifest(plan: Plan, payloads: Payloads | Record<string, string | Buffer | null>, known: Record<string, FileSum> = {}, parts?: ManifestFamilies): string {
  const files: Record<string, FileSum> = {};
  for (const [name, text] of Object.entries(payloads)) {
    const k = known[name];
    if (k) files[name] = k;
    else if (text === null) throw new Error(`manifest: no sum for ${name}`);
    else files[name] = fileSum(text);
  }
  const fams = parts ?? manifestFamilies(plan);
  const manifest = {
    cellwall: plan.cellwallVersion,
    backend: 'iptables',
    segment: plan.segment,
    mode: plan.mode,
    policy: { file: basename(plan.policyFile), hash: plan.policyHash },
    files,
    apply: {
      order: ['ipset restore < ipset.restore', 'iptables-restore --noflush < iptables.v4', 'ip6tables-restore --noflush < iptables.v6'],
      note: 'each iptables payload inserts its FORWARD jump with -I FORWARD 1 on every load; remove an existing jump to the same chain first so the jump stays unique',
    },
    stats: plan.stats,
    v4: fams.v4,
    v6: fams.v6,
  };
  return prettyJson(manifest) + '\n';
}

/** The per-family part of the manifest (chains, sets, source map): most of its bytes, independent of the payloads. */
export interface ManifestFamilies { v4: unknown; v6: unknown }

export function manifestFamilies(plan: Plan): ManifestFamilies {
  // locations repeat (a bucket's rules, both families, log + allow rules share one list): each written once
  const at = new Map<SourceLoc, string>();
  const atOf = (l: SourceLoc) => {
    let t = at.get(l);
    if (t === undefined) at.set(l, (t = q(locText(l, plan.policyFile))));
    return t;
  };
  const lists = new Map<SourceLoc[], string>();
  const locList = (locs: SourceLoc[]) => {
    let t = lists.get(locs);
    if (t === undefined) lists.set(locs, (t = locs.map((l) => `{"at":${atOf(l)},"path":${q(l.path)}}`).join(',')));
    return t;
  };
  const fam = (f: Family) => {
    const fp = plan.families[f];
    return {
      top: fp.top,
      forwardJump: forwardJump(plan, fp),
      counts: familyCounts(plan, f),
      chains: fp.chains.map((c) => ({ name: c.name, role: c.role, ...(c.phase ? { phase: c.phase } : {}), rules: c.rules.length })),
      // ~10^5 entries at CF scale: written straight to JSON text, one entry per line
      sets: new JsonLines(fp.sets.map((s) =>
        `{"name":${q(s.name)},"type":${q(s.kind.type)},"entries":${s.entries},"what":${q(s.what)},"locs":[${s.locs.map(atOf).join(',')}]}`)),
      // the rule's comment is on its payload line; the map adds every location and the field path
      sourceMap: new JsonLines(fp.chains.flatMap((c) => {
        const chain = q(c.name);
        return c.rules.map((r, i) =>
          `{"chain":${chain},"rule":${i + 1},"step":${r.step},"locs":[${locList(r.locs)}]}`);
      })),
    };
  };
  return { v4: fam(4), v6: fam(6) };
}

const q = (s: string) => JSON.stringify(s);

/** an array already serialised, one JSON value per element */
class JsonLines {
  constructor(readonly lines: string[]) {}
}

/**
 * JSON.stringify(v, null, 2), except that arrays of objects (chains, sets, the
 * source map: ~10^5 entries at CF scale) hold one compact object per line:
 * half the bytes, faster to write and read, still one entry per line for diff.
 * The pieces go to one list joined once (a nested join would copy the ~20 MB
 * of a CF-scale source map once per level).
 */
export function prettyJson(v: unknown): string {
  const out: string[] = [];
  writePretty(v, '', out);
  return out.join('');
}

function writePretty(v: unknown, indent: string, out: string[]): void {
  const inner = `${indent}  `;
  const lines = (xs: string[]) => {
    if (!xs.length) { out.push('[]'); return; }
    out.push(`[\n${inner}`);
    const sep = `,\n${inner}`;
    for (let i = 0; i < xs.length; i++) {
      if (i) out.push(sep);
      out.push(xs[i]);
    }
    out.push(`\n${indent}]`);
  };
  if (v instanceof JsonLines) return lines(v.lines);
  if (Array.isArray(v) && v.length && v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x))) {
    return lines(v.map((x) => JSON.stringify(x)));
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    if (!entries.length) { out.push('{}'); return; }
    out.push('{\n');
    entries.forEach(([k, x], i) => {
      out.push(`${i ? ',\n' : ''}${inner}${JSON.stringify(k)}: `);
      writePretty(x, inner, out);
    });
    out.push(`\n${indent}}`);
    return;
  }
  out.push(JSON.stringify(v, null, 2).replace(/\n/g, `\n${indent}`));
}
