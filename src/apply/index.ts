/**
 * Atomic apply on a cell.
 *
 *   lock -> recover an interrupted apply from its journal -> read live state
 *   -> plan -> journal the snapshot -> 1. sets (new, or temp + swap)
 *   -> 2. one iptables-restore --noflush per family -> 3. destroy stale cw- sets
 *   -> 4. verify by reading back and comparing hashes -> manifest.
 *
 * Any failure after the journal is written restores the snapshot (the same
 * converge machinery, aimed at the old state) and reports the cause mapped
 * back to the payload line and policy entry.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';
import { BACKEND_FILE, checkSupport, resolveBackend, toolsFor, type Tools } from '../state/backend.js';
import { run } from '../state/exec.js';
import { readLive, stateHashes, type CellState, type StateHashes } from '../state/index.js';
import { describeOrigin, desiredFromPayload, payloadHash, type Payload } from './payload.js';
import { acquireLock } from './lock.js';
import { chainHash, formatPlan, iptablesScript, makePlan, setsScript, type Equivalences, type Plan, type Script } from './plan.js';
import {
  cellwallVersion, ensureStateDir, journalPath, manifestPath, readJson, stateFromJson, stateToJson, writeAtomic,
  type AppliedManifest, type Journal,
} from './statedir.js';

export type Step = 'sets' | 'v4' | 'v6' | 'destroy' | 'verify';

export interface ApplyOptions {
  stateDir: string;
  /** nft | legacy | auto */
  iptables?: string;
  dryRun?: boolean;
  /** seconds to wait for the lock */
  lockTimeout?: number;
  policyHash?: string | null;
  segment?: string | null;
  log?: (line: string) => void;
}

export interface ApplyResult {
  changed: boolean;
  dryRun: boolean;
  plan: Plan;
  planText: string;
  backend: string;
  backendReason: string;
  hashes: StateHashes | null;
  recovered: string | null;
  warnings: string[];
  ms: { total: number; read: number; write: number };
}

/** Test-only fault injection: exits abruptly at a step boundary. Ignored unless CELLWALL_TEST_HOOKS=1. */
function fault(point: string): void {
  if (process.env.CELLWALL_TEST_HOOKS === '1' && process.env.CELLWALL_TEST_FAULT === point) {
    process.kill(process.pid, 'SIGKILL');
  }
}

class StepError extends Error {
  constructor(readonly step: Step, message: string) { super(message); }
}

/** Run a restore-style tool on a script; map a failing line back through the script's origins. */
async function runScript(step: Step, cmd: string, args: string[], s: Script, payload: Payload | null): Promise<void> {
  const r = await run(cmd, args, s.text);
  if (r.code === 0) return;
  const err = (r.stderr || r.stdout).trim();
  const m = /(?:Error occurred at line|line):?\s*(\d+)/i.exec(err);
  let where = '';
  if (m) {
    const n = Number(m[1]);
    const line = s.text.split('\n')[n - 1] ?? '';
    where = `\n  at ${describeOrigin(payload, s.origins[n - 1])}\n  line: ${line.slice(0, 200)}`;
  }
  throw new StepError(step, `${cmd} failed (exit ${r.code}): ${err.split('\n').filter((l) => !/^Try `/.test(l)).join(' ')}${where}`);
}

/** Carry out a plan (steps 1-3). */
async function converge(tools: Tools, want: CellState, have: CellState, plan: Plan, payload: Payload | null, faults: boolean): Promise<void> {
  const ss = setsScript(want.sets, have.sets, plan.sets);
  if (ss.text.trim() !== '') await runScript('sets', tools.ipset, ['restore'], ss, payload);
  if (faults) fault('after-sets');
  const t4 = iptablesScript(want.v4, have.v4, plan.v4);
  if (t4) await runScript('v4', tools.restore4, ['--noflush', '-w', '5'], t4, payload);
  if (faults) fault('after-v4');
  const t6 = iptablesScript(want.v6, have.v6, plan.v6);
  if (t6) await runScript('v6', tools.restore6, ['--noflush', '-w', '5'], t6, payload);
  if (faults) fault('after-v6');
  const failed = await destroySets(tools, plan.sets.destroy);
  if (failed.length) throw new StepError('destroy', `could not destroy stale sets (still referenced by another tool's rule?): ${failed.join('; ')}`);
  if (faults) fault('after-destroy');
}

