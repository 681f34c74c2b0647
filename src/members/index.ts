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
  /** where the sets live: ipset (iptables, default) or table inet cellwall (nft); ebpf: the state dir, rebuilt into the maps */
  backend?: 'iptables' | 'nft' | 'ebpf';
  /** ebpf: the state dir (members, the applied policy, the lock) and how long to wait for the lock */
  stateDir?: string;
  lockTimeout?: number;
  log?: (line: string) => void;
}

export interface MembersResult {
  group: string;
  phase: Phase;
  sets: { 4: string; 6: string };
  /** add/del: the addresses changed; list: the members */
  members: string[];
  /** ebpf add/del: how the live maps were changed (lpm: updates in place; generation: a new generation installed) */
  ebpf?: { path: 'lpm' | 'generation'; updates: number; generation: string };
}

export async function runMembers(req: MembersRequest): Promise<MembersResult> {
  const sets = { 4: dynamicSetName(req.group, req.phase, 4), 6: dynamicSetName(req.group, req.phase, 6) } as const;
  if (req.backend === 'nft') return await runMembersNft(req, sets);
  if (req.backend === 'ebpf') {
    const { runMembersEbpf } = await import('./ebpf.js');
    const { stateDirOf } = await import('../apply/statedir.js');
    return await runMembersEbpf(req, req.action === 'list' ? null : parseAddresses(req), {
      stateDir: stateDirOf(req.stateDir), lockTimeout: req.lockTimeout ?? 120, log: req.log ?? (() => undefined),
    });
  }
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
  const parsed = parseAddresses(req);
  // one `ipset restore` for all addresses: every change or none
  const lines: string[] = [];
  const changed: string[] = [];
  for (const p of parsed) {
    const set = sets[p.family];
    if (!present.has(set)) throw new CellwallError(`group "${req.group}" has no IPv${p.family} ${req.phase} member set (${set}) on this cell`);
    lines.push(`${req.action} ${set} ${p.text} -exist`);
    changed.push(p.text);
  }
  const r = await run('ipset', ['restore'], lines.join('\n') + '\n');
  if (r.code !== 0) throw new CellwallError(`ipset restore failed, nothing changed: ${r.stderr.trim()}`);
  return { group: req.group, phase: req.phase, sets, members: changed };
}

function parseAddresses(req: MembersRequest): Array<{ family: 4 | 6; text: string }> {
  if (req.addresses.length === 0) throw new CellwallError(`members ${req.action}: give at least one IP address or CIDR`);
  const parsed = parseEntries(req.addresses, { ranges: false });
  const bad = parsed.map((p, i) => (p.ok ? null : `"${req.addresses[i]}": ${p.reason}`)).filter((x): x is string => x !== null);
  if (bad.length) throw new CellwallError(`members ${req.action}: invalid address (expected an IPv4/IPv6 address or CIDR):\n  ${bad.join('\n  ')}`);
  return parsed.flatMap((p) => (p.ok ? [{ family: p.family, text: p.text }] : []));
}

/**
 * nft backend: the same sets in `table inet cellwall`, listed with
 * `nft -j list set`, changed with `add element` / `delete element`, every
 * address in one `nft -f` transaction (all or nothing).
 */
async function runMembersNft(req: MembersRequest, sets: { 4: string; 6: string }): Promise<MembersResult> {
  const { NFT_REF, elemText } = await import('../state/nft.js');
  const listed = new Map<4 | 6, string[]>();
  for (const f of [4, 6] as const) {
    const r = await run('nft', ['-j', 'list', 'set', ...NFT_REF.split(' '), sets[f]]);
    if (r.code !== 0) {
      if (/No such file or directory|does not exist/i.test(r.stderr)) continue;
      throw new CellwallError(`nft -j list set ${NFT_REF} ${sets[f]} failed: ${r.stderr.trim()}`);
    }
    const items = (JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: unknown[] } }> }).nftables;
    listed.set(f, items.flatMap((i) => (i.set ? (i.set.elem ?? []).map(elemText) : [])));
  }
  if (listed.size === 0) {
    throw new CellwallError(
      `group "${req.group}" has no ${req.phase} member sets in table ${NFT_REF} (${sets[4]}, ${sets[6]}): ` +
        'apply a policy in which it is a dynamic group (members: dynamic) with --backend nft first');
  }
  if (req.action === 'list') return { group: req.group, phase: req.phase, sets, members: [...(listed.get(4) ?? []), ...(listed.get(6) ?? [])] };
  // nft prints a host address without its /32 or /128
  const key = (a: string): string => a.replace(/\/(32|128)$/, '');
  const lines: string[] = [];
  const changed: string[] = [];
  for (const p of parseAddresses(req)) {
    const have = listed.get(p.family);
    if (!have) throw new CellwallError(`group "${req.group}" has no IPv${p.family} ${req.phase} member set (${sets[p.family]}) in table ${NFT_REF}`);
    // `add` of a present element is a no-op; `delete` of an absent one would fail the transaction: skip it (as ipset -exist)
    if (req.action === 'del' && !have.some((m) => key(m) === key(p.text))) continue;
    lines.push(`${req.action === 'add' ? 'add' : 'delete'} element ${NFT_REF} ${sets[p.family]} { ${p.text} }`);
    changed.push(p.text);
  }
  if (lines.length === 0) return { group: req.group, phase: req.phase, sets, members: changed };
  const r = await run('nft', ['-f', '/dev/stdin'], lines.join('\n') + '\n');
  if (r.code !== 0) throw new CellwallError(`nft -f failed, nothing changed (one transaction): ${r.stderr.trim().split('\n')[0]}`);
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
