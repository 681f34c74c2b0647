/**
 * manifest.json: what was compiled, how to load it, content hashes of each
 * payload, rule/set/entry counts and the source map (rule -> policy entries).
 * Deterministic: no timestamps, so an unchanged policy gives identical bytes.
 */
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import type { Family } from '../core/index.js';
import type { Plan } from '../compile/plan.js';
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

export function renderManifest(plan: Plan, payloads: Payloads | Record<string, string | Buffer>): string {
  const files: Record<string, { sha256: string; bytes: number }> = {};
  for (const [name, text] of Object.entries(payloads)) {
    files[name] = typeof text === 'string'
      ? { sha256: sha256(text), bytes: Buffer.byteLength(text) }
      : { sha256: createHash('sha256').update(text).digest('hex'), bytes: text.length };
  }
  const fam = (f: Family) => {
    const fp = plan.families[f];
    return {
      top: fp.top,
      forwardJump: forwardJump(plan, fp),
      counts: familyCounts(plan, f),
      chains: fp.chains.map((c) => ({ name: c.name, role: c.role, ...(c.phase ? { phase: c.phase } : {}), rules: c.rules.length })),
      // ~10^5 entries at CF scale: written straight to JSON text, one entry per line
      sets: new JsonLines(fp.sets.map((s) =>
        `{"name":${q(s.name)},"type":${q(s.kind.type)},"entries":${s.entries},"what":${q(s.what)},"locs":[${s.locs.map((l) => q(locText(l, plan.policyFile))).join(',')}]}`)),
      // the rule's comment is on its payload line; the map adds every location and the field path
      sourceMap: new JsonLines(fp.chains.flatMap((c) => {
        const chain = q(c.name);
        return c.rules.map((r, i) =>
          `{"chain":${chain},"rule":${i + 1},"step":${r.step},"locs":[${r.locs.map((l) => `{"at":${q(locText(l, plan.policyFile))},"path":${q(l.path)}}`).join(',')}]}`);
      })),
    };
  };
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
    v4: fam(4),
    v6: fam(6),
  };
  return prettyJson(manifest) + '\n';
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
 */
export function prettyJson(v: unknown, indent = ''): string {
  const inner = `${indent}  `;
  const lines = (xs: string[]) => (xs.length ? `[\n${inner}${xs.join(`,\n${inner}`)}\n${indent}]` : '[]');
  if (v instanceof JsonLines) return lines(v.lines);
  if (Array.isArray(v) && v.length && v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x))) {
    return lines(v.map((x) => JSON.stringify(x)));
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    if (!entries.length) return '{}';
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${prettyJson(x, inner)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(v, null, 2).replace(/\n/g, `\n${indent}`);
}
