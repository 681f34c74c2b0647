/**
 * `apply --backend nft`: the same guarantees as the iptables apply with one
 * kernel transaction instead of the converge steps.
 *
 *   desired = the script loaded into a private empty netns and read back
 *   -> lock -> recover an interrupted apply from its journal -> read live
 *   -> plan (chains, rules, set elements) -> journal the snapshot
 *   -> `nft -f` transactions (src/state/nft.ts nftTransactions): [stage the
 *      sets the table lacks, unreferenced] -> switch: [flush altered sets]
 *      + ruleset.nft + [remove an older policy's chains and sets]; a set whose
 *      declaration differs goes through a staging name (two more transactions)
 *   -> verify (read back == desired) -> manifest.
 *
 * Every transaction is atomic and leaves a table that means the old or the new
 * policy. A failing stage or switch changes nothing (the kernel aborts it; the
 * staged sets are removed; we check by reading back). A failure after the
 * switch, or a verify mismatch, restores the snapshot in one transaction.
 */
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';
import {
  desiredNft, diffNft, emptyNftPlan, formatNftPlan, forwardDropChains, loadNft, NFT_REF, nftStateHash, nftTransactions, readLiveNft, restoreScript, scriptMode, snapshotNft, stagingName, txnText,
  type NftPlan, type NftRunError, type NftState,
} from '../state/nft.js';
import { sha256 } from '../core/sha256.js';
import { acquireLock } from './lock.js';
import { inputStamp, type InputSpec } from './source.js';
import { cellwallVersion, ensureStateDir, journalPath, manifestPath, readJson, writeAtomic } from './statedir.js';

export const NFT_BACKEND = 'nft';

export interface NftInput {
  script: string; source: string; policyHash: string | null; segment: string | null; stamp: string;
  /** the script's state as read back from a private netns (computed once per input: --watch re-applies the same input) */
  desired?: NftState;
}

export async function loadNftInput(spec: InputSpec): Promise<NftInput> {
  const stamp = await inputStamp(spec);
  if (spec.payload) {
    const file = join(spec.payload, 'ruleset.nft');
    let script: string;
    try { script = await readFile(file, 'utf8'); } catch (e) {
      throw new CellwallError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? e}); expected the output of \`cellwall compile --backend nft --out DIR\``);
    }
    type Manifest = { policyHash?: string; policy?: { hash?: string }; segment?: string };
    const m = await readJson<Manifest>(join(spec.payload, 'manifest.json'));
    return { script, source: spec.payload, policyHash: m?.policyHash ?? m?.policy?.hash ?? null, segment: spec.segment ?? m?.segment ?? null, stamp };
  }
  if (!spec.policy || !spec.segment) throw new CellwallError('apply: POLICY and --segment are required');
  const [{ loadPolicy }, { requireSegment }, { compileSegment }, { renderNft }] = await Promise.all([
    import('../policy/index.js'), import('../compile/cli.js'), import('../compile/index.js'), import('../render/nft.js'),
  ]);
  const policy = await loadPolicy(spec.policy);
  const seg = requireSegment(policy, spec.segment);
  return { script: renderNft(compileSegment(policy, seg).plan), source: `${spec.policy} --segment ${seg}`, policyHash: policy.hash, segment: seg, stamp };
}

export interface NftApplyOptions {
  stateDir: string;
  dryRun?: boolean;
  lockTimeout?: number;
  log?: (line: string) => void;
}

export interface NftApplyResult {
  changed: boolean;
  dryRun: boolean;
  plan: NftPlan;
  planText: string;
  backend: string;
  backendReason: string;
  hashes: { table: string } | null;
  recovered: string | null;
  warnings: string[];
  ms: { total: number; read: number; write: number };
}

export interface NftJournal { version: 1; pid: number; started: string; backend: 'nft'; target: string; snapshot: string | null }

export interface NftManifest {
  cellwall: string; time: string; policyHash: string | null; segment: string | null; source: string;
  payloadHash: string; backend: 'nft'; hashes: { table: string };
}

/** Test-only fault injection (as in the iptables apply): exits abruptly. Ignored unless CELLWALL_TEST_HOOKS=1. */
function fault(point: string): void {
  if (process.env.CELLWALL_TEST_HOOKS === '1' && process.env.CELLWALL_TEST_FAULT === point) process.kill(process.pid, 'SIGKILL');
}

