/**
 * Kernel load timing inside throw-away network namespaces (`cwt-<random>-<role>`),
 * never in the host namespace. Every namespace is deleted in a finally block.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';

const TOOLS = ['ip', 'ipset', 'iptables-restore', 'ip6tables-restore', 'iptables-save', 'ip6tables-save'];

/** null when we can create namespaces and load payloads, else why not. */
export function kernelMissing(): string | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not running as root';
  for (const t of TOOLS) {
    if (!['/usr/sbin', '/usr/bin', '/sbin', '/bin'].some((d) => existsSync(`${d}/${t}`))) return `tool not found: ${t}`;
  }
  return null;
}

function run(argv: string[], timeoutMs = 30_000) {
  return spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 30 });
}

/** Run fn in a fresh namespace cwt-<random>-<role>, deleted afterwards whatever happens. */
export async function withNamespace<T>(role: string, fn: (ns: string) => Promise<T> | T): Promise<T> {
  const ns = `cwt-${randomBytes(3).toString('hex')}-${role}`;
  const r = run(['ip', 'netns', 'add', ns]);
  if (r.status !== 0) throw new Error(`ip netns add ${ns}: ${r.stderr.trim()}`);
  try {
    return await fn(ns);
  } finally {
    run(['ip', 'netns', 'del', ns]);
  }
}

export interface LoadStep {
  command: string;
  ms: number;
  ok: boolean;
  timedOut: boolean;
  error?: string;
}

/** Time one restore command inside ns, bounded by timeoutMs (the process is killed past it). */
export function timedLoad(ns: string, argv: string[], timeoutMs: number): LoadStep {
  const t0 = process.hrtime.bigint();
  const r = run(['ip', 'netns', 'exec', ns, ...argv], timeoutMs);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const timedOut = r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT';
  const ok = !r.error && r.status === 0;
  return {
    command: argv.join(' '), ms, ok, timedOut,
    ...(ok ? {} : { error: timedOut ? `killed after ${timeoutMs} ms` : (r.stderr || String(r.error)).trim().slice(0, 300) }),
  };
}

/** What is loaded in ns: rules per family and ipsets (names). */
export function loadedCounts(ns: string): { rulesV4: number; rulesV6: number; sets: number } {
  const count = (argv: string[], re: RegExp) => {
    const r = run(['ip', 'netns', 'exec', ns, ...argv], 120_000);
    return r.status === 0 ? r.stdout.split('\n').filter((l) => re.test(l)).length : -1;
  };
  return {
    rulesV4: count(['iptables-save', '-t', 'filter'], /^-A /),
    rulesV6: count(['ip6tables-save', '-t', 'filter'], /^-A /),
    sets: count(['ipset', 'list', '-n'], /\S/),
  };
}
