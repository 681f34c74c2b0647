/**
 * `members add|del|list GROUP --backend ebpf`: the members live in the state
 * dir (STATE/ebpf/members.json; the kernel maps hold no group names). A change
 * rebuilds the map contents of the last applied policy (its payload texts are
 * kept in STATE/ebpf/applied.json) with every recorded member as a source
 * class of its own, and installs them as a new generation with the same
 * atomic swap, verify and rollback as `apply --backend ebpf` (under the same
 * lock). The installed maps are canonical (src/ebpf/load.ts
 * canonicalContents): members with the same signature (the static sets
 * holding the address, phase, groups) share one source class. So when every
 * changed address has a signature some unchanged member already has, the
 * change is made in the live generation's `cw_src4/6` directly: one LPM
 * update (or delete) per address, no re-evaluation, and the result is what a
 * rebuild would install. Anything else (a new signature, a class that would
 * lose its last prefix, a CIDR member) rebuilds.
 */
import { join } from 'node:path';
import type { Plan } from '../compile/plan.js';
import { AddrSet } from '../core/index.js';
import { CellwallError } from '../errors.js';
import type { Exec, Generation } from '../ebpf/load.js';
import type { MapEntry, MapMember } from '../ebpf/maps.js';
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
      objects: applied.objects.map((x) => ({ variant: x.variant, object: Buffer.from(x.object, 'base64') })), texts, maps: null, source: applied.source, policyHash: applied.policyHash,
      segment: applied.segment, stamp: '', plan: async () => plan,
    };
    const { generation, contentsHash, readMaps } = await import('../ebpf/load.js');
    const { hostExec, ebpfStateDir } = await import('../state/ebpf.js');
    const g = generation(manifest.root, manifest.generation);
    let updates: number | null = null;
    try {
      updates = await lpmChange(hostExec, g, plan, current, next, new Set(changed), ebpfStateDir(o.stateDir));
    } catch (e) {
      o.log(`updating the live maps in place failed (${(e as Error).message.split('\n')[0]}); installing a new generation instead`);
      updates = null;
    }
    if (updates !== null) {
      // the live maps are now what a rebuild would install: record their hash so that apply finds them in sync
      const hash = contentsHash(await readMaps(hostExec, g));
      const { manifestPath: mp, writeAtomic } = await import('../apply/statedir.js');
      await writeAtomic(mp(o.stateDir), JSON.stringify({
        ...manifest, time: new Date().toISOString(), payloadHash: ebpf.targetOf(input.objects, hash), hashes: { maps: hash }, members: next.length,
      }, null, 2) + '\n');
      return { group: req.group, phase: req.phase, sets, members: changed, ebpf: { path: 'lpm', updates, generation: manifest.generation } };
    }
    let r;
    try {
      r = await ebpf.applyEbpfLocked(input, { stateDir: o.stateDir, root: manifest.root, devices: manifest.devices, fill: manifest.fill?.method, log: o.log }, next);
    } catch (e) {
      await writeMembers(o.stateDir, current);
      throw e;
    }
    return { group: req.group, phase: req.phase, sets, members: changed, ebpf: { path: 'generation', updates: r.fill?.entries ?? 0, generation: r.plan.generation ?? manifest.generation } };
  } finally {
    await lock.release();
  }
}

/** a v4 or v6 address's position in the family's space */
function addrValue(a: AddrSet, f: 4 | 6): bigint {
  return f === 4 ? BigInt(a.v4[0]) : (a.v6[0] << 64n) | a.v6[1];
}

/** the plan's address leaves of family f: every net set and every net,port entry (source or destination) */
function leaves(plan: Plan, f: 4 | 6): Array<{ name: string; addrs: AddrSet }> {
  const out: Array<{ name: string; addrs: AddrSet }> = [];
  for (const s of plan.families[f].sets) {
    const k = s.kind;
    if (k.type === 'net') out.push({ name: s.name, addrs: k.addrs });
    else if (k.type === 'net,port') k.byPort.forEach((e, i) => out.push({ name: `${s.name}#${i}`, addrs: e.addrs }));
  }
  return out;
}

/** inclusive ranges of a family of an AddrSet */
function rangesOf(a: AddrSet, f: 4 | 6): Array<[bigint, bigint]> {
  const out: Array<[bigint, bigint]> = [];
  if (f === 4) for (let i = 0; i < a.v4.length; i += 2) out.push([BigInt(a.v4[i]), BigInt(a.v4[i + 1])]);
  else for (let i = 0; i < a.v6.length; i += 4) out.push([(a.v6[i] << 64n) | a.v6[i + 1], (a.v6[i + 2] << 64n) | a.v6[i + 3]]);
  return out;
}

