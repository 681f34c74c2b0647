/**
 * Kernel load timing inside throw-away network namespaces (`cwt-<random>-<role>`),
 * never in the host namespace. Every namespace is deleted in a finally block.
 */
import { spawn, spawnSync } from 'node:child_process';
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

export interface FirstPacket {
  connects: number;
  /** how the connects ended: accepted by the listener, refused (TCP reset), or otherwise (timeout, ICMP error) */
  ok: number;
  refused: number;
  other: number;
  medianUs: number;
  p90Us: number;
}

/**
 * The cost of a connection's first packet through what is loaded in `cell`:
 * a container namespace (address `src`/16, gateway `.1` of that /16 on the
 * cell) and an "internet" namespace (`dst`/24, gateway `.1`) are wired to the
 * cell by veth pairs; `count` sequential TCP connects from the container to
 * a listener on dst:8443, each timed (python3 in the container namespace).
 * Namespaces are `cwt-*`, deleted afterwards; every wait is bounded.
 */
export async function firstPacketCost(cell: string, src: string, dst: string, count: number): Promise<FirstPacket> {
  const octets = (a: string, n: number) => a.split('.').slice(0, n).join('.');
  return withNamespace('ctr', (ctr) => withNamespace('inet', (inet) => {
    const must = (argv: string[]) => {
      const r = run(argv);
      if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr.trim()}`);
    };
    const cg = `${octets(src, 2)}.0.1`, ig = `${octets(dst, 3)}.1`;
    must(['ip', 'link', 'add', 'c0', 'netns', ctr, 'type', 'veth', 'peer', 'name', 'cwc0', 'netns', cell]);
    must(['ip', 'link', 'add', 'i0', 'netns', inet, 'type', 'veth', 'peer', 'name', 'cwi0', 'netns', cell]);
    for (const [ns, dev, addr] of [[ctr, 'c0', `${src}/16`], [cell, 'cwc0', `${cg}/16`], [cell, 'cwi0', `${ig}/24`], [inet, 'i0', `${dst}/24`]]) {
      must(['ip', '-n', ns, 'addr', 'add', addr, 'dev', dev]);
      must(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    }
    for (const ns of [ctr, inet]) must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    must(['ip', '-n', ctr, 'route', 'add', 'default', 'via', cg]);
    must(['ip', '-n', inet, 'route', 'add', 'default', 'via', ig]);
    must(['ip', 'netns', 'exec', cell, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    // the listener accepts and closes, for at most 120 s; the client gives up after 2 s per connect
    const listener = spawn('ip', ['netns', 'exec', inet, 'timeout', '120', 'python3', '-c', LISTENER, dst], { stdio: 'ignore' });
    try {
      run(['sleep', '0.5']);
      const r = run(['ip', 'netns', 'exec', ctr, 'python3', '-c', CLIENT, dst, String(count)], 150_000);
      if (r.status !== 0) throw new Error(`first-packet client: ${r.stderr.trim() || String(r.error)}`);
      return JSON.parse(r.stdout) as FirstPacket;
    } finally {
      listener.kill();
    }
  }));
}

const LISTENER = `
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8443)); s.listen(512)
while True:
    c, _ = s.accept(); c.close()
`;

const CLIENT = `
import json, socket, sys, time
dst, n = sys.argv[1], int(sys.argv[2])
ok = refused = other = 0; t = []
for i in range(n):
    s = socket.socket(); s.settimeout(2)
    a = time.perf_counter()
    try:
        s.connect((dst, 8443)); ok += 1
    except ConnectionRefusedError:
        refused += 1
    except OSError:
        other += 1
    t.append(time.perf_counter() - a); s.close()
t.sort()
print(json.dumps({"connects": n, "ok": ok, "refused": refused, "other": other, "medianUs": round(t[n // 2] * 1e6), "p90Us": round(t[int(n * 0.9)] * 1e6)}))
`;
