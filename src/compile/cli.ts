/**
 * `cellwall compile` and `cellwall explain`: loaded lazily by src/cli/compile.ts
 * and src/cli/explain.ts.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { CliContext } from '../cli/main.js';
import { CellwallError, formatDiagnostic, type Diagnostic } from '../errors.js';
import type { Phase, Policy } from '../policy/model.js';
import { ipsetInput, renderIpset, renderIpsetBytes } from '../render/ipset.js';
import type { IpsetWorkerResult, RedundancyResult, WorkerJob } from './worker.js';
import { packRedundancy, provideRedundant, redundantAsgRules } from './redundancy.js';
import { renderIptables, ruleText } from '../render/iptables.js';
import { familyCounts, fileSum, manifestFamilies, renderManifest, type FileSum, type Payloads } from '../render/manifest.js';
import { evaluatePlan, type Evaluation, type Membership, type Packet, type PacketProto } from './evaluate.js';
import { compileSegment, type CompileResult } from './index.js';
import type { Plan } from './plan.js';
import { locText } from './util.js';

export const BACKENDS = ['iptables', 'nft', 'ebpf'] as const;

export function renderPayloads(plan: Plan): Payloads {
  return { 'ipset.restore': renderIpset(plan), 'iptables.v4': renderIptables(plan, 4), 'iptables.v6': renderIptables(plan, 6) };
}

/**
 * The payloads as bytes, for writing, and the manifest. A plan with many set
 * entries has its ipset payload rendered, hashed and (given `writeDir`)
 * written to `.ipset.restore.tmp` there by a worker thread, while this thread
 * renders the iptables payloads, the backend's own files and the bulk of the
 * manifest (CELLWALL_IPSET_WORKER=1 always, =0 never); meanwhile the
 * iptables payloads are written to their temporary names as well. A file
 * already written is null in the result.
 */
async function renderFiles(plan: Plan, backend: string | undefined, ipsetWorker: CompileWorker | undefined, writeDir: string | undefined,
  written: string[]): Promise<Record<string, string | Buffer | null>> {
  // with the worker, files go to their temporary names as soon as they are ready (`written`)
  const early = ipsetWorker && writeDir ? writeDir : undefined;
  if (early) written.push(tmpName('ipset.restore'));
  const worker = ipsetWorker?.ipset(plan, early ? join(early, tmpName('ipset.restore')) : undefined);
  const v4 = Buffer.from(renderIptables(plan, 4));
  const v6 = Buffer.from(renderIptables(plan, 6));
  const known: Record<string, FileSum> = { 'iptables.v4': fileSum(v4), 'iptables.v6': fileSum(v6) };
  const writes: Array<Promise<void>> = [];
  if (early) {
    for (const [name, bytes] of [['iptables.v4', v4], ['iptables.v6', v6]] as const) {
      written.push(tmpName(name));
      writes.push(writeFile(join(early, tmpName(name)), bytes));
    }
  }
  const writing = Promise.all(writes);
  // awaited below; a failure while an earlier step throws is not an unhandled rejection
  writing.catch(() => {});
  const extra: Record<string, string | Buffer> = {};
  // the nft backend adds its one-transaction script to the same files (SPEC §3),
  // the eBPF backend its object and map contents
  if (backend === 'nft') extra['ruleset.nft'] = (await import('../render/nft.js')).renderNft(plan);
  else if (backend === 'ebpf') Object.assign(extra, (await import('../render/ebpf.js')).renderEbpf(plan));
  const parts = manifestFamilies(plan);
  let ipset: Buffer | null;
  if (worker) {
    const r = await worker;
    if (r.writeError) throw new CellwallError(`cannot write ${join(writeDir!, tmpName('ipset.restore'))}: ${r.writeError} (nothing in ${writeDir} was replaced)`);
    ipset = r.bytes ? Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength) : null;
    known['ipset.restore'] = { sha256: r.sha256, bytes: r.length };
  } else {
    ipset = renderIpsetBytes(plan);
    known['ipset.restore'] = fileSum(ipset);
  }
  await writing;
  const files: Record<string, string | Buffer | null> = { 'ipset.restore': ipset, 'iptables.v4': early ? null : v4, 'iptables.v6': early ? null : v6, ...extra };
  // the manifest hashes every file written
  files['manifest.json'] = renderManifest(plan, files, known, parts);
  return files;
}

