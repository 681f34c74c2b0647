/**
 * `cellwall push`: roll a policy out to a fleet of cells over SSH.
 *
 * Canaries first (stop on a canary failure), then at most --max-in-flight
 * cells at a time. Each cell gets one ssh session that streams the bundle and
 * the apply script (script.ts); the cell locks, skips when already up to date,
 * applies atomically, verifies and rolls back on failure. SIGINT stops starting
 * cells; cells in flight finish (or roll back) and the report is printed.
 */
import { gzipSync } from 'node:zlib';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CellwallError } from '../errors.js';
import { loadInventory, resolveSegments, withDefaults, type Cell, type Inventory, type SshSettings } from './inventory.js';
import { compileBundle, readBundleDir, type Backend, type Bundle } from './bundle.js';
import { buildScript, remoteCommand, CPU, GO, PHASE, PROBE, RESULT, type ScriptMode } from './script.js';
import { runSession, sshFailureReason, type Session, type SessionResult, type SshConfig } from './ssh.js';
import { bundlePart, diffNft, diffPart, nftCanon, parseLive, parseNftLive, summarizeDiff, type CellDiff } from './plan.js';

export interface PushOptions extends SshSettings {
  policyFile: string;
  inventoryFile: string;
  dryRun: boolean;
  canaries: number;
  /** "N" or "P%" */
  maxInFlight: string;
  backend?: Backend;
  json: boolean;
  acceptNewHostKeys: boolean;
  connectTimeoutSec: number;
  /** overall per-cell timeout */
  cellTimeoutSec: number;
  compress: boolean;
  /** precompiled bundles: DIR/<segment>/{ipset.restore,iptables.v4,iptables.v6} */
  bundlesDir?: string;
  /** ask each cell for its record and a cheap live fingerprint first; skip the transfer when both match (default true) */
  fastPath?: boolean;
}

export type Outcome = 'changed' | 'unchanged' | 'would-change' | 'failed' | 'rolled-back' | 'skipped';

export interface CellReport {
  name: string;
  host: string;
  segment: string;
  outcome: Outcome;
  reason: string;
  canary: boolean;
  bytesSent: number;
  compressed: boolean;
  durationMs: number;
  /** true when the cell was found up to date by the fast-path probe (no bundle sent) */
  fastPath?: boolean;
  /** CPU time (user + system, ms) of the cell-side shell and the commands it ran, over every session with this cell */
  cellCpuMs?: number;
  diff?: CellDiff;
}

export interface PushReport {
  dryRun: boolean;
  policy: string;
  inventory: string;
  /** bytes: raw payload files; streamBytes/gzipBytes: the apply stream sent to each cell of the segment, as is / gzipped */
  bundles: { segment: string; hash: string; bytes: number; streamBytes?: number; gzipBytes?: number }[];
  ignored: { instance: string; reason: string }[];
  cells: CellReport[];
  summary: Record<Outcome, number>;
  interrupted: boolean;
  elapsedMs: number;
  /** CPU time of the push process itself (not its ssh clients), ms */
  cpuMs: { user: number; system: number };
}

export interface PushIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  /** registers a stop request (SIGINT); returns an unregister function */
  onInterrupt?: (fn: () => void) => () => void;
}

export function parseMaxInFlight(s: string, total: number): number {
  const m = /^(\d+)(%?)$/.exec(s.trim());
  if (!m || Number(m[1]) === 0 || (m[2] && Number(m[1]) > 100)) {
    throw new CellwallError(`--max-in-flight: invalid value "${s}" (expected a positive number or a percentage 1%..100%)`);
  }
  const n = m[2] ? Math.ceil((total * Number(m[1])) / 100) : Number(m[1]);
  return Math.max(1, n);
}

/** Segment names and instance group -> segment, from the policy loader when present. */
async function policySegments(file: string): Promise<{ segments: string[]; instanceGroups: Map<string, string> }> {
  type Loader = { loadPolicy?: (f: string) => unknown };
  let mod: Loader | null = null;
  try {
    const spec = '../policy/index.js';
    mod = (await import(spec)) as Loader;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw e;
  }
  if (mod?.loadPolicy) {
    const groups = new Map<string, string>();
    const policy = (await mod.loadPolicy(file)) as { segments: Map<string, { name: string; cells?: { instanceGroup?: string } }> };
    for (const s of policy.segments.values()) if (s.cells?.instanceGroup) groups.set(s.cells.instanceGroup, s.name);
    return { segments: [...policy.segments.keys()], instanceGroups: groups };
  }
  return rawSegments(file);
}