/**
 * Destroy sets no rule refers to any more. With iptables-nft the kernel drops
 * a deleted rule's set reference asynchronously (after the transaction's
 * cleanup work), so "in use by a kernel component" right after the restore is
 * retried for a few seconds before it counts as a real user (another tool's rule).
 */
async function destroySets(tools: Tools, names: string[]): Promise<string[]> {
  let left = names;
  let errors = new Map<string, string>();
  const deadline = Date.now() + DESTROY_RETRY_MS;
  for (let attempt = 0; left.length > 0; attempt++) {
    errors = new Map();
    for (const name of left) {
      const r = await run(tools.ipset, ['destroy', name]);
      if (r.code !== 0 && !/does not exist/.test(r.stderr)) errors.set(name, r.stderr.trim());
    }
    left = [...errors.keys()];
    const inUse = [...errors.values()].every((e) => /in use/.test(e));
    if (left.length === 0 || !inUse || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, Math.min(20 * 2 ** attempt, 500)));
  }
  return [...errors].map(([n, e]) => `${n}: ${e}`);
}

const DESTROY_RETRY_MS = 5000;

/**
 * Verify: read back and compare. A chain whose rules read back in a form the
 * normaliser does not recognise, but with the same rule count, is accepted
 * with a warning and remembered (equivalences) so the next apply is a no-op.
 */
async function verify(tools: Tools, want: CellState, eq: Equivalences, warnings: string[]): Promise<CellState> {
  const live = await readLive(tools);
  const p = makePlan(want, live, eq);
  if (p.empty) return live;
  const onlyForms = p.sets.create.length + p.sets.swap.length + p.sets.destroy.length === 0
    && [p.v4, p.v6].every((f) => f.create.length === 0 && f.remove.length === 0 && f.jumps === null
      && f.replace.every((c) => c.added.length === c.removed.length && !c.reordered));
  if (!onlyForms) throw new StepError('verify', `state read back differs from the payload:\n${formatPlan(p)}`);
  for (const f of [p.v4, p.v6]) {
    const fam = f.family === 4 ? want.v4 : want.v6;
    const liveFam = f.family === 4 ? live.v4 : live.v6;
    for (const c of f.replace) {
      eq.add(`${chainHash(fam.chains.get(c.name)!)}=${chainHash(liveFam.chains.get(c.name)!)}`);
      warnings.push(`ipv${f.family} chain ${c.name}: the kernel reads back ${c.added.length} rule(s) in a different form (e.g. "${c.removed[0]}" for "${c.added[0]}"); accepted, same rule count`);
    }
  }
  return live;
}

