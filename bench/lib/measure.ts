/**
 * Timing helpers shared by the benchmark suites: whole-process timing (hyperfine
 * when installed, else a spawnSync loop), one-shot runs that keep the output for
 * checking, medians, and machine information for the results file.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, hostname, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../data/geoip.js';

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Version line of a tool, or null when it is not installed. */
export function toolVersion(cmd: string, args: string[] = ['--version']): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return null;
  return (r.stdout || r.stderr).split('\n')[0].trim();
}

export interface Command {
  name: string;
  argv: string[];
}

export interface CommandTiming {
  name: string;
  command: string;
  medianMs: number;
  runsMs: number[];
  tool: 'hyperfine' | 'spawnSync';
}

/** Run a command once (cwd = repo root), returning its stdout and wall time; throws on failure. */
export function runOnce(cmd: Command, timeoutMs = 600_000): { ms: number; stdout: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd.argv[0], cmd.argv.slice(1), {
    cwd: repoRoot(), encoding: 'utf8', maxBuffer: 1 << 30, timeout: timeoutMs,
  });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.error) throw new Error(`${cmd.name}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new Error(`${cmd.name}: '${cmd.argv.join(' ')}' exited ${r.status}: ${r.stderr.trim().slice(0, 500)}`);
  }
  return { ms, stdout: r.stdout };
}

const shellQuote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/**
 * Median wall time of each command over `runs` runs (after one warm-up), output
 * discarded. Uses hyperfine (-N, no shell) when installed.
 */
export function timeCommands(cmds: Command[], runs: number): CommandTiming[] {
  if (toolVersion('hyperfine') !== null) {
    const dir = mkdtempSync(join(tmpdir(), 'cw-bench-'));
    try {
      const out = join(dir, 'hf.json');
      const args = ['-N', '--style', 'none', '--warmup', '1', '--runs', String(runs), '--export-json', out];
      for (const c of cmds) args.push('-n', c.name, c.argv.map(shellQuote).join(' '));
      execFileSync('hyperfine', args, { cwd: repoRoot(), stdio: ['ignore', 'ignore', 'inherit'] });
      const json = JSON.parse(readFileSync(out, 'utf8')) as { results: Array<{ times: number[] }> };
      return cmds.map((c, i) => {
        const runsMs = json.results[i].times.map((s) => s * 1000);
        return { name: c.name, command: c.argv.join(' '), medianMs: median(runsMs), runsMs, tool: 'hyperfine' as const };
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return cmds.map((c) => {
    runOnce(c); // warm-up (page cache, node compile cache)
    const runsMs: number[] = [];
    for (let i = 0; i < runs; i++) runsMs.push(runOnce(c).ms);
    return { name: c.name, command: c.argv.join(' '), medianMs: median(runsMs), runsMs, tool: 'spawnSync' as const };
  });
}

export function machineInfo(): Record<string, unknown> {
  const cpu = cpus();
  let commit: string | null = null;
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot(), encoding: 'utf8' }).trim();
  } catch { /* not a git checkout */ }
  return {
    hostname: hostname(),
    cpu: cpu[0]?.model ?? 'unknown',
    cores: cpu.length,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    kernel: release(),
    platform: process.platform,
    arch: process.arch,
    node: process.version,
    /** 1/5/15-minute load averages when the results were written: > cores means a contended machine */
    loadavg: loadavg().map((x) => +x.toFixed(2)),
    commit,
    tools: {
      hyperfine: toolVersion('hyperfine'),
      iprange: toolVersion('iprange'),
      python3: toolVersion('python3'),
    },
  };
}

export interface FnTiming {
  /** median latency of one call, ms */
  medianMs: number;
  samples: number;
  meanMs: number;
  minMs: number;
  maxMs: number;
}

/**
 * Median latency of fn with tinybench, bounded: at least `iterations` calls and
 * at most about `timeMs` of sampling beyond that (plus one warm-up call).
 */
export async function timeFn(name: string, fn: () => unknown, iterations: number, timeMs = 0): Promise<FnTiming> {
  const { Bench } = await import('tinybench');
  const bench = new Bench({ iterations, time: timeMs, warmupIterations: 1, warmupTime: 0, throws: true });
  bench.add(name, fn);
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed') throw new Error(`${name}: benchmark ${r.state}`);
  const l = r.latency;
  return { medianMs: l.p50, samples: l.samplesCount, meanMs: l.mean, minMs: l.min, maxMs: l.max };
}
