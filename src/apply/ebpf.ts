/**
 * `apply --backend ebpf`: the fixed classifier with the policy in its maps,
 * loaded into a bpffs directory cellwall owns and attached with tc on the
 * container-facing devices (docs/ebpf.md "Loading on a cell").
 *
 *   lock -> recover an interrupted apply from its journal -> read live
 *   (matching devices, our filter's program id on each, pinned generations)
 *   -> in sync? (the recorded target and generation, and every device runs
 *   its program: no map read) -> journal (previous generation, attachments)
 *   -> load: a NEW generation (program + empty maps) -> fill (one
 *   BPF_MAP_UPDATE_BATCH per map via python3, else bpftool batch)
 *   -> attach: `tc filter replace` per device (atomic per device)
 *   -> verify (every device runs the new program id; the maps read back hash
 *   to the compiled contents) -> unpin older generations -> manifest.
 *
 * The previous generation stays pinned until the new one is verified; any
 * failure re-attaches it (or removes our filter where there was none) and
 * unpins the new one, and the error names the step.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';
import {
  attach, canonicalContents, contentsHash, fill, generation, loadObject, pinnedProgId, readMaps, unattach,
  type Exec, type FillMethod, type Generation,
} from '../ebpf/load.js';
import type { MapContents, MapMember } from '../ebpf/maps.js';
import type { Plan } from '../compile/plan.js';
import { sha256 } from '../core/sha256.js';
import {
  checkBpffs, ebpfStateDir, hostExec, readLiveEbpf, readMembers, writeApplied, type EbpfLive, type LiveGeneration,
} from '../state/ebpf.js';
import { acquireLock } from './lock.js';
import { inputStamp, type InputSpec } from './source.js';
import { cellwallVersion, ensureStateDir, journalPath, manifestPath, readJson, writeAtomic } from './statedir.js';

export const EBPF_BACKEND = 'ebpf';

/** a program object to load; the first one the kernel accepts is used */
export interface EbpfObject { variant: string; object: Buffer }

export interface EbpfInput {
  /** in order of preference: the conntrack program then the stateless one (from --payload: cellwall.bpf.o, then cellwall-stateless.bpf.o when present) */
  objects: EbpfObject[];
  /** the iptables payload texts of the same compile (the plan is rebuilt from them for members) */
  texts: { ipset: string; v4: string; v6: string };
  /** the compiled plan (lazily: from the policy, or parsed back from the payload texts) */
  plan: () => Promise<Plan>;
  /** maps.json of a compiled payload dir (contents without members), when given */
  maps: MapContents | null;
  source: string; policyHash: string | null; segment: string | null; stamp: string;
}

export interface EbpfTarget { root: string; devices: string[] }

export interface EbpfApplyOptions extends EbpfTarget {
  stateDir: string;
  dryRun?: boolean;
  lockTimeout?: number;
  log?: (line: string) => void;
  /** fill path (default: syscall, falling back to bpftool) */
  fill?: FillMethod;
  /** runs ip, tc, bpftool, python3 (default: this process's namespace) */
  exec?: Exec;
}

export interface EbpfPlan {
  empty: boolean;
  /** a new generation is loaded (else only attachments are repaired) */
  load: boolean;
  generation: string | null;
  entries: Record<string, number>;
  /** per map: entries added / removed against the live generation (when one is live) */
  mapChanges: Record<string, { added: number; removed: number }> | null;
  attach: Array<{ dev: string; from: number | null }>;
  unpin: string[];
  devices: string[];
}

export interface EbpfApplyResult {
  changed: boolean;
  dryRun: boolean;
  plan: EbpfPlan;
  planText: string;
  backend: string;
  backendReason: string;
  hashes: { maps: string; progId: number | null } | null;
  recovered: string | null;
  warnings: string[];
  ms: { total: number; read: number; write: number; fill?: number };
  fill?: { method: FillMethod; entries: number };
}