/** an nft error with the failing line of the transaction mapped back to ruleset.nft */
function describeNftError(e: NftRunError, text: string, offset: number, script: string, source: string): string {
  const msg = e.stderr.split('\n').find((l) => /Error:/.test(l)) ?? e.stderr.split('\n')[0] ?? '';
  if (e.line === null) return `nft -f failed (exit ${e.code}): ${msg}`;
  const line = text.split('\n')[e.line - 1] ?? '';
  const inScript = e.line > offset && e.line <= offset + script.split('\n').length;
  const where = inScript ? `${source}: ruleset.nft line ${e.line - offset}` : `line ${e.line} of the transaction (added by apply around ruleset.nft)`;
  return `nft -f failed (exit ${e.code}): ${msg.replace(/^[^:]*:\d+:[\d-]+: /, '')}\n  at ${where}\n  line: ${line.trim().slice(0, 200)}`;
}

async function desiredOf(input: NftInput): Promise<NftState> {
  const d = await desiredNft(input.script);
  if ('error' in d) throw new CellwallError(`the nft script does not load (checked in a private network namespace, nothing changed): ${describeNftError(d.error, input.script, 0, input.script, input.source)}`);
  return d.state;
}

/** Put the table back to the journal's snapshot (one transaction) and check it. */
async function restoreSnapshot(snapshot: string | null): Promise<void> {
  const err = await loadNft(restoreScript(snapshot));
  if (err) throw new CellwallError(`restoring the snapshot failed: ${err.stderr}`);
}

export async function recoverNftJournal(stateDir: string, log: (s: string) => void): Promise<string | null> {
  const j = await readJson<NftJournal>(journalPath(stateDir));
  if (!j) return null;
  // an iptables apply on iptables-nft also journals backend "nft", but its snapshot is a parsed state, not a ruleset text
  const ours = j.backend === NFT_BACKEND && (j.snapshot === null || typeof j.snapshot === 'string');
  if (!ours) {
    const which = j.backend === NFT_BACKEND ? 'iptables (iptables-nft)' : String(j.backend);
    throw new CellwallError(`${journalPath(stateDir)}: the journal of an interrupted ${which} apply; run apply with that backend first to recover it`);
  }
  log(`found the journal of an interrupted apply (pid ${j.pid}, started ${j.started}); restoring the table from before it`);
  await restoreSnapshot(j.snapshot);
  await rm(journalPath(stateDir), { force: true });
  const msg = `recovered: restored the state from before the interrupted apply of ${j.started}`;
  log(msg);
  return msg;
}

