/**
 * manifest.json: what was compiled, how to load it, content hashes of each
 * payload, rule/set/entry counts and the source map (rule -> policy entries).
 * Deterministic: no timestamps, so an unchanged policy gives identical bytes.
 */
import { basename } from 'node:path';
import type { Family } from '../core/index.js';
import type { Plan } from '../compile/plan.js';
import { locText, sha256 } from '../compile/util.js';
import { forwardJump, ruleComment } from './iptables.js';

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

export function renderManifest(plan: Plan, payloads: Payloads): string {
  const files: Record<string, { sha256: string; bytes: number }> = {};
  for (const [name, text] of Object.entries(payloads)) files[name] = { sha256: sha256(text), bytes: Buffer.byteLength(text) };
  const fam = (f: Family) => {
    const fp = plan.families[f];
    return {
      top: fp.top,
      forwardJump: forwardJump(plan, fp),
      counts: familyCounts(plan, f),
      chains: fp.chains.map((c) => ({ name: c.name, role: c.role, ...(c.phase ? { phase: c.phase } : {}), rules: c.rules.length })),
      sets: fp.sets.map((s) => ({
        name: s.name, type: s.kind.type, entries: s.entries, what: s.what,
        locs: s.locs.map((l) => locText(l, plan.policyFile)),
      })),
      sourceMap: fp.chains.flatMap((c) =>
        c.rules.map((r, i) => ({
          chain: c.name, rule: i + 1, step: r.step, comment: ruleComment(plan, r),
          locs: r.locs.map((l) => ({ at: locText(l, plan.policyFile), path: l.path })),
        })),
      ),
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
  return JSON.stringify(manifest, null, 2) + '\n';
}