export interface EbpfJournal {
  version: 1; pid: number; started: string; backend: 'ebpf'; target: string; root: string;
  /** generation attached before (still pinned), or null */
  previous: string | null;
  /** our filter's program on each device before */
  attached: Array<{ dev: string; progId: number | null }>;
  /** generation being installed */
  next: string | null;
}

export interface EbpfManifest {
  cellwall: string; time: string; policyHash: string | null; segment: string | null; source: string;
  payloadHash: string; backend: 'ebpf'; root: string; devices: string[];
  generation: string; progId: number; attached: string[];
  /** which object was loaded (conntrack, stateless, compiled) */
  variant?: string;
  hashes: { maps: string };
  members: number;
  fill?: { method: FillMethod; entries: number; ms: number };
}

type Step = 'load' | 'fill' | 'attach' | 'verify' | 'unpin';
class StepError extends Error {
  constructor(readonly step: Step, message: string) { super(message); }
}
async function step<T>(s: Step, f: () => Promise<T>): Promise<T> {
  try { return await f(); } catch (e) {
    if (e instanceof StepError) throw e;
    throw new StepError(s, e instanceof Error ? e.message : String(e));
  }
}

/** Test-only fault injection (as in the other backends). Ignored unless CELLWALL_TEST_HOOKS=1. */
function testFault(point: string): boolean {
  return process.env.CELLWALL_TEST_HOOKS === '1' && process.env.CELLWALL_TEST_FAULT === point;
}

export async function loadEbpfInput(spec: InputSpec): Promise<EbpfInput> {
  const stamp = await inputStamp(spec);
  const { objectsToTry } = await import('../ebpf/program.js');
  const { planFromPayloads } = await import('../diff/parse.js');
  if (spec.payload) {
    const { readPayloadDir } = await import('./payload.js');
    const { parseMapsJson } = await import('../ebpf/maps.js');
    const { EBPF_MAPS, EBPF_OBJECT, EBPF_OBJECT_STATELESS } = await import('../render/ebpf.js');
    const p = await readPayloadDir(spec.payload);
    const rd = async (f: string): Promise<Buffer> => {
      try { return await readFile(join(spec.payload!, f)); } catch (e) {
        throw new CellwallError(`${join(spec.payload!, f)}: cannot read (${(e as NodeJS.ErrnoException).code ?? e}); expected the output of \`cellwall compile --backend ebpf --out DIR\``);
      }
    };
    const object = await rd(EBPF_OBJECT);
    // bundles from this version also carry the stateless fallback (older ones: cellwall.bpf.o only)
    const stateless = await readFile(join(spec.payload, EBPF_OBJECT_STATELESS)).catch(() => null);
    let maps: MapContents;
    try { maps = parseMapsJson((await rd(EBPF_MAPS)).toString('utf8')); } catch (e) {
      if (e instanceof CellwallError) throw e;
      throw new CellwallError(`${join(spec.payload, EBPF_MAPS)}: ${(e as Error).message}`);
    }
    const m = p.manifest as { policyHash?: string; policy?: { hash?: string }; segment?: string } | null;
    const texts = { ipset: p.ipset, v4: p.v4, v6: p.v6 };
    const segment = spec.segment ?? m?.segment ?? null;
    return {
      objects: [{ variant: 'compiled', object }, ...(stateless ? [{ variant: 'compiled-stateless', object: stateless }] : [])], texts, maps, source: spec.payload, policyHash: m?.policyHash ?? m?.policy?.hash ?? null, segment, stamp,
      plan: async () => planFromPayloads(texts, segment ?? '(payload)', spec.payload),
    };
  }
  if (!spec.policy || !spec.segment) throw new CellwallError('apply: POLICY and --segment are required');
  const [{ loadPolicy }, { requireSegment, renderPayloads }, { compileSegment }] = await Promise.all([
    import('../policy/index.js'), import('../compile/cli.js'), import('../compile/index.js'),
  ]);
  const policy = await loadPolicy(spec.policy);
  const seg = requireSegment(policy, spec.segment);
  const plan = compileSegment(policy, seg).plan;
  const p = renderPayloads(plan);
  return {
    objects: objectsToTry(), texts: { ipset: p['ipset.restore'], v4: p['iptables.v4'], v6: p['iptables.v6'] }, maps: null,
    source: `${spec.policy} --segment ${seg}`, policyHash: policy.hash, segment: seg, stamp, plan: async () => plan,
  };
}

