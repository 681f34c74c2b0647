/**
 * Load compiled payloads into a throw-away `cwt-*` network namespace (ipset
 * restore, then iptables-restore / ip6tables-restore --noflush), never the
 * host's. The namespace is deleted in `finally`, also when a load fails.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export interface LoadResult { ok: boolean; step: string; stderr: string }

function sh(argv: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(argv[0], argv.slice(1), { input, encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? 1, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

/** Run fn with a fresh namespace name `cwt-<rand>-<role>`; always deleted afterwards. */
export async function withNetns<T>(role: string, fn: (ns: string) => Promise<T> | T): Promise<T> {
  const ns = `cwt-${randomBytes(3).toString('hex')}-${role}`;
  const add = sh(['ip', 'netns', 'add', ns]);
  if (add.code !== 0) throw new Error(`ip netns add ${ns}: ${add.stderr}`);
  try {
    return await fn(ns);
  } finally {
    sh(['ip', 'netns', 'del', ns]);
  }
}

export function inNs(ns: string, argv: string[], input?: string) {
  return sh(['ip', 'netns', 'exec', ns, ...argv], input);
}

/**
 * ipset restore, then (--test only, or for real) iptables-restore and
 * ip6tables-restore with --noflush, inside ns. Returns the first failure.
 */
export function loadPayloads(ns: string, p: { ipset: string; v4: string; v6: string }, testOnly: boolean): LoadResult {
  const steps: Array<[string, string[], string]> = [
    ['ipset restore', ['ipset', 'restore'], p.ipset],
    ['iptables-restore', ['iptables-restore', '--noflush', ...(testOnly ? ['--test'] : [])], p.v4],
    ['ip6tables-restore', ['ip6tables-restore', '--noflush', ...(testOnly ? ['--test'] : [])], p.v6],
  ];
  for (const [step, argv, input] of steps) {
    const r = inNs(ns, argv, input);
    if (r.code !== 0) return { ok: false, step, stderr: r.stderr };
  }
  return { ok: true, step: '', stderr: '' };
}