export async function applyNft(input: NftInput, opts: NftApplyOptions): Promise<NftApplyResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => undefined);
  const warnings: string[] = [];
  const reason = 'chosen with --backend nft';
  const target = sha256(`ruleset.nft\0${input.script}`);
  const wanted = async (): Promise<NftState> => (input.desired ??= await desiredOf(input));
  const prev = await readJson<NftManifest>(manifestPath(opts.stateDir));
  /**
   * The live table is what the last apply of this same script verified (same
   * script hash, same canonical hash): in sync without loading the script into
   * a scratch netns (at 1/10 CF scale that load is ~10 s).
   */
  const verifiedBefore = (live: NftState | null): boolean =>
    !!prev && prev.backend === NFT_BACKEND && prev.payloadHash === target && live !== null && prev.hashes?.table === nftStateHash(live);
  const result = (changed: boolean, dryRun: boolean, plan: NftPlan, live: NftState | null, recovered: string | null, read: number, write: number): NftApplyResult => ({
    changed, dryRun, plan, planText: plan.empty ? '' : formatNftPlan(plan, input.desired!), backend: NFT_BACKEND, backendReason: reason,
    hashes: live ? { table: nftStateHash(live) } : null, recovered, warnings, ms: { total: performance.now() - t0, read, write },
  });

  if (scriptMode(input.script) === 'enforce') {
    const drops = await forwardDropChains();
    if (drops.length) {
      warnings.push(`enforce mode with the nft backend: the forward hook's base chain(s) ${drops.join(', ')} have policy drop; a packet cellwall accepts still goes through them and is dropped there (an nft accept ends only its own base chain). Make cellwall the only forward filter (their policy accept, no drop rules for the governed sources) or use --backend iptables; see docs/nft.md`);
    }
  }
  if (opts.dryRun) {
    const tr = performance.now();
    const live = await readLiveNft();
    const plan = verifiedBefore(live) ? emptyNftPlan() : diffNft(await wanted(), live);
    const j = await readJson<NftJournal>(journalPath(opts.stateDir));
    if (j) warnings.push(`an interrupted apply (pid ${j.pid}, ${j.started}) left a journal; the next apply first restores the state from before it`);
    return result(!plan.empty, true, plan, live, null, performance.now() - tr, 0);
  }

  await ensureStateDir(opts.stateDir);
  const lock = await acquireLock(opts.stateDir, opts.lockTimeout ?? 120, log);
  try {
    const recovered = await recoverNftJournal(opts.stateDir, log);
    const tr = performance.now();
    const live = await readLiveNft();
    if (!recovered && verifiedBefore(live)) return result(false, false, emptyNftPlan(), live, recovered, performance.now() - tr, 0);
    const want = await wanted();
    const plan = diffNft(want, live);
    const tRead = performance.now() - tr;
    if (plan.empty) {
      const hash = nftStateHash(live);
      if (!prev || prev.backend !== NFT_BACKEND || prev.payloadHash !== target || prev.hashes?.table !== hash) await writeManifest(opts, input, target, hash);
      return result(false, false, plan, live, recovered, tRead, 0);
    }
    const snapshot = await snapshotNft();
    const journal: NftJournal = { version: 1, pid: process.pid, started: new Date().toISOString(), backend: NFT_BACKEND, target, snapshot };
    await writeAtomic(journalPath(opts.stateDir), JSON.stringify(journal));
    fault('after-journal');
    const tw = performance.now();
    // test hook: a last line the kernel refuses (in the switch transaction), to show that the whole transaction is then dropped
    const failLast = process.env.CELLWALL_TEST_HOOKS === '1' && process.env.CELLWALL_TEST_FAULT === 'nft-fail-last-line';
    const txns = nftTransactions(plan, want, live, input.script);
    for (const tx of txns) {
      if (failLast && tx.step === 'switch') tx.after.push('delete set inet cellwall cw-test-no-such-set');
      const text = txnText(tx);
      const err = await loadNft(text);
      if (!err) continue;
      const what = describeNftError(err, text, tx.before.length, tx.script ?? '', input.source);
      if (tx.step === 'stage' || tx.step === 'switch') {
        // the kernel aborted this transaction; the sets the stage created are not referenced by any rule: remove them
        if (tx.step === 'switch' && txns[0].step === 'stage') {
          const staged = [...plan.sets.create, ...plan.sets.redeclare.map((r) => stagingName(r.name))];
          await loadNft(staged.map((n) => `delete set ${NFT_REF} ${n}`).join('\n') + '\n');
        }
        const now = await readLiveNft();
        await rm(journalPath(opts.stateDir), { force: true });
        const same = nftStateHash(now) === nftStateHash(live);
        throw new CellwallError(`apply failed; ${same ? 'nothing was changed (the nft transactions are atomic)' : 'WARNING: the table read back differs from before (changed by someone else meanwhile?)'}: ${what}`);
      }
      log(`the ${tx.step} transaction failed; rolling back to the snapshot`);
      try { await restoreSnapshot(snapshot); } catch (re) {
        throw new CellwallError(`apply failed (${what}) AND the rollback failed: ${(re as Error).message}\nthe journal ${journalPath(opts.stateDir)} is kept; the next apply retries the recovery`);
      }
      await rm(journalPath(opts.stateDir), { force: true });
      throw new CellwallError(`apply failed and was rolled back to the previous state: ${what}`);
    }
    fault('after-load');
    const back = await readLiveNft();
    const left = back ? diffNft(want, back) : null;
    if (!left || !left.empty) {
      log('verify failed; rolling back to the snapshot');
      const diff = left ? formatNftPlan(left, want) : 'the table is missing';
      try { await restoreSnapshot(snapshot); } catch (re) {
        throw new CellwallError(`apply failed (verify: the table read back differs from the script:\n${diff}) AND the rollback failed: ${(re as Error).message}\nthe journal ${journalPath(opts.stateDir)} is kept; the next apply retries the recovery`);
      }
      await rm(journalPath(opts.stateDir), { force: true });
      throw new CellwallError(`apply failed and was rolled back to the previous state: verify: the table read back differs from the script:\n${diff}`);
    }
    const tWrite = performance.now() - tw;
    await writeManifest(opts, input, target, nftStateHash(back));
    await rm(journalPath(opts.stateDir), { force: true });
    return result(true, false, plan, back, recovered, tRead, tWrite);
  } finally {
    await lock.release();
  }
}

async function writeManifest(opts: NftApplyOptions, input: NftInput, target: string, table: string): Promise<void> {
  const m: NftManifest = {
    cellwall: cellwallVersion(), time: new Date().toISOString(), policyHash: input.policyHash, segment: input.segment,
    source: input.source, payloadHash: target, backend: NFT_BACKEND, hashes: { table },
  };
  await writeAtomic(manifestPath(opts.stateDir), JSON.stringify(m, null, 2) + '\n');
}