/** LPM key of a host address: prefix length (LE) then the address bytes */
function hostKey(v: bigint, f: 4 | 6): Buffer {
  const n = f === 4 ? 4 : 16;
  const k = Buffer.alloc(4 + n);
  k.writeUInt32LE(n * 8, 0);
  for (let i = n - 1; i >= 0; i--) { k[4 + i] = Number(v & 0xffn); v >>= 8n; }
  return k;
}

/**
 * Make the membership change in the live maps with one LPM update/delete per
 * changed address, when that gives exactly the canonical maps a rebuild would
 * install; returns the number of updates, or null when a rebuild is needed.
 */
async function lpmChange(exec: Exec, g: Generation, plan: Plan, before: MapMember[], after: MapMember[], changed: Set<string>, scratch: string): Promise<number | null> {
  const { MAP_NAMES } = await import('../ebpf/program.js');
  const { readMaps, runBatch } = await import('../ebpf/load.js');
  const { batchLine } = await import('../ebpf/maps.js');
  const parsed = new Map<string, { f: 4 | 6; v: bigint }>();
  for (const m of [...before, ...after]) {
    if (parsed.has(m.addr)) continue;
    const a = AddrSet.of([m.addr]);
    const f = a.v4.length ? 4 : 6;
    const r = rangesOf(a, f)[0];
    if (!r || r[0] !== r[1]) return null; // a CIDR member: rebuild
    parsed.set(m.addr, { f, v: addrValue(a, f) });
  }
  const leafCache = { 4: leaves(plan, 4), 6: leaves(plan, 6) };
  const inLeaves = (addr: string): { key: string; edge: boolean } => {
    const { f, v } = parsed.get(addr)!;
    const names: string[] = [];
    let edge = false;
    for (const l of leafCache[f]) {
      for (const [s, e] of rangesOf(l.addrs, f)) {
        if (v === s || v === e || v === s - 1n || v === e + 1n) edge = true;
        if (s <= v && v <= e) { names.push(l.name); break; }
      }
    }
    return { key: `${f}|${names.join(',')}`, edge };
  };
  const sig = (m: MapMember): string => `${inLeaves(m.addr).key}|${m.phase}|${[...m.groups].sort().join(',')}`;
  const live = await readMaps(exec, g, [MAP_NAMES.src4, MAP_NAMES.src6]);
  const entries = (f: 4 | 6): MapEntry[] => live.maps[f === 4 ? MAP_NAMES.src4 : MAP_NAMES.src6];
  const classAt = (addr: string): number | undefined => {
    const { f, v } = parsed.get(addr)!;
    const k = hostKey(v, f);
    return entries(f).find((e) => e.key.equals(k))?.value.readUInt16BE(0);
  };
  const ops: Array<{ map: string; key: Buffer; cls: number | null }> = [];
  const losing = new Map<number, number>();
  for (const addr of changed) {
    const { f, v } = parsed.get(addr)!;
    const now = after.find((m) => m.addr === addr);
    const was = before.find((m) => m.addr === addr);
    let cls: number | null = null;
    if (now) {
      const s = sig(now);
      const groups = [...now.groups].sort().join(',');
      const peer = before.find((m) => m.phase === now.phase && [...m.groups].sort().join(',') === groups && !changed.has(m.addr) && after.some((x) => x.addr === m.addr) && sig(m) === s);
      const c = peer ? classAt(peer.addr) : undefined;
      if (c === undefined) return null; // no class with this signature yet
      cls = c;
    } else if (inLeaves(addr).edge) {
      return null; // a static prefix may sit exactly at this address (the member's entry replaced it): rebuild
    }
    if (was) {
      const old = classAt(addr);
      if (old === undefined) return null; // the live maps do not hold what members.json says: rebuild
      if (old !== cls) losing.set(old, (losing.get(old) ?? 0) + 1);
    }
    ops.push({ map: f === 4 ? MAP_NAMES.src4 : MAP_NAMES.src6, key: hostKey(v, f), cls });
  }
  // a class left without any prefix would keep unreachable rows a rebuild drops
  for (const [cls, n] of losing) {
    const total = [...entries(4), ...entries(6)].filter((e) => e.value.readUInt16BE(0) === cls).length;
    if (total - n <= 0) return null;
  }
  const lines = ops.map((op) => {
    let val: Buffer | null = null;
    if (op.cls !== null) {
      val = Buffer.alloc(4);
      val.writeUInt16BE(op.cls, 0);
    }
    return batchLine(join(g.maps, op.map), op.key, val);
  });
  await runBatch(exec, lines.join('\n') + '\n', scratch);
  // read back what was changed
  const back = await readMaps(exec, g, [MAP_NAMES.src4, MAP_NAMES.src6]);
  for (const op of ops) {
    const e = back.maps[op.map].find((x) => x.key.equals(op.key));
    const got = e ? e.value.readUInt16BE(0) : null;
    if (got !== op.cls) throw new Error(`${op.map}: entry ${op.key.toString('hex')} reads back as ${got}, expected ${op.cls}`);
  }
  return ops.length;
}