/** the temporary name a file is written under before it is renamed into place */
function tmpName(name: string): string {
  return `.${name}.tmp`;
}

/** remove these files of `dir` (temporary files of a compile that failed), whether they exist or not */
async function removeAll(dir: string, files: string[]): Promise<void> {
  for (const f of files) await rm(join(dir, f), { force: true }).catch(() => {});
}

/** set entries from which the worker pays off (its start and the copy of the sets cost ~50 ms) */
const IPSET_WORKER_ENTRIES = 200_000;

/** whether the (running) worker renders the ipset payload */
function useIpsetWorker(plan: Plan): boolean {
  if (process.env.CELLWALL_IPSET_WORKER === '1') return true;
  let n = 0;
  for (const f of [4, 6] as const) for (const s of plan.families[f].sets) n += s.entries;
  return n >= IPSET_WORKER_ENTRIES;
}

const COMPILE_WORKER = new URL('./worker.js', import.meta.url);

/**
 * The compile worker (worker.ts), started before the policy is loaded so that
 * its start-up (a V8 isolate, the modules, the core) overlaps the load; it
 * checks the policy for redundant rules while this thread compiles, then
 * renders the ipset payload. close() when done, or when not needed after all.
 */
class CompileWorker {
  private readonly w = new Worker(COMPILE_WORKER);
  private readonly failed: Promise<never>;
  private readonly waiting = new Map<number, (answer: unknown) => void>();
  private nextId = 1;

  constructor() {
    this.failed = new Promise<never>((_, reject) => {
      this.w.once('error', reject);
      this.w.once('exit', (code) => reject(new Error(`compile worker exited with code ${code} before answering`)));
    });
    // a failure is reported by the job that waits for an answer; none when the worker is closed unused
    this.failed.catch(() => {});
    this.w.on('message', (m: { id: number }) => {
      this.waiting.get(m.id)?.(m);
      this.waiting.delete(m.id);
    });
  }

  private ask<T>(job: WorkerJob, transfer: ArrayBuffer[]): Promise<T> {
    const answer = new Promise<T>((resolve) => this.waiting.set(job.id, resolve as (a: unknown) => void));
    this.w.postMessage(job, transfer);
    return Promise.race([answer, this.failed]);
  }

  /** the redundant rules of the policy's security groups (redundancy.ts) */
  redundancy(policy: Policy): Promise<RedundancyResult> {
    const input = packRedundancy(policy);
    // the packed arrays move to the worker instead of being copied
    return this.ask({ id: this.nextId++, kind: 'redundancy', input },
      [input.groups.buffer, input.rules.buffer, input.ports.buffer, input.v4.buffer, input.v6.buffer] as ArrayBuffer[]);
  }

  ipset(plan: Plan, writeTo: string | undefined): Promise<IpsetWorkerResult> {
    const input = ipsetInput(plan);
    return this.ask({ id: this.nextId++, kind: 'ipset', input, ...(writeTo ? { writeTo } : {}) },
      [input.meta.buffer, input.parts.buffer, input.v4.buffer, input.v6.buffer] as ArrayBuffer[]);
  }

  close(): void {
    void this.w.terminate();
  }
}

/** a worker for a policy file big enough to need one, started now (CELLWALL_IPSET_WORKER=1 always, =0 never) */
function earlyWorker(file: string): CompileWorker | undefined {
  const env = process.env.CELLWALL_IPSET_WORKER;
  // the worker runs the built module (dist/); running from the TypeScript sources (tests), all runs here
  if (env === '0' || !existsSync(fileURLToPath(COMPILE_WORKER))) return undefined;
  let size = 0;
  try { size = statSync(file).size; } catch { return undefined; }
  return env === '1' || size >= WORKER_FILE_BYTES ? new CompileWorker() : undefined;
}

/** policy files from this size start the worker (the CF-scale bench policy: 23 MB) */
const WORKER_FILE_BYTES = 1 << 20;


/** Payloads plus manifest, keyed by the file names `compile --out` writes. */
export function renderAll(plan: Plan): Payloads & { 'manifest.json': string } {
  const p = renderPayloads(plan);
  return { ...p, 'manifest.json': renderManifest(plan, p) };
}

/**
 * CELLWALL_TIMINGS=1: wall and CPU milliseconds of each stage on stderr
 * (CPU counts every thread of the process, the ipset worker included).
 */
