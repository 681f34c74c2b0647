/**
 * The state dir (default /run/cellwall, --state-dir or CELLWALL_STATE_DIR):
 * pinned backend, apply lock, journal of an apply in progress, and the
 * manifest of what is applied. Writes are atomic (tmp + fsync + rename) and
 * a full or read-only disk becomes a clear error before anything changes.
 */
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CellwallError } from '../errors.js';
import type { CellState, StateHashes } from '../state/index.js';
import { normalizeRule, type FamilyState } from '../state/iptables.js';
import { normalizeHeader, normalizeMember, type IpSetState } from '../state/ipset.js';

export const DEFAULT_STATE_DIR = '/run/cellwall';

export function stateDirOf(opt?: string): string {
  return opt ?? process.env.CELLWALL_STATE_DIR ?? DEFAULT_STATE_DIR;
}

function stateError(path: string, e: unknown, what: string): CellwallError {
  const code = (e as NodeJS.ErrnoException).code;
  const why = code === 'ENOSPC' ? 'no space left on device' : code === 'EROFS' ? 'read-only file system'
    : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : String((e as Error).message ?? e);
  return new CellwallError(`${path}: cannot ${what}: ${why}`);
}

export async function ensureStateDir(dir: string): Promise<void> {
  try { await mkdir(dir, { recursive: true, mode: 0o755 }); } catch (e) { throw stateError(dir, e, 'create the state dir'); }
}

export async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w', 0o644);
    try { await fh.writeFile(data); await fh.sync(); } finally { await fh.close(); }
    await rename(tmp, path);
    const d = await open(dirname(path), 'r');
    try { await d.sync(); } finally { await d.close(); }
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw stateError(path, e, 'write');
  }
}

export async function readJson<T>(path: string): Promise<T | null> {
  try { return JSON.parse(await readFile(path, 'utf8')) as T; } catch { return null; }
}

/* ---- serialisable form of a CellState (the journal's snapshot) ---- */

interface FamilyJson { chains: [string, string[]][]; jumps: { host: string; spec: string }[] }
interface SetJson { name: string; type: string; options: string[]; members: string[] }
export interface StateJson { v4: FamilyJson; v6: FamilyJson; sets: SetJson[] }

export function stateToJson(s: CellState): StateJson {
  const fam = (f: FamilyState): FamilyJson => ({
    chains: [...f.chains].map(([n, rules]) => [n, rules.map((r) => r.spec)]),
    jumps: f.jumps.map((j) => ({ host: j.host, spec: j.spec })),
  });
  return { v4: fam(s.v4), v6: fam(s.v6), sets: [...s.sets.values()].map((x) => ({ name: x.name, type: x.type, options: x.options, members: x.members })) };
}

export function stateFromJson(j: StateJson): CellState {
  const fam = (f: FamilyJson, family: 4 | 6): FamilyState => ({
    chains: new Map(f.chains.map(([n, specs]) => [n, specs.map((spec) => ({ spec, norm: normalizeRule(spec, family) }))])),
    jumps: f.jumps.map((x) => ({ host: x.host, spec: x.spec, norm: normalizeRule(x.spec, family) })),
  });
  const sets = new Map<string, IpSetState>();
  for (const x of j.sets) {
    sets.set(x.name, {
      name: x.name, type: x.type, options: x.options, header: normalizeHeader(x.type, x.options), members: x.members,
      membersNorm: [...new Set(x.members.map(normalizeMember))].sort(), dynamic: x.name.startsWith('cw-d-'),
    });
  }
  return { v4: fam(j.v4, 4), v6: fam(j.v6, 6), sets };
}

export interface Journal {
  version: 1;
  pid: number;
  started: string;
  backend: string;
  target: string;
  snapshot: StateJson;
}

export interface AppliedManifest {
  cellwall: string;
  time: string;
  policyHash: string | null;
  segment: string | null;
  source: string;
  payloadHash: string;
  backend: string;
  hashes: StateHashes;
  /** "desiredChainHash=liveChainHash": rules the kernel reads back in a form the normaliser does not map */
  equivalences: string[];
}

export const journalPath = (dir: string): string => join(dir, 'journal.json');
export const manifestPath = (dir: string): string => join(dir, 'manifest.json');

let versionCache: string | null = null;
/** cellwall's version from the package.json above this module (works from src/ and dist/src/) */
export function cellwallVersion(): string {
  if (versionCache) return versionCache;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      try {
        const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'cellwall' && pkg.version) return (versionCache = pkg.version);
      } catch { /* keep looking */ }
    }
    dir = dirname(dir);
  }
  return (versionCache = 'unknown');
}
