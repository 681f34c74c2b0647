/**
 * Compiled bundles for the segments a push touches: the files of
 * `cellwall compile POLICY --segment S --out DIR` (SPEC §3), read into memory,
 * with a content hash that identifies what a cell should run.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CellwallError } from '../errors.js';

export type Backend = 'iptables' | 'nft';
export const BUNDLE_FILES = ['ipset.restore', 'iptables.v4', 'iptables.v6'] as const;
/** the payload files each backend sends to a cell */
export const BACKEND_FILES: Record<Backend, readonly string[]> = { iptables: BUNDLE_FILES, nft: ['ruleset.nft'] };
export type BundleFile = (typeof BUNDLE_FILES)[number];

export interface Bundle {
  segment: string;
  /** iptables when absent */
  backend?: Backend;
  /** payload files of the backend (BACKEND_FILES; missing ones are empty) */
  files: Record<string, string>;
  /** manifest.json as written by compile, when present */
  manifest?: unknown;
  /** sha256 over the payload files (name, length, content) */
  hash: string;
}

export function bundleHash(files: Record<string, string>, backend: Backend = 'iptables'): string {
  const h = createHash('sha256');
  for (const f of BACKEND_FILES[backend]) {
    const b = Buffer.from(files[f] ?? '', 'utf8');
    h.update(`${f}\0${b.length}\0`);
    h.update(b);
  }
  return h.digest('hex');
}

export function readBundleDir(dir: string, segment: string, backend: Backend = 'iptables'): Bundle {
  if (!existsSync(dir)) throw new CellwallError(`${dir}: no compiled bundle for segment "${segment}"`);
  const files: Record<string, string> = {};
  for (const f of BACKEND_FILES[backend]) {
    const p = join(dir, f);
    files[f] = existsSync(p) ? readFileSync(p, 'utf8') : '';
  }
  if (backend === 'nft' && !files['ruleset.nft']) throw new CellwallError(`${dir}: ruleset.nft not found (expected the output of \`cellwall compile --backend nft --out\`)`);
  if (backend === 'iptables' && !files['iptables.v4'] && !files['iptables.v6']) throw new CellwallError(`${dir}: neither iptables.v4 nor iptables.v6 found (expected the output of \`cellwall compile --out\`)`);
  let manifest: unknown;
  const m = join(dir, 'manifest.json');
  if (existsSync(m)) {
    try { manifest = JSON.parse(readFileSync(m, 'utf8')); } catch { manifest = undefined; }
  }
  return { segment, backend, files, manifest, hash: bundleHash(files, backend) };
}

const CLI = fileURLToPath(new URL('../../../bin/cellwall.js', import.meta.url));

/** Compile one segment through the public command (`cellwall compile --out`). */
export async function compileBundle(policyFile: string, segment: string, backend: Backend = 'iptables'): Promise<Bundle> {
  const dir = mkdtempSync(join(tmpdir(), 'cellwall-push-'));
  try {
    const args = [CLI, 'compile', policyFile, '--segment', segment, '--out', dir];
    if (backend !== 'iptables') args.push('--backend', backend);
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, args, { maxBuffer: 64 << 20 }, (err, _out, stderr) => {
        if (err) reject(new CellwallError(`compiling segment "${segment}" failed:\n${stderr.trim() || err.message}`));
        else resolve();
      });
    });
    return readBundleDir(dir, segment, backend);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
