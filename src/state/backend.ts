/**
 * Which iptables a host uses: iptables-nft or iptables-legacy. Detected once
 * per host, pinned in the state dir, and reported.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';
import { run } from './exec.js';
import { parseSave } from './iptables.js';

export type IptBackend = 'nft' | 'legacy';

export interface Tools {
  backend: IptBackend;
  save4: string; save6: string; restore4: string; restore6: string;
  ipset: string;
}

function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, tool))) return true;
  return false;
}

export function toolsFor(backend: IptBackend): Tools {
  const pick = (variant: string, plain: string): string => (onPath(variant) ? variant : plain);
  return {
    backend,
    save4: pick(`iptables-${backend}-save`, 'iptables-save'),
    save6: pick(`ip6tables-${backend}-save`, 'ip6tables-save'),
    restore4: pick(`iptables-${backend}-restore`, 'iptables-restore'),
    restore6: pick(`ip6tables-${backend}-restore`, 'ip6tables-restore'),
    ipset: 'ipset',
  };
}

/** number of rules plus non-ACCEPT policies: "does this backend hold anything" */
async function weight(tool: string): Promise<number> {
  if (!onPath(tool)) return -1;
  const r = await run(tool, []);
  if (r.code !== 0) return -1;
  let w = 0;
  for (const t of parseSave(r.stdout).values()) {
    for (const c of t.chains.values()) {
      w += c.rules.length;
      if (c.policy && c.policy !== 'ACCEPT') w++;
      if (c.name.startsWith('CW-')) w += 1000;
    }
  }
  return w;
}

export interface Detection { backend: IptBackend; reason: string }

/** Detect: the variant that already holds rules (cellwall's first), else what `iptables -V` says. */
export async function detectBackend(): Promise<Detection> {
  const [nft, legacy] = await Promise.all([weight('iptables-nft-save'), weight('iptables-legacy-save')]);
  if (nft > 0 && nft >= legacy) return { backend: 'nft', reason: 'iptables-nft holds the rules' };
  if (legacy > 0) return { backend: 'legacy', reason: 'iptables-legacy holds the rules' };
  const v = await run('iptables', ['-V']).catch(() => null);
  if (v && /nf_tables/.test(v.stdout)) return { backend: 'nft', reason: '`iptables -V` says nf_tables' };
  if (v && /legacy/.test(v.stdout)) return { backend: 'legacy', reason: '`iptables -V` says legacy' };
  if (nft >= 0) return { backend: 'nft', reason: 'iptables-nft is installed' };
  if (legacy >= 0) return { backend: 'legacy', reason: 'iptables-legacy is installed' };
  throw new CellwallError('no iptables found in PATH (need iptables-nft or iptables-legacy, and ipset)');
}

export const BACKEND_FILE = 'backend';

/**
 * The backend for this host: an explicit choice, else the pinned one from the
 * state dir, else detection (the caller pins it after a successful apply).
 */
export async function resolveBackend(stateDir: string, explicit?: string): Promise<Detection & { pinned: boolean }> {
  if (explicit && explicit !== 'auto') {
    if (explicit !== 'nft' && explicit !== 'legacy') throw new CellwallError(`--iptables: expected nft, legacy or auto, got "${explicit}"`);
    return { backend: explicit, reason: 'chosen with --iptables', pinned: false };
  }
  try {
    const b = (await readFile(join(stateDir, BACKEND_FILE), 'utf8')).trim();
    if (b === 'nft' || b === 'legacy') return { backend: b, reason: `pinned in ${join(stateDir, BACKEND_FILE)}`, pinned: true };
  } catch { /* not pinned yet */ }
  return { ...(await detectBackend()), pinned: false };
}

/** Refuse clearly when ipset or kernel support is missing. */
export async function checkSupport(tools: Tools): Promise<void> {
  const r = await run(tools.ipset, ['list', '-n']);
  if (r.code !== 0) throw new CellwallError(`ipset cannot talk to the kernel (ip_set support missing?): ${r.stderr.trim()}`);
  for (const t of [tools.save4, tools.save6]) {
    const s = await run(t, ['-t', 'filter']);
    if (s.code !== 0) throw new CellwallError(`${t} -t filter failed (kernel support for the filter table missing?): ${s.stderr.trim()}`);
  }
}
