/**
 * `members add|del|list GROUP --backend ebpf`: the members live in the state
 * dir (STATE/ebpf/members.json; the kernel maps hold no group names). A change
 * rebuilds the map contents of the last applied policy (its payload texts are
 * kept in STATE/ebpf/applied.json) with every recorded member as a source
 * class of its own, and installs them as a new generation with the same
 * atomic swap, verify and rollback as `apply --backend ebpf` (under the same
 * lock). Fine at small scale: each change re-evaluates the policy's maps.
 */
import { CellwallError } from '../errors.js';
import type { MapMember } from '../ebpf/maps.js';
import { dynamicSetName } from '../policy/names.js';
import type { MembersRequest, MembersResult } from './index.js';

export interface MembersEbpfOptions { stateDir: string; lockTimeout: number; log: (line: string) => void }

export async function runMembersEbpf(req: MembersRequest, addresses: Array<{ family: 4 | 6; text: string }> | null, o: MembersEbpfOptions): Promise<MembersResult> {
  const [{ readApplied, readMembers, writeMembers }, { manifestPath, readJson }, { planFromPayloads }, ebpf] = await Promise.all([
    import('../state/ebpf.js'), import('../apply/statedir.js'), import('../diff/parse.js'), import('../apply/ebpf.js'),
  ]);
  const sets = { 4: dynamicSetName(req.group, req.phase, 4), 6: dynamicSetName(req.group, req.phase, 6) } as const;
  const manifest = await readJson<import('../apply/ebpf.js').EbpfManifest>(manifestPath(o.stateDir));
  const applied = await readApplied(o.stateDir);
  if (!manifest || manifest.backend !== ebpf.EBPF_BACKEND || !applied) {
    throw new CellwallError(`nothing was applied with --backend ebpf on this cell (state dir ${o.stateDir}): apply a policy in which "${req.group}" is a dynamic group (members: dynamic) first`);
  }
  const texts = { ipset: applied.ipset, v4: applied.v4, v6: applied.v6 };
  const plan = planFromPayloads(texts, applied.segment ?? '(applied)', 'applied policy');
  const dynamic = new Set<string>();
  for (const f of [4, 6] as const) for (const s of plan.families[f].sets) if (s.kind.type === 'dynamic') dynamic.add(`${s.kind.group}/${s.kind.phase}`);
  if (!dynamic.has(`${req.group}/${req.phase}`)) {
    const names = [...new Set([...dynamic].map((d) => d.split('/')[0]))].sort();
    throw new CellwallError(`group "${req.group}" has no ${req.phase} members in the applied policy (${applied.source}): ` +
      `it is not a dynamic group there (dynamic groups: ${names.join(', ') || 'none'})`);
  }
  const before = await readMembers(o.stateDir);
  const mine = (ms: MapMember[]) => ms.filter((m) => m.phase === req.phase && m.groups.includes(req.group)).map((m) => m.addr);
  if (req.action === 'list' || !addresses) return { group: req.group, phase: req.phase, sets, members: mine(before) };

  const { acquireLock } = await import('../apply/lock.js');
  const lock = await acquireLock(o.stateDir, o.lockTimeout, o.log);
  try {
    const current = await readMembers(o.stateDir);
    const next = current.map((m) => ({ ...m, groups: [...m.groups] }));
    const changed: string[] = [];
    for (const a of addresses) {
      const i = next.findIndex((m) => m.addr === a.text);
      if (req.action === 'add') {
        if (i < 0) { next.push({ addr: a.text, phase: req.phase, groups: [req.group] }); changed.push(a.text); continue; }
        const m = next[i];
        if (m.phase !== req.phase) throw new CellwallError(`${a.text} is a ${m.phase} member (of ${m.groups.join(', ')}); an address has one phase: del it there first`);
        if (!m.groups.includes(req.group)) { m.groups = [...m.groups, req.group].sort(); changed.push(a.text); }
      } else if (i >= 0 && next[i].phase === req.phase && next[i].groups.includes(req.group)) {
        next[i].groups = next[i].groups.filter((g) => g !== req.group);
        if (next[i].groups.length === 0) next.splice(i, 1);
        changed.push(a.text);
      }
    }
    if (changed.length === 0) return { group: req.group, phase: req.phase, sets, members: [] };
    await writeMembers(o.stateDir, next);
    const input = {
      object: Buffer.from(applied.object, 'base64'), texts, maps: null, source: applied.source, policyHash: applied.policyHash,
      segment: applied.segment, stamp: '', plan: async () => plan,
    };
    try {
      await ebpf.applyEbpfLocked(input, { stateDir: o.stateDir, root: manifest.root, devices: manifest.devices, fill: manifest.fill?.method, log: o.log }, next);
    } catch (e) {
      await writeMembers(o.stateDir, current);
      throw e;
    }
    return { group: req.group, phase: req.phase, sets, members: changed };
  } finally {
    await lock.release();
  }
}
