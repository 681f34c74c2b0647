/**
 * `cellwall members add|del|list GROUP`: the run-time membership of a dynamic
 * group on this cell (SPEC §1 `members: dynamic`). Members live in the
 * group's per-phase, per-family ipsets (names from dynamicSetName), which the
 * compiled payload creates empty and apply never flushes.
 */
import { parseEntries } from '../core/index.js';
import { CellwallError } from '../errors.js';
import { dynamicSetName } from '../policy/names.js';
import type { Phase } from '../policy/model.js';
import { run, runOk } from '../state/exec.js';

export type MembersAction = 'add' | 'del' | 'list';

export interface MembersRequest {
  action: MembersAction;
  group: string;
  phase: Phase;
  addresses: string[];
}

export interface MembersResult {
  group: string;
  phase: Phase;
  sets: { 4: string; 6: string };
  /** add/del: the addresses changed; list: the members */
  members: string[];
}

export async function runMembers(req: MembersRequest): Promise<MembersResult> {
  const sets = { 4: dynamicSetName(req.group, req.phase, 4), 6: dynamicSetName(req.group, req.phase, 6) } as const;
  const present = await existingSets();
  if (!present.has(sets[4]) && !present.has(sets[6])) {
    throw new CellwallError(
      `group "${req.group}" has no ${req.phase} member sets on this cell (${sets[4]}, ${sets[6]}): ` +
        'apply a policy in which it is a dynamic group (members: dynamic) first');
  }
  if (req.action === 'list') {
    const members: string[] = [];
    for (const f of [4, 6] as const) if (present.has(sets[f])) members.push(...(await listMembers(sets[f])));
    return { group: req.group, phase: req.phase, sets, members };
  }
  if (req.addresses.length === 0) throw new CellwallError(`members ${req.action}: give at least one IP address or CIDR`);
  const parsed = parseEntries(req.addresses, { ranges: false });
  const bad = parsed.map((p, i) => (p.ok ? null : `"${req.addresses[i]}": ${p.reason}`)).filter((x): x is string => x !== null);
  if (bad.length) throw new CellwallError(`members ${req.action}: invalid address (expected an IPv4/IPv6 address or CIDR):\n  ${bad.join('\n  ')}`);
  // one `ipset restore` for all addresses: every change or none
  const lines: string[] = [];
  const changed: string[] = [];
  for (const p of parsed) {
    if (!p.ok) continue;
    const set = sets[p.family];
    if (!present.has(set)) throw new CellwallError(`group "${req.group}" has no IPv${p.family} ${req.phase} member set (${set}) on this cell`);
    lines.push(`${req.action} ${set} ${p.text} -exist`);
    changed.push(p.text);
  }
  const r = await run('ipset', ['restore'], lines.join('\n') + '\n');
  if (r.code !== 0) throw new CellwallError(`ipset restore failed, nothing changed: ${r.stderr.trim()}`);
  return { group: req.group, phase: req.phase, sets, members: changed };
}

async function existingSets(): Promise<Set<string>> {
  const out = await runOk('ipset', ['list', '-n']);
  return new Set(out.split('\n').map((s) => s.trim()).filter(Boolean));
}

async function listMembers(set: string): Promise<string[]> {
  const out = await runOk('ipset', ['list', set, '-o', 'save']);
  const members: string[] = [];
  for (const line of out.split('\n')) {
    const m = /^add \S+ (\S+)/.exec(line);
    if (m) members.push(m[1]);
  }
  return members;
}