function stageTimer(ctx: CliContext): (stage: string) => void {
  if (process.env.CELLWALL_TIMINGS !== '1') return () => {};
  let wall = performance.now();
  let cpu = process.cpuUsage();
  ctx.stderr.write(`timing: start-up ${Math.round(performance.now())} ms wall\n`);
  return (stage) => {
    const c = process.cpuUsage(cpu);
    ctx.stderr.write(`timing: ${stage} ${Math.round(performance.now() - wall)} ms wall, ${Math.round((c.user + c.system) / 1000)} ms cpu\n`);
    wall = performance.now();
    cpu = process.cpuUsage();
  };
}

async function load(file: string): Promise<Policy> {
  const { loadPolicy } = await import('../policy/index.js');
  return loadPolicy(file);
}

export function requireSegment(policy: Policy, segment: string | undefined): string {
  const names = [...policy.segments.keys()];
  if (!segment) throw new CellwallError(`--segment is required (segments in ${policy.file}: ${names.join(', ') || 'none'})`);
  if (!policy.segments.has(segment)) {
    throw new CellwallError(`unknown segment ${JSON.stringify(segment)} (segments in ${policy.file}: ${names.join(', ') || 'none'})`);
  }
  return segment;
}

function checkBackend(b: string | undefined): void {
  const backend = b ?? 'iptables';
  if ((BACKENDS as readonly string[]).includes(backend)) return;
  throw new CellwallError(`unknown backend ${JSON.stringify(backend)} (expected one of: ${BACKENDS.join(', ')})`);
}

function printWarnings(ctx: CliContext, ws: Diagnostic[]): void {
  for (const w of ws) ctx.stderr.write(`${formatDiagnostic(w)}\n`);
}

export interface CompileCliOptions {
  segment?: string;
  out?: string;
  backend?: string;
  json?: boolean;
  print?: boolean;
}

export async function runCompile(file: string, o: CompileCliOptions, ctx: CliContext): Promise<number> {
  checkBackend(o.backend);
  const worker = earlyWorker(file);
  try {
    return await compileWith(file, o, ctx, worker);
  } finally {
    // an idle worker would keep the process alive
    worker?.close();
  }
}

