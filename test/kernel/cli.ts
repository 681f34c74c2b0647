/**
 * The real CLI, as the kernel tests use it: `node bin/cellwall.js compile|explain`
 * (needs `npm run build`; `npm test` builds first), plus the probe table used
 * by the scenario tests.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { run } from './netns.js';
import type { Outcome, ProbeResult, Proto, Topology } from './netns.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const EXAMPLES = join(ROOT, 'examples');
// CELLWALL_BIN: run the kernel tests against another build of the CLI
const BIN = process.env.CELLWALL_BIN ?? join(ROOT, 'bin', 'cellwall.js');

export async function cellwall(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return run([process.execPath, BIN, ...args], 60_000);
}

/** the output of `compile --out DIR` */
export interface Compiled {
  dir: string;
  ipset: string;
  v4: string;
  v6: string;
  manifest: unknown;
  cleanup(): void;
}

/** `cellwall compile POLICY --segment S --out DIR` into a fresh temporary directory */
export async function compile(policy: string, segment: string): Promise<Compiled> {
  const dir = mkdtempSync(join(tmpdir(), 'cwt-compile-'));
  const r = await cellwall(['compile', policy, '--segment', segment, '--out', dir]);
  if (r.code !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`cellwall compile ${policy} --segment ${segment} exited ${r.code}\n${r.stderr}${r.stdout}`);
  }
  const read = (f: string) => readFileSync(join(dir, f), 'utf8');
  return {
    dir,
    ipset: read('ipset.restore'),
    v4: read('iptables.v4'),
    v6: read('iptables.v6'),
    manifest: JSON.parse(read('manifest.json')),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** what `explain --json` prints (the fields the tests read) */
export interface Explained {
  verdict: 'allow' | 'deny' | 'untouched';
  target: 'RETURN' | 'ACCEPT' | 'REJECT' | 'DROP';
  /** SPEC §2 step that decided; null when untouched */
  step: number | null;
  what: string;
  trace: Array<{ chain: string; rule: number; what: string }>;
}

export interface ExplainQuery {
  segment: string;
  src: string;
  dst: string;
  proto: string;
  port?: number;
  phase?: 'running' | 'staging';
  member?: string;
  dstPhase?: 'running' | 'staging';
  dstMember?: string;
}

export function explainArgv(file: string, q: ExplainQuery): string[] {
  const args = ['explain', file, '--segment', q.segment, '--src', q.src, '--dst', q.dst, '--proto', q.proto, '--json'];
  if (q.port !== undefined) args.push('--port', String(q.port));
  if (q.phase) args.push('--phase', q.phase);
  if (q.member) args.push('--member', q.member);
  if (q.dstMember) args.push('--dst-member', q.dstMember, '--dst-phase', q.dstPhase ?? 'running');
  return args;
}

/** `cellwall explain ... --json` as a process */
export async function explain(file: string, q: ExplainQuery): Promise<Explained> {
  const args = explainArgv(file, q);
  const r = await cellwall(args);
  if (r.code !== 0 || !r.stdout.trim()) throw new Error(`cellwall ${args.join(' ')} exited ${r.code}\n${r.stderr}`);
  return JSON.parse(r.stdout) as Explained;
}

type RunExplain = (file: string, o: Record<string, unknown>, ctx: unknown) => Promise<number>;
let runExplain: RunExplain | undefined;

/**
 * The same `explain` command action, in this process: the built
 * dist/src/compile/cli.js runExplain that src/cli/explain.ts calls, with the
 * options commander would pass. Saves a Node start per probe.
 */
export async function explainInProcess(file: string, q: ExplainQuery): Promise<Explained> {
  runExplain ??= ((await import(join(ROOT, 'dist', 'src', 'compile', 'cli.js'))) as { runExplain: RunExplain }).runExplain;
  let out = '';
  let err = '';
  let code = 0;
  const ctx = {
    setExit: (c: number) => (code = c),
    stdout: { write: (s: string) => ((out += s), true) },
    stderr: { write: (s: string) => ((err += s), true) },
  };
  const o: Record<string, unknown> = { segment: q.segment, src: q.src, dst: q.dst, proto: q.proto, json: true, phase: q.phase ?? 'running' };
  if (q.port !== undefined) o.port = String(q.port);
  if (q.member) o.member = [q.member];
  if (q.dstMember) Object.assign(o, { dstMember: [q.dstMember], dstPhase: q.dstPhase ?? 'running' });
  const rc = await runExplain(file, o, ctx);
  if (rc !== 0 || code !== 0) throw new Error(`explain ${explainArgv(file, q).join(' ')}: exit ${rc || code}\n${err}`);
  return JSON.parse(out) as Explained;
}

/** one expected probe: [proto, src, dst, port, outcome] (port ignored for icmp) */
export type Row = [Proto, string, string, number | null, Outcome];

/**
 * How long to wait for an answer. An expected timeout costs its full wait, so
 * it is short; an expected answer returns as soon as it comes, so its wait can
 * be generous (a loaded CI machine must not turn a slow answer into a
 * "timeout").
 */
export function waitFor(expected: Outcome): number {
  return expected === 'timeout' ? 1000 : 4000;
}

/**
 * Run every row concurrently and compare with the expected outcomes; one
 * assertion listing every mismatch, so a failure shows the whole picture.
 */
export async function expectProbes(t: Topology, rows: Row[]): Promise<ProbeResult[]> {
  const got = await Promise.all(
    rows.map(([proto, src, dst, port, want]) => t.probe(proto, src, dst, port ?? undefined, { timeoutMs: waitFor(want) })),
  );
  const bad = rows
    .map((row, i) => ({ row, got: got[i] }))
    .filter(({ row, got }) => row[4] !== got.outcome)
    .map(({ row, got }) => `${row[0]} ${row[1]} -> ${row[2]}${row[3] ? `:${row[3]}` : ''}: expected ${row[4]}, got ${got.outcome} (${got.detail})`);
  expect(bad, bad.join('\n')).toEqual([]);
  return got;
}