/**
 * The map contents to install: the compiled policy plus the dynamic members
 * recorded in the state dir, source classes with equal rows merged
 * (canonicalContents: members of one signature share a class).
 */
export async function wantedContents(input: EbpfInput, members: MapMember[]): Promise<MapContents> {
  const { planMaps } = await import('../ebpf/maps.js');
  if (members.length === 0 && input.maps) return canonicalContents(input.maps);
  return canonicalContents(planMaps(await input.plan(), { members }));
}

export const targetOf = (objects: EbpfObject[], mapsHash: string): string =>
  sha256(`${objects.map((o) => `${o.variant}\0${sha256(o.object.toString('base64'))}`).join('\0')}\0maps\0${mapsHash}`);

function describe(e: unknown): string {
  if (e instanceof StepError) return `step ${e.step}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/**
 * Put the devices back as the journal recorded them: the previous
 * generation's program where it was attached, no filter of ours where there
 * was none; then unpin the generation that was being installed.
 */
async function rollback(exec: Exec, j: EbpfJournal): Promise<void> {
  const prev = j.previous ? generation(j.root, j.previous) : null;
  const prevId = prev ? await pinnedProgId(exec, prev.prog).catch(() => null) : null;
  const errors: string[] = [];
  for (const a of j.attached) {
    try {
      if (a.progId === null) await unattach(exec, a.dev).catch(() => undefined);
      else if (prev && prevId !== null) await attach(exec, a.dev, prev.prog);
      else errors.push(`${a.dev}: ran program ${a.progId}, which is not pinned under ${j.root} any more`);
    } catch (e) { errors.push(`${a.dev}: ${(e as Error).message}`); }
  }
  if (j.next && j.next !== j.previous) await rm(generation(j.root, j.next).dir, { recursive: true, force: true });
  if (errors.length) throw new CellwallError(`rollback: ${errors.join('; ')}`);
}

export async function recoverEbpfJournal(stateDir: string, exec: Exec, log: (s: string) => void): Promise<string | null> {
  const j = await readJson<EbpfJournal>(journalPath(stateDir));
  if (!j) return null;
  if (j.backend !== EBPF_BACKEND) throw new CellwallError(`${journalPath(stateDir)}: the journal of an interrupted ${j.backend} apply; run apply with that backend first to recover it`);
  log(`found the journal of an interrupted apply (pid ${j.pid}, started ${j.started}); putting back generation ${j.previous ?? '(none)'}`);
  await rollback(exec, j);
  await rm(journalPath(stateDir), { force: true });
  const msg = `recovered: restored the state from before the interrupted apply of ${j.started}`;
  log(msg);
  return msg;
}

function countEntries(c: MapContents): Record<string, number> {
  return Object.fromEntries(Object.entries(c.maps).map(([n, es]) => [n, es.length]));
}

function mapChanges(want: MapContents, have: MapContents): Record<string, { added: number; removed: number }> {
  const out: Record<string, { added: number; removed: number }> = {};
  for (const name of new Set([...Object.keys(want.maps), ...Object.keys(have.maps)])) {
    const line = (e: { key: Buffer; value: Buffer }) => `${e.key.toString('hex')}=${e.value.toString('hex')}`;
    const a = new Set((want.maps[name] ?? []).map(line)), b = new Set((have.maps[name] ?? []).map(line));
    out[name] = { added: [...a].filter((x) => !b.has(x)).length, removed: [...b].filter((x) => !a.has(x)).length };
  }
  return out;
}

export function formatEbpfPlan(p: EbpfPlan): string {
  if (p.empty) return '';
  const lines: string[] = [];
  if (p.load) {
    const total = Object.values(p.entries).reduce((a, b) => a + b, 0);
    lines.push(`load generation ${p.generation}: ${total} map entries (${Object.entries(p.entries).map(([n, c]) => `${n} ${c}`).join(', ')})`);
    if (p.mapChanges) {
      const ch = Object.entries(p.mapChanges).filter(([, c]) => c.added || c.removed);
      lines.push(`  against the live generation: ${ch.length ? ch.map(([n, c]) => `${n} +${c.added} -${c.removed}`).join(', ') : 'same entries'}`);
    }
  }
  for (const a of p.attach) lines.push(`attach ${p.load ? 'the new generation' : p.generation} on ${a.dev} ingress${a.from !== null ? ` (replacing program ${a.from})` : ''}`);
  for (const g of p.unpin) lines.push(`unpin generation ${g}`);
  return lines.join('\n') + '\n';
}

/**
 * What must change: nothing when the last verified apply of this target is
 * live (its generation pinned, every matching device running its program);
 * only attachments when that generation is live but some devices are not (new
 * containers, a wiped filter) and its maps still read back to the target;
 * else a new generation.
 */
async function planEbpf(
  exec: Exec, o: EbpfTarget, want: MapContents, target: string, wantHash: string, live: EbpfLive, prev: EbpfManifest | null,
): Promise<{ plan: EbpfPlan; current: LiveGeneration | null }> {
  const current = prev && prev.backend === EBPF_BACKEND && prev.root === o.root
    ? live.generations.find((g) => g.name === prev.generation && g.progId !== null) ?? null : null;
  const devices = live.devices.map((d) => d.dev);
  const stale = (keep: string | null) => live.generations.filter((g) => g.name !== keep).map((g) => g.name);
  const base = { entries: countEntries(want), devices };
  if (current && prev!.payloadHash === target) {
    const missing = live.devices.filter((d) => d.progId !== current.progId);
    if (missing.length === 0 && stale(current.name).length === 0) {
      return { plan: { ...base, empty: true, load: false, generation: current.name, mapChanges: null, attach: [], unpin: [] }, current };
    }
    const have = await readMaps(exec, current.gen).catch(() => null);
    if (have && contentsHash(have) === wantHash) {
      return {
        plan: { ...base, empty: false, load: false, generation: current.name, mapChanges: null, attach: missing.map((d) => ({ dev: d.dev, from: d.progId })), unpin: stale(current.name) },
        current,
      };
    }
  }
  const have = current ? await readMaps(exec, current.gen).catch(() => null) : null;
  const name = `g-${target.slice(0, 12)}-${Date.now().toString(36)}`;
  return {
    plan: {
      ...base, empty: false, load: true, generation: name, mapChanges: have ? mapChanges(want, have) : null,
      attach: live.devices.map((d) => ({ dev: d.dev, from: d.progId })), unpin: stale(null),
    },
    current,
  };
}

/** apply under the lock (also used by `members` with --backend ebpf, which holds the lock itself) */
export async function applyEbpfLocked(input: EbpfInput, o: EbpfApplyOptions, members: MapMember[]): Promise<EbpfApplyResult> {
  const t0 = performance.now();
  const exec = o.exec ?? hostExec;
  const log = o.log ?? (() => undefined);
  const warnings: string[] = [];
  const reason = 'chosen with --backend ebpf';
  const recovered = o.dryRun ? null : await recoverEbpfJournal(o.stateDir, exec, log);
  if (o.dryRun) {
    const j = await readJson<EbpfJournal>(journalPath(o.stateDir));
    if (j) warnings.push(`an interrupted apply (pid ${j.pid}, ${j.started}) left a journal; the next apply first puts back the generation from before it`);
  }
  const tr = performance.now();
  const want = await wantedContents(input, members);
  const wantHash = contentsHash(want);
  const target = targetOf(input.objects, wantHash);
  const live = await readLiveEbpf(exec, o.root, o.devices);
  if (live.devices.length === 0) {
    warnings.push(`no network device here matches --devices ${o.devices.join(',')}: the program is loaded but attached nowhere (apply --watch attaches it to devices as they appear)`);
  }
  const prev = await readJson<EbpfManifest>(manifestPath(o.stateDir));
  const { plan, current } = await planEbpf(exec, o, want, target, wantHash, live, prev);
  const tRead = performance.now() - tr;
  const result = (changed: boolean, dryRun: boolean, progId: number | null, extra: Partial<EbpfApplyResult> = {}): EbpfApplyResult => ({
    changed, dryRun, plan, planText: formatEbpfPlan(plan), backend: EBPF_BACKEND, backendReason: reason,
    hashes: { maps: wantHash, progId }, recovered, warnings, ms: { total: performance.now() - t0, read: tRead, write: 0 }, ...extra,
  });
  if (o.dryRun) return result(!plan.empty, true, current?.progId ?? null);
  if (plan.empty) return result(false, false, current!.progId);

  const journal: EbpfJournal = {
    version: 1, pid: process.pid, started: new Date().toISOString(), backend: EBPF_BACKEND, target, root: o.root,
    previous: current?.name ?? null, attached: live.devices, next: plan.load ? plan.generation : null,
  };
  await writeAtomic(journalPath(o.stateDir), JSON.stringify(journal));
  if (testFault('after-journal')) process.kill(process.pid, 'SIGKILL');
  const tw = performance.now();
  const g: Generation = plan.load ? generation(o.root, plan.generation!) : current!.gen;
  let filled: { method: FillMethod; entries: number; ms: number } | undefined;
  let progId: number;
  let variant = prev?.variant;
  try {
    if (plan.load) {
      variant = await step('load', () => loadFirst(exec, input.objects, g, ebpfStateDir(o.stateDir), warnings));
      const tf = performance.now();
      const f = await step('fill', () => fill(exec, want, g, ebpfStateDir(o.stateDir), o.fill));
      filled = { method: f.method, entries: f.entries, ms: performance.now() - tf };
      if (f.fallback) warnings.push(f.fallback);
      if (testFault('ebpf-corrupt-map')) {
        // a wrong entry the verify must catch: 192.0.2.0/24 as source class 0xbeef
        await exec(['bpftool', 'map', 'update', 'pinned', join(g.maps, 'cw_src4'), 'key', 'hex', '18', '00', '00', '00', 'c0', '00', '02', '00', 'value', 'hex', 'be', 'ef', '00', '00']);
      }
    }
    progId = await step(plan.load ? 'load' : 'attach', () => pinnedProgId(exec, g.prog));
    if (testFault('after-load')) process.kill(process.pid, 'SIGKILL');
    await step('attach', async () => { for (const a of plan.attach) await attach(exec, a.dev, g.prog, 'ingress'); });
    await step('verify', async () => {
      const bad: string[] = [];
      const now = await readLiveEbpf(exec, o.root, o.devices);
      for (const a of plan.attach) {
        const d = now.devices.find((x) => x.dev === a.dev);
        if (d && d.progId !== progId) bad.push(`${a.dev} runs program ${d.progId ?? '(none)'}, expected ${progId}`);
      }
      const back = contentsHash(await readMaps(exec, g));
      if (back !== wantHash) bad.push(`the maps of ${g.dir} read back with hash ${back.slice(0, 16)}, expected ${wantHash.slice(0, 16)} (the compiled contents)`);
      if (bad.length) throw new StepError('verify', bad.join('; '));
    });
  } catch (e) {
    const cause = describe(e);
    log(`apply failed at ${e instanceof StepError ? `step ${e.step}` : 'a step'}; rolling back to generation ${journal.previous ?? '(none)'}`);
    try { await rollback(exec, journal); } catch (re) {
      throw new CellwallError(`apply failed (${cause}) AND the rollback failed: ${describe(re)}\nthe journal ${journalPath(o.stateDir)} is kept; the next apply retries the recovery`);
    }
    await rm(journalPath(o.stateDir), { force: true });
    throw new CellwallError(`apply failed and was rolled back to ${journal.previous ? `generation ${journal.previous}` : 'no cellwall program'}: ${cause}`);
  }
  // committed: unpin what no longer serves (the kernel frees a program and its maps once neither a pin nor a filter holds them)
  for (const name of plan.unpin) await rm(generation(o.root, name).dir, { recursive: true, force: true }).catch((e: Error) => warnings.push(`unpin ${name}: ${e.message}`));
  const tWrite = performance.now() - tw;
  await writeApplied(o.stateDir, {
    source: input.source, policyHash: input.policyHash, segment: input.segment, ...input.texts,
    objects: input.objects.map((x) => ({ variant: x.variant, object: x.object.toString('base64') })),
  });
  const m: EbpfManifest = {
    cellwall: cellwallVersion(), time: new Date().toISOString(), policyHash: input.policyHash, segment: input.segment, source: input.source,
    payloadHash: target, backend: EBPF_BACKEND, root: o.root, devices: o.devices, generation: g.dir.slice(o.root.length + 1), progId,
    attached: live.devices.map((d) => d.dev), hashes: { maps: wantHash }, members: members.length, ...(variant ? { variant } : {}),
    ...(filled ? { fill: filled } : prev?.fill ? { fill: prev.fill } : {}),
  };
  await writeAtomic(manifestPath(o.stateDir), JSON.stringify(m, null, 2) + '\n');
  await rm(journalPath(o.stateDir), { force: true });
  return result(true, false, progId, {
    ms: { total: performance.now() - t0, read: tRead, write: tWrite, ...(filled ? { fill: filled.ms } : {}) },
    ...(filled ? { fill: { method: filled.method, entries: filled.entries } } : {}),
  });
}

/** load the first object the kernel accepts (e.g. the conntrack program needs kfunc support); returns its variant */
async function loadFirst(exec: Exec, objects: EbpfObject[], g: Generation, scratch: string, warnings: string[]): Promise<string> {
  const { writeFile } = await import('node:fs/promises');
  const refused: string[] = [];
  for (const o of objects) {
    const file = join(scratch, `cellwall-${process.pid}-${o.variant}.bpf.o`);
    await writeFile(file, o.object);
    try {
      if (o === objects[0] && objects.length > 1 && testFault('ebpf-refuse-first')) throw new Error('refused by the test hook');
      await loadObject(exec, file, g);
      if (refused.length) warnings.push(`${refused.join('; ')}; loaded the ${o.variant} program`);
      return o.variant;
    } catch (e) {
      refused.push(`the ${o.variant} program was refused (${(e as Error).message.split('\n').filter(Boolean).slice(-1)[0]})`);
      await rm(g.dir, { recursive: true, force: true });
    } finally {
      await rm(file, { force: true });
    }
  }
  throw new Error(refused.join('; '));
}

export async function applyEbpf(input: EbpfInput, o: EbpfApplyOptions): Promise<EbpfApplyResult> {
  const log = o.log ?? (() => undefined);
  if (o.dryRun) return await applyEbpfLocked(input, o, await readMembers(o.stateDir));
  await checkBpffs(o.root);
  await ensureStateDir(o.stateDir);
  await ensureStateDir(ebpfStateDir(o.stateDir));
  const lock = await acquireLock(o.stateDir, o.lockTimeout ?? 120, log);
  try {
    return await applyEbpfLocked(input, o, await readMembers(o.stateDir));
  } finally {
    await lock.release();
  }
}