function describeStepFailure(e: unknown): string {
  if (e instanceof StepError) return `step ${e.step}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/** Bring the cell back to a journal's snapshot. */
async function restoreSnapshot(tools: Tools, snapshot: CellState): Promise<void> {
  const live = await readLive(tools);
  const p = makePlan(snapshot, live);
  if (!p.empty) await converge(tools, snapshot, live, p, null, false);
  const after = await readLive(tools);
  const again = makePlan(snapshot, after);
  if (!again.empty) throw new CellwallError(`state after rollback still differs from the snapshot:\n${formatPlan(again)}`);
}

/** If a previous apply died mid-way, put the cell back to where it was before it. Caller holds the lock. */
export async function recoverFromJournal(tools: Tools, stateDir: string, log: (s: string) => void): Promise<string | null> {
  const j = await readJson<Journal>(journalPath(stateDir));
  if (!j) return null;
  // the journal of another backend's apply (nft: a ruleset text; ebpf: generations) is not ours to restore
  const ours = (j.backend === 'nft' || j.backend === 'legacy') && j.snapshot !== null && typeof j.snapshot === 'object';
  if (!ours) {
    throw new CellwallError(`${journalPath(stateDir)}: the journal of an interrupted ${String(j.backend)} apply of another backend; run apply with that backend (--backend nft or ebpf) first to recover it`);
  }
  log(`found the journal of an interrupted apply (pid ${j.pid}, started ${j.started}); restoring the state from before it`);
  await restoreSnapshot(tools, stateFromJson(j.snapshot));
  await rm(journalPath(stateDir), { force: true });
  const msg = `recovered: restored the state from before the interrupted apply of ${j.started}`;
  log(msg);
  return msg;
}

export async function prepareTools(stateDir: string, iptables: string | undefined): Promise<{ tools: Tools; reason: string; pinned: boolean }> {
  const det = await resolveBackend(stateDir, iptables);
  const tools = toolsFor(det.backend);
  await checkSupport(tools);
  return { tools, reason: det.reason, pinned: det.pinned };
}

export async function applyPayload(payload: Payload, opts: ApplyOptions): Promise<ApplyResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => undefined);
  const warnings: string[] = [];
  const want = desiredFromPayload(payload);
  const target = payloadHash(payload);
  const { tools, reason, pinned } = await prepareTools(opts.stateDir, opts.iptables);
  const backendName = `iptables-${tools.backend}`;
  const prev = await readJson<AppliedManifest>(manifestPath(opts.stateDir));
  const eq: Equivalences = new Set(prev?.equivalences ?? []);

  if (opts.dryRun) {
    const tr = performance.now();
    const live = await readLive(tools);
    const plan = makePlan(want, live, eq);
    const j = await readJson<Journal>(journalPath(opts.stateDir));
    if (j) warnings.push(`an interrupted apply (pid ${j.pid}, ${j.started}) left a journal; the next apply first restores the state from before it`);
    const now = performance.now();
    return { changed: !plan.empty, dryRun: true, plan, planText: formatPlan(plan), backend: backendName, backendReason: reason, hashes: stateHashes(live), recovered: null, warnings, ms: { total: now - t0, read: now - tr, write: 0 } };
  }

  await ensureStateDir(opts.stateDir);
  const lock = await acquireLock(opts.stateDir, opts.lockTimeout ?? 120, log);
  try {
    if (!pinned && (!opts.iptables || opts.iptables === 'auto')) await writeAtomic(join(opts.stateDir, BACKEND_FILE), `${tools.backend}\n`);
    const recovered = await recoverFromJournal(tools, opts.stateDir, log);
    const tr = performance.now();
    const live = await readLive(tools);
    const plan = makePlan(want, live, eq);
    const tRead = performance.now() - tr;
    const planText = formatPlan(plan);
    if (plan.empty) {
      const hashes = stateHashes(live);
      if (!prev || prev.payloadHash !== target || JSON.stringify(prev.hashes) !== JSON.stringify(hashes)) {
        await writeManifest(opts, payload, target, backendName, hashes, eq);
      }
      return { changed: false, dryRun: false, plan, planText, backend: backendName, backendReason: reason, hashes, recovered, warnings, ms: { total: performance.now() - t0, read: tRead, write: 0 } };
    }
    const journal: Journal = { version: 1, pid: process.pid, started: new Date().toISOString(), backend: tools.backend, target, snapshot: stateToJson(live) };
    await writeAtomic(journalPath(opts.stateDir), JSON.stringify(journal));
    fault('after-journal');
    const tw = performance.now();
    let after: CellState;
    try {
      await converge(tools, want, live, plan, payload, true);
      after = await verify(tools, want, eq, warnings);
    } catch (e) {
      const cause = describeStepFailure(e);
      log(`apply failed at ${e instanceof StepError ? `step ${e.step}` : 'a step'}; rolling back to the snapshot`);
      try {
        await restoreSnapshot(tools, live);
      } catch (re) {
        throw new CellwallError(`apply failed (${cause}) AND the rollback failed: ${describeStepFailure(re)}\nthe journal ${journalPath(opts.stateDir)} is kept; the next apply retries the recovery`);
      }
      await rm(journalPath(opts.stateDir), { force: true });
      throw new CellwallError(`apply failed and was rolled back to the previous state: ${cause}`);
    }
    const tWrite = performance.now() - tw;
    const hashes = stateHashes(after);
    await writeManifest(opts, payload, target, backendName, hashes, eq);
    await rm(journalPath(opts.stateDir), { force: true });
    return { changed: true, dryRun: false, plan, planText, backend: backendName, backendReason: reason, hashes, recovered, warnings, ms: { total: performance.now() - t0, read: tRead, write: tWrite } };
  } finally {
    await lock.release();
  }
}

async function writeManifest(opts: ApplyOptions, payload: Payload, target: string, backend: string, hashes: StateHashes, eq: Equivalences): Promise<void> {
  const m: AppliedManifest = {
    cellwall: cellwallVersion(), time: new Date().toISOString(), policyHash: opts.policyHash ?? null, segment: opts.segment ?? null,
    source: payload.source, payloadHash: target, backend, hashes, equivalences: [...eq].sort(),
  };
  await writeAtomic(manifestPath(opts.stateDir), JSON.stringify(m, null, 2) + '\n');
}
