/**
 * Live netfilter state of a cell in the plan's terms: the CW- part of the
 * v4 and v6 filter tables and the cw- ipsets, plus canonical hashes.
 */
import { sha256 } from '../core/sha256.js';
import { runOk } from './exec.js';
import type { Tools } from './backend.js';
import { cwPartOf, parseSave, type FamilyState } from './iptables.js';
import { cwSets, parseIpset, type IpSetState } from './ipset.js';

export interface CellState {
  v4: FamilyState;
  v6: FamilyState;
  sets: Map<string, IpSetState>;
}

export async function readLive(tools: Tools): Promise<CellState> {
  const [s4, s6, ips] = await Promise.all([
    runOk(tools.save4, ['-t', 'filter']),
    runOk(tools.save6, ['-t', 'filter']),
    runOk(tools.ipset, ['save']),
  ]);
  return {
    v4: cwPartOf(parseSave(s4).get('filter'), 4),
    v6: cwPartOf(parseSave(s6).get('filter'), 6),
    sets: cwSets(parseIpset(ips, 'ipset save').sets),
  };
}

/** Canonical text of one family's CW part (what the hash covers). */
export function familyText(f: FamilyState): string {
  const lines: string[] = [];
  for (const name of [...f.chains.keys()].sort()) {
    lines.push(`chain ${name}`);
    for (const r of f.chains.get(name)!) lines.push(`  ${r.norm}`);
  }
  const hosts = [...new Set(f.jumps.map((j) => j.host))].sort();
  for (const h of hosts) {
    for (const j of f.jumps.filter((x) => x.host === h)) lines.push(`jump ${h} ${j.top === false ? 'not-first' : 'first'} ${j.norm}`);
  }
  return lines.join('\n') + '\n';
}

/** Canonical text of the cw- sets: dynamic sets by header only (their members are runtime state). */
export function setsText(sets: Map<string, IpSetState>): string {
  const lines: string[] = [];
  for (const name of [...sets.keys()].sort()) {
    const s = sets.get(name)!;
    lines.push(`set ${name} ${s.header}${s.dynamic ? ' dynamic' : ''}`);
    if (!s.dynamic) for (const m of s.membersNorm) lines.push(`  ${m}`);
  }
  return lines.join('\n') + '\n';
}

export interface StateHashes { v4: string; v6: string; sets: string }

export function stateHashes(s: CellState): StateHashes {
  return { v4: sha256(familyText(s.v4)), v6: sha256(familyText(s.v6)), sets: sha256(setsText(s.sets)) };
}

