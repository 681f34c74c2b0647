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

/** one expected probe: [proto, src, dst, port, outcome] (port ignored for icmp) */
export type Row = [Proto, string, string, number | null, Outcome];

/**
 * Run every row concurrently and compare with the expected outcomes; one
 * assertion listing every mismatch, so a failure shows the whole picture.
 */
export async function expectProbes(t: Topology, rows: Row[], timeoutMs = 1000): Promise<ProbeResult[]> {
  const got = await Promise.all(
    rows.map(([proto, src, dst, port]) => t.probe(proto, src, dst, port ?? undefined, { timeoutMs })),
  );
  const bad = rows
    .map((row, i) => ({ row, got: got[i] }))
    .filter(({ row, got }) => row[4] !== got.outcome)
    .map(({ row, got }) => `${row[0]} ${row[1]} -> ${row[2]}${row[3] ? `:${row[3]}` : ''}: expected ${row[4]}, got ${got.outcome} (${got.detail})`);
  expect(bad, bad.join('\n')).toEqual([]);
  return got;
}