/**
 * Only the `segments:` of a policy file (names, cells.instance_group), without
 * loading or validating it: the bundles were compiled from it already. JSON is
 * parsed as JSON (a CF-scale policy is tens of MB), YAML otherwise.
 */
export function rawSegments(file: string): { segments: string[]; instanceGroups: Map<string, string> } {
  let text: string;
  try { text = readFileSync(file, 'utf8'); } catch (e) {
    throw new CellwallError(`${file}: cannot read the policy (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
  type Raw = { segments?: Record<string, { cells?: { instance_group?: string } } | null> };
  let raw: Raw;
  try {
    raw = (/^\s*\{/.test(text) ? JSON.parse(text) : parseYaml(text)) as Raw;
  } catch (e) {
    throw new CellwallError(`${file}: cannot parse the policy: ${(e as Error).message.split('\n')[0]}`);
  }
  const groups = new Map<string, string>();
  const segs = raw && typeof raw === 'object' && raw.segments && typeof raw.segments === 'object' ? raw.segments : {};
  for (const [name, s] of Object.entries(segs)) if (typeof s?.cells?.instance_group === 'string') groups.set(s.cells.instance_group, name);
  return { segments: Object.keys(segs), instanceGroups: groups };
}

/** The segments that have a bundle under DIR (DIR/<segment>/). */
function bundleSegments(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (e) {
    throw new CellwallError(`--bundles ${dir}: cannot read the directory (${(e as NodeJS.ErrnoException).code ?? e})`);
  }
}

/**
 * The stream for (bundle, mode, compression), built and gzipped once per
 * segment, not per cell: every cell of a segment receives the same bytes.
 */
const streams = new WeakMap<Bundle, Map<string, Buffer>>();
export function applyStream(bundle: Bundle, mode: ScriptMode, compress: boolean): Buffer {
  let m = streams.get(bundle);
  if (!m) streams.set(bundle, (m = new Map()));
  const key = `${mode}/${compress}`;
  let b = m.get(key);
  if (!b) {
    const script = Buffer.from(buildScript(mode, bundle), 'utf8');
    b = compress ? gzipSync(script, { level: 6 }) : script;
    m.set(key, b);
  }
  return b;
}

/** nft: the canonical lines of a bundle's script, once per bundle */
const canons = new WeakMap<Bundle, string[]>();
function scriptCanon(bundle: Bundle): string[] {
  let c = canons.get(bundle);
  if (!c) canons.set(bundle, (c = nftCanon(bundle.files['ruleset.nft'] ?? '')));
  return c;
}

/** CPU ms reported by the cell's shells (`times`: each marker line and the next one; the probe and the stream each print one), or 0 */
export function parseCellCpu(stdout: string): number {
  let ms = 0;
  for (const m of stdout.matchAll(new RegExp(`^${CPU} (.*)\n(.*)$`, 'gm'))) {
    for (const t of `${m[1]} ${m[2]}`.matchAll(/(\d+)m([\d.]+)s/g)) ms += (Number(t[1]) * 60 + Number(t[2])) * 1000;
  }
  return Math.round(ms);
}

/**
 * One cell, one ssh session. In apply mode (unless fastPath is off) the
 * bootstrap first prints the cell's record and cheap live fingerprint; when the
 * record names this bundle and the fingerprint still matches, stdin is closed
 * and nothing more is sent. Otherwise the same session receives the stream
 * (script + bundle); one result line comes back.
 */
export async function runCell(cell: Cell, bundle: Bundle, mode: ScriptMode, cfg: SshConfig,
  opts: { compress: boolean; timeoutMs: number; fastPath?: boolean },
  hooks: { onSession?: (s: Session) => void } = {}): Promise<Omit<CellReport, 'canary'>> {
  const t0 = Date.now();
  const backend = bundle.backend ?? 'iptables';
  let earlier = { bytes: 0, cpu: 0 };
  let session = runSession(cell, cfg, remoteCommand(), null, opts.timeoutMs);
  hooks.onSession?.(session);
  const report = (r: SessionResult) => ({ name: cell.name, host: cell.host, segment: cell.segment, bytesSent: earlier.bytes + r.bytesSent,
    compressed: opts.compress, durationMs: Date.now() - t0, cellCpuMs: earlier.cpu + parseCellCpu(r.stdout) });
  if (mode === 'apply' && opts.fastPath !== false) {
    session.write(`${GO.probe} ${backend}\n`);
    const line = await session.waitLine((l) => l.startsWith(`${PROBE} `));
    if (line) {
      const [, recBundle, recQuick, liveQuick] = line.split(' ');
      if (recBundle === bundle.hash && recQuick !== 'none' && recQuick === liveQuick) {
        session.end();
        const r = await session.result;
        return { ...report(r), outcome: 'unchanged', reason: 'already up to date (record and live fingerprint match), bundle not sent', fastPath: true };
      }
    } else {
      const p = await session.result;
      // ssh itself failed (host key, refused, timeout): a second session would fail the same way
      if (p.timedOut) return { ...report(p), outcome: 'failed', reason: `timed out after ${Math.round(opts.timeoutMs / 1000)}s` };
      if (p.code === 255) return { ...report(p), outcome: 'failed', reason: sshFailureReason(p.stderr, p.code) };
      // otherwise (an odd shell on the cell) a second session without the probe: the full apply decides
      earlier = { bytes: p.bytesSent, cpu: parseCellCpu(p.stdout) };
      session = runSession(cell, cfg, remoteCommand(), null, Math.max(1, opts.timeoutMs - (Date.now() - t0)));
      hooks.onSession?.(session);
    }
  }
  session.write(`${opts.compress ? GO.gz : GO.raw}\n`);
  session.write(applyStream(bundle, mode, opts.compress));
  session.end();
  const r = await session.result;
  const base = report(r);
  const resultLine = r.stdout.split('\n').filter((l) => l.startsWith(`${RESULT} `)).pop();
  if (!resultLine) {
    let reason: string;
    if (r.timedOut) {
      const started = r.stdout.includes(`${PHASE} applying`);
      reason = `timed out after ${Math.round(opts.timeoutMs / 1000)}s` + (started ? ' while applying (the cell completes or rolls back on its own)' : '');
    } else if (r.code === 255) reason = sshFailureReason(r.stderr, r.code);
    else reason = `no result from the cell (exit ${r.code ?? r.signal}): ${r.stderr.trim().split('\n').slice(-2).join(' ') || 'no output'}`;
    return { ...base, outcome: 'failed', reason };
  }
  const [, status, ...rest] = resultLine.split(' ');
  const reason = rest.join(' ').trim();
  // dry-run: the cell printed its live state; compare it with the bundle here
  const planDiff = (): CellDiff | undefined => {
    if (backend === 'nft') {
      const live = parseNftLive(r.stdout);
      return live ? diffNft(live, scriptCanon(bundle)) : undefined;
    }
    const live = parseLive(r.stdout);
    return live ? diffPart(live, bundlePart(bundle)) : undefined;
  };
  switch (status) {
    case 'changed': return { ...base, outcome: 'changed', reason: reason || 'applied and verified' };
    case 'unchanged': {
      if (mode === 'plan') {
        // the cell vouches for its chains; its sets are compared with the bundle here
        const diff = planDiff();
        if (!diff || diff.setsAdded.length || diff.setsRemoved.length || diff.entriesAdded || diff.entriesRemoved) {
          return { ...base, outcome: 'would-change', reason: diff ? summarizeDiff(diff) : 'changes', diff };
        }
      }
      return { ...base, outcome: 'unchanged', reason: 'already up to date, nothing written' };
    }
    case 'rolled-back': return { ...base, outcome: 'rolled-back', reason };
    case 'would-change': {
      const diff = planDiff();
      return { ...base, outcome: 'would-change', reason: diff ? summarizeDiff(diff) : 'changes', diff };
    }
    default: return { ...base, outcome: 'failed', reason: reason || `unexpected result "${status}"` };
  }
}

class Progress {
  private timer?: NodeJS.Timeout;
  private readonly t0 = Date.now();
  done = 0; changed = 0; unchanged = 0; failed = 0; inFlight = 0;
  constructor(private readonly out: PushIo['stderr'], private readonly total: number, private readonly quiet: boolean) {
    if (out.isTTY && !quiet) this.timer = setInterval(() => this.draw(), 200);
  }
  private line(): string {
    const s = ((Date.now() - this.t0) / 1000).toFixed(1);
    return `[push] ${this.done}/${this.total} done, ${this.changed} changed, ${this.unchanged} unchanged, ${this.failed} failed, ${this.inFlight} in flight, ${s}s`;
  }
  private draw(): void { this.out.write(`\r\x1b[K${this.line()}`); }
  cell(r: CellReport): void {
    this.done++;
    if (r.outcome === 'changed' || r.outcome === 'would-change') this.changed++;
    else if (r.outcome === 'unchanged') this.unchanged++;
    else if (r.outcome !== 'skipped') this.failed++;
    if (this.quiet) return;
    const msg = `${r.name}: ${r.outcome}${r.reason ? ` (${r.reason})` : ''} ${(r.durationMs / 1000).toFixed(1)}s`;
    if (this.timer) this.out.write(`\r\x1b[K${msg}\n${this.line()}`);
    else this.out.write(`${msg}\n`);
  }
  note(msg: string): void { if (!this.quiet) this.out.write(this.timer ? `\r\x1b[K${msg}\n` : `${msg}\n`); }
  stop(): void {
    if (this.timer) { clearInterval(this.timer); this.out.write(`\r\x1b[K${this.line()}\n`); }
    else if (!this.quiet) this.out.write(`${this.line()}\n`);
  }
}

export async function push(opts: PushOptions, io: PushIo): Promise<{ report: PushReport; exitCode: number }> {
  const t0 = Date.now();
  if (!Number.isInteger(opts.canaries) || opts.canaries < 0) throw new CellwallError(`--canaries: expected a whole number >= 0, got ${opts.canaries}`);
  const loaded = loadInventory(opts.inventoryFile);
  let inv: Inventory;
  if (opts.bundlesDir) {
    // precompiled: the policy is not loaded (only its segments' instance groups are read, for a bosh inventory)
    const groups = loaded.kind === 'bosh' ? rawSegments(opts.policyFile).instanceGroups : new Map<string, string>();
    inv = resolveSegments(loaded, bundleSegments(opts.bundlesDir), groups, `a bundle in ${opts.bundlesDir}`);
  } else {
    const { segments, instanceGroups } = await policySegments(opts.policyFile);
    inv = resolveSegments(loaded, segments, instanceGroups);
  }
  inv = withDefaults(inv, { user: opts.user, identityFile: opts.identityFile, knownHosts: opts.knownHosts, proxyJump: opts.proxyJump, port: opts.port });
  if (inv.cells.length === 0) throw new CellwallError(`${opts.inventoryFile}: no cells to push to`);
  const maxInFlight = parseMaxInFlight(opts.maxInFlight, inv.cells.length);

  const used = [...new Set(inv.cells.map((c) => c.segment))];
  const bundles = new Map<string, Bundle>();
  for (const s of used) {
    bundles.set(s, opts.bundlesDir ? readBundleDir(join(opts.bundlesDir, s), s, opts.backend) : await compileBundle(opts.policyFile, s, opts.backend));
  }

  const cfg: SshConfig = { acceptNewHostKeys: opts.acceptNewHostKeys, connectTimeoutSec: opts.connectTimeoutSec };
  const progress = new Progress(io.stderr, inv.cells.length, false);
  const reports = new Map<string, CellReport>();
  let stopReason = '';
  let interrupted = false;
  const off = io.onInterrupt?.(() => {
    interrupted = true;
    stopReason = 'interrupted (SIGINT) before this cell started';
    progress.note('[push] interrupted: no new cells start; cells in flight finish or roll back');
  });
  const mode: ScriptMode = opts.dryRun ? 'plan' : 'apply';
  const canarySet = new Set(opts.dryRun ? [] : inv.cells.slice(0, opts.canaries).map((c) => c.name));

  const runPool = async (cells: Cell[], width: number) => {
    let next = 0;
    const worker = async () => {
      while (next < cells.length && !stopReason) {
        const cell = cells[next++];
        progress.inFlight++;
        const r = await runCell(cell, bundles.get(cell.segment)!, mode, cfg,
          { compress: opts.compress, timeoutMs: opts.cellTimeoutSec * 1000, fastPath: opts.fastPath });
        progress.inFlight--;
        const rep = { ...r, canary: canarySet.has(cell.name) };
        reports.set(cell.name, rep);
        progress.cell(rep);
      }
    };
    await Promise.all(Array.from({ length: Math.min(width, cells.length) }, worker));
  };

  try {
    if (opts.dryRun) await runPool(inv.cells, maxInFlight);
    else {
      const canaries = inv.cells.filter((c) => canarySet.has(c.name));
      if (canaries.length) {
        progress.note(`[push] canaries: ${canaries.map((c) => c.name).join(', ')}`);
        await runPool(canaries, Math.min(maxInFlight, canaries.length));
        const bad = canaries.map((c) => reports.get(c.name)).filter((r) => r && (r.outcome === 'failed' || r.outcome === 'rolled-back'));
        if (bad.length && !stopReason) stopReason = `rollout stopped: canary ${bad.map((r) => r!.name).join(', ')} failed`;
      }
      if (!stopReason) await runPool(inv.cells.filter((c) => !canarySet.has(c.name)), maxInFlight);
    }
  } finally {
    off?.();
    progress.stop();
  }

  const cells: CellReport[] = inv.cells.map((c) => reports.get(c.name) ?? {
    name: c.name, host: c.host, segment: c.segment, outcome: 'skipped', reason: stopReason || 'not started',
    canary: canarySet.has(c.name), bytesSent: 0, compressed: opts.compress, durationMs: 0,
  });
  const summary: Record<Outcome, number> = { changed: 0, unchanged: 0, 'would-change': 0, failed: 0, 'rolled-back': 0, skipped: 0 };
  for (const c of cells) summary[c.outcome]++;
  const report: PushReport = {
    dryRun: opts.dryRun, policy: opts.policyFile, inventory: opts.inventoryFile,
    bundles: [...bundles.values()].map((b) => ({
      segment: b.segment, hash: b.hash, bytes: Object.values(b.files).reduce((n, f) => n + Buffer.byteLength(f), 0),
      ...(opts.dryRun ? {} : { streamBytes: applyStream(b, 'apply', false).length, gzipBytes: applyStream(b, 'apply', true).length }),
    })),
    ignored: inv.ignored, cells, summary, interrupted, elapsedMs: Date.now() - t0,
    cpuMs: (({ user, system }) => ({ user: Math.round(user / 1000), system: Math.round(system / 1000) }))(process.cpuUsage()),
  };
  const bad = summary.failed + summary['rolled-back'] + summary.skipped;
  const exitCode = bad ? 1 : opts.dryRun && summary['would-change'] ? 2 : 0;
  if (opts.json) io.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else io.stdout.write(formatReport(report));
  return { report, exitCode };
}

export function formatReport(r: PushReport): string {
  const out: string[] = [];
  if (r.dryRun) {
    for (const c of r.cells) {
      if (c.outcome !== 'would-change' || !c.diff) continue;
      out.push(`== ${c.name} (${c.segment}): ${c.reason}`);
      const d = c.diff;
      if (d.chainsAdded.length) out.push(`  chains added: ${d.chainsAdded.join(' ')}`);
      if (d.chainsRemoved.length) out.push(`  chains removed: ${d.chainsRemoved.join(' ')}`);
      for (const [ch, a, b] of d.rulesChanged) out.push(`  ${ch}: ${a} -> ${b} rules`);
      if (d.setsAdded.length) out.push(`  sets added: ${d.setsAdded.join(' ')}`);
      if (d.setsRemoved.length) out.push(`  sets removed: ${d.setsRemoved.join(' ')}`);
      if (d.entriesAdded || d.entriesRemoved) out.push(`  set entries: +${d.entriesAdded} -${d.entriesRemoved}`);
      const shown = d.text.slice(0, 60);
      for (const l of shown) out.push(`  ${l}`);
      if (d.text.length > shown.length) out.push(`  ... ${d.text.length - shown.length} more lines (--json for all)`);
    }
  }
  const rows = [['CELL', 'SEGMENT', 'OUTCOME', 'TIME', 'SENT', 'REASON'], ...r.cells.map((c) => [
    c.name + (c.canary ? ' (canary)' : ''), c.segment, c.outcome, `${(c.durationMs / 1000).toFixed(1)}s`,
    c.bytesSent ? `${(c.bytesSent / 1024).toFixed(1)}K${c.compressed ? ' gz' : ''}` : '-', c.reason,
  ])];
  const w = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) out.push(row.map((v, i) => (i === row.length - 1 ? v : v.padEnd(w[i]))).join('  ').trimEnd());
  for (const g of r.ignored) out.push(`ignored ${g.instance}: ${g.reason}`);
  const s = r.summary;
  out.push(`${r.cells.length} cells: ${s.changed} changed, ${s.unchanged} unchanged, ${s['would-change']} would change, ${s.failed} failed, ` +
    `${s['rolled-back']} rolled back, ${s.skipped} skipped${r.interrupted ? ' (interrupted)' : ''} in ${(r.elapsedMs / 1000).toFixed(1)}s`);
  return out.join('\n') + '\n';
}