async function compileWith(file: string, o: CompileCliOptions, ctx: CliContext, worker: CompileWorker | undefined): Promise<number> {
  const t = stageTimer(ctx);
  const policy = await load(file);
  t('load');
  const segment = requireSegment(policy, o.segment);
  // the worker checks for redundant rules while this thread compiles
  const redundancy = worker?.redundancy(policy);
  let result: CompileResult;
  if (redundancy) {
    const compiled = compileSegment(policy, segment, { redundantRules: false });
    // (should the worker have failed, the check runs here after all)
    const answer = await redundancy.catch(() => undefined);
    if (answer) provideRedundant(policy, answer.found);
    result = { ...compiled, warnings: [...redundantAsgRules(policy), ...compiled.warnings] };
  } else result = compileSegment(policy, segment);
  t('compile');
  // payloads as bytes once: hashed for the manifest and written from the same buffers
  if (o.out) await mkdir(o.out, { recursive: true });
  const inWorker = !!worker && useIpsetWorker(result.plan);
  let files: Record<string, string | Buffer | null>;
  const written: string[] = [];
  try {
    files = await renderFiles(result.plan, o.backend, inWorker ? worker : undefined, o.out && !o.print ? o.out : undefined, written);
  } catch (e) {
    // files written early are not renamed into place: nothing in --out changed
    await removeAll(o.out!, written);
    throw e;
  }
  t(inWorker ? 'render (the ipset payload in a worker thread)' : 'render');
  if (o.out) {
    // every file is written under its temporary name before any is renamed into place:
    // a failed write leaves the previous files of --out as they were
    const names = Object.keys(files);
    try {
      for (const name of names) {
        const text = files[name];
        if (text !== null) await writeFile(join(o.out, tmpName(name)), text);
      }
    } catch (e) {
      await removeAll(o.out, names.map(tmpName));
      throw e;
    }
    for (const name of names) await rename(join(o.out, tmpName(name)), join(o.out, name));
    t('write');
  }
  const plan = result.plan;
  const counts = { v4: familyCounts(plan, 4), v6: familyCounts(plan, 6) };
  if (o.json) {
    ctx.stdout.write(JSON.stringify({
      segment, backend: o.backend ?? 'iptables', out: o.out ?? null, counts, stats: plan.stats,
      warnings: result.warnings.map((w) => ({ ...w, text: formatDiagnostic(w) })),
      ...(o.print ? { payloads: printable(files) } : {}),
    }, null, 2) + '\n');
    return 0;
  }
  printWarnings(ctx, result.warnings);
  if (o.print) {
    for (const [name, text] of Object.entries(files)) ctx.stdout.write(`==> ${name} <==\n${text}`);
    return 0;
  }
  const s = plan.stats;
  const lines = [
    `segment ${segment} (${plan.mode}), policy ${plan.policyHash.slice(0, 12)}`,
    `IPv4: ${counts.v4.rules} rules in ${counts.v4.chains} chains, ${counts.v4.sets} sets, ${counts.v4.entries} set entries`,
    `IPv6: ${counts.v6.rules} rules in ${counts.v6.chains} chains, ${counts.v6.sets} sets, ${counts.v6.entries} set entries`,
    `optimised: ${s.asgRulesBound} bound ASG rules -> destination CIDRs ${s.cidrsIn} -> ${s.cidrsOut} in sets; ` +
      `${s.setsShared} identical sets shared, ${s.chainsMerged} identical chains merged, ${s.asgRulesShadowed} shadowed ASG rules dropped`,
    `warnings: ${result.warnings.length}`,
    o.out ? `wrote ${Object.keys(files).map((n) => join(o.out!, n)).join(', ')}` : 'dry run: nothing written (use --out DIR, or --print to see the payloads)',
  ];
  ctx.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** files for --json --print: text as strings, binary objects (the eBPF .o) as base64 */
function printable(files: Record<string, string | Buffer | null>): Record<string, string | { base64: string }> {
  // --print renders every file in memory (nothing is null)
  return Object.fromEntries(Object.entries(files).map(([n, t]) => [n,
    t === null ? '' : typeof t === 'string' ? t : n.endsWith('.o') ? { base64: t.toString('base64') } : t.toString('utf8')]));
}

export interface ExplainCliOptions {
  segment?: string;
  src?: string;
  dst?: string;
  phase?: string;
  member?: string[];
  dstPhase?: string;
  dstMember?: string[];
  proto?: string;
  port?: string;
  type?: string;
  code?: string;
  established?: boolean;
  json?: boolean;
}

const STEP_NAMES = ['source classification', 'established connection', 'app-to-app policies', 'segment egress', 'ASG', 'default deny'];

function intOption(name: string, v: string | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new CellwallError(`--${name}: expected an integer ${min}..${max}, got ${JSON.stringify(v)}`);
  return Number(v);
}

/** An explain query: the packet and the dynamic membership of its source and destination. */
export interface ExplainQuery { packet: Packet; src: Membership; dst: Membership }

/** Turn explain options into a packet and membership, checking them against the policy. */
export function explainQuery(policy: Policy, o: ExplainCliOptions): ExplainQuery {
  if (!o.src) throw new CellwallError('--src IP is required');
  if (!o.dst) throw new CellwallError('--dst IP is required');
  const phaseOf = (option: string, v: string | undefined): Phase => {
    const ph = v ?? 'running';
    if (ph !== 'running' && ph !== 'staging') throw new CellwallError(`--${option}: expected running or staging, got ${JSON.stringify(v)}`);
    return ph;
  };
  const phase = phaseOf('phase', o.phase);
  const dstPhase = phaseOf('dst-phase', o.dstPhase);
  const protos = ['tcp', 'udp', 'icmp', 'icmpv6'];
  const proto = (o.proto ?? 'tcp') as PacketProto;
  if (!protos.includes(proto)) throw new CellwallError(`--proto: expected one of ${protos.join(', ')}, got ${JSON.stringify(o.proto)}`);
  const groups = o.member ?? [];
  const dstGroups = o.dstMember ?? [];
  const dynamic = [...policy.groups.values()].filter((g) => g.kind === 'dynamic').map((g) => g.name);
  for (const [option, list, addr] of [['member', groups, '--src'], ['dst-member', dstGroups, '--dst']] as const) {
    for (const g of list) {
      if (!dynamic.includes(g)) {
        throw new CellwallError(`--${option} ${JSON.stringify(g)}: not a dynamic group (dynamic groups: ${dynamic.join(', ') || 'none'}); static group membership follows from ${addr}`);
      }
    }
  }
  if (o.dstPhase !== undefined && dstGroups.length === 0) throw new CellwallError('--dst-phase needs --dst-member GROUP');
  if (phase === 'staging' && groups.length === 0) {
    throw new CellwallError('--phase staging needs --member GROUP: a source is staging only through a dynamic group\'s staging member set');
  }
  const port = intOption('port', o.port, 1, 65535);
  if ((proto === 'tcp' || proto === 'udp') && port === undefined) throw new CellwallError(`--port N is required for --proto ${proto}`);
  if ((proto === 'icmp' || proto === 'icmpv6') && port !== undefined) throw new CellwallError(`--port is not allowed for --proto ${proto} (use --type and --code)`);
  const type = intOption('type', o.type, 0, 255);
  const code = intOption('code', o.code, 0, 255);
  if ((proto === 'tcp' || proto === 'udp') && (type !== undefined || code !== undefined)) throw new CellwallError(`--type/--code are for icmp/icmpv6 only`);
  const packet: Packet = { src: o.src, dst: o.dst, proto, ...(port !== undefined ? { port } : {}), ...(type !== undefined ? { type } : {}), ...(code !== undefined ? { code } : {}), established: !!o.established };
  return { packet, src: { phase, groups }, dst: { phase: dstPhase, groups: dstGroups } };
}

export async function runExplain(file: string, o: ExplainCliOptions, ctx: CliContext): Promise<number> {
  const policy = await load(file);
  const segment = requireSegment(policy, o.segment);
  const q = explainQuery(policy, o);
  const { plan } = compileSegment(policy, segment);
  const ev = evaluatePlan(plan, q.packet, q.src, q.dst);
  if (o.json) {
    ctx.stdout.write(JSON.stringify(explainJson(plan, ev, q), null, 2) + '\n');
    return 0;
  }
  ctx.stdout.write(explainText(plan, ev) + '\n');
  return 0;
}

function explainJson(plan: Plan, ev: Evaluation, q: ExplainQuery) {
  const sets = new Map(plan.families[ev.family].sets.map((s) => [s.name, s]));
  return {
    segment: plan.segment, mode: plan.mode, packet: q.packet, phase: q.src.phase, members: q.src.groups,
    ...(q.dst.groups.length ? { dstPhase: q.dst.phase, dstMembers: q.dst.groups } : {}),
    verdict: ev.verdict, target: ev.target, ...(ev.rejectWith ? { rejectWith: ev.rejectWith } : {}),
    step: ev.step, stepName: ev.step === null ? null : STEP_NAMES[ev.step], what: ev.what,
    locs: ev.locs.map((l) => ({ at: locText(l, plan.policyFile), path: l.path })),
    logged: ev.logged,
    trace: ev.trace.map((t) => ({ chain: t.chain, rule: t.index, step: t.rule.step, what: t.rule.what, iptables: `-A ${t.chain} ${ruleText(plan, ev.family, t.rule, sets)}` })),
  };
}

function explainText(plan: Plan, ev: Evaluation): string {
  const sets = new Map(plan.families[ev.family].sets.map((s) => [s.name, s]));
  const meaning: Record<string, string> = {
    RETURN: ev.verdict === 'untouched' ? 'not governed by cellwall: continues in FORWARD' : 'back to the platform\'s FORWARD rules (tighten)',
    ACCEPT: 'accepted (enforce)',
    REJECT: ev.rejectWith === 'tcp-reset' ? 'TCP reset' : 'port-unreachable',
    DROP: 'dropped',
  };
  const lines = [`verdict: ${ev.verdict} (${ev.target}: ${meaning[ev.target]})`];
  if (ev.step !== null) lines.push(`decided by step ${ev.step} (${STEP_NAMES[ev.step]}): ${ev.what}`);
  for (const l of ev.locs.slice(0, 10)) lines.push(`  from ${locText(l, plan.policyFile)}${l.path ? ` ${l.path}` : ''}`);
  if (ev.locs.length > 10) lines.push(`  ... and ${ev.locs.length - 10} more policy entries`);
  for (const p of ev.logged) lines.push(`logged with prefix ${JSON.stringify(p)}`);
  lines.push(`trace (IPv${ev.family}, segment ${plan.segment}):`);
  for (const t of ev.trace) lines.push(`  [step ${t.rule.step}] -A ${t.chain} ${ruleText(plan, ev.family, t.rule, sets)}`);
  if (ev.trace.length === 0) lines.push('  (no rule matched)');
  return lines.join('\n');
}
