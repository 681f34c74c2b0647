/**
 * Helpers of the `--backend ebpf` CLI kernel tests: the real CLI run inside a
 * topology's cell namespace (so `ip link` and tc see only the cell's devices),
 * with generations pinned in a private bpffs (BpfEnv) and its own state dir.
 * The program is attached to the container-facing `to-app` only.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../kernel/cli.js';
import type { ExecResult, Topology } from '../kernel/netns.js';

export const BIN = join(ROOT, 'bin', 'cellwall.js');
export const DEVICE = 'to-app';

export interface EbpfCell { t: Topology; root: string; stateDir: string }

/** `cellwall ARGS` in the cell namespace, with extra environment */
export function cli(c: EbpfCell, args: string[], env: Record<string, string> = {}): Promise<ExecResult> {
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return c.t.exec(c.t.cell, ['env', ...envArgs, process.execPath, BIN, ...args], 90_000);
}

/** `cellwall apply --backend ebpf` with the cell's bpffs root, device and state dir */
export function applyIn(c: EbpfCell, args: string[], env: Record<string, string> = {}): Promise<ExecResult> {
  return cli(c, ['apply', '--backend', 'ebpf', '--bpffs', c.root, '--devices', DEVICE, '--state-dir', c.stateDir, ...args], env);
}

/** generation directories pinned under the root */
export function generations(c: EbpfCell): string[] {
  try { return readdirSync(c.root).sort(); } catch { return []; }
}

/** program id of our filter on the device, or null */
export async function attachedId(c: EbpfCell, dev = DEVICE): Promise<number | null> {
  const r = await c.t.exec(c.t.cell, ['tc', '-j', 'filter', 'show', 'dev', dev, 'ingress']);
  const fs = JSON.parse(r.stdout.trim() || '[]') as Array<{ options?: { prog?: { id?: number } } }>;
  return fs.find((f) => f.options?.prog?.id !== undefined)?.options?.prog?.id ?? null;
}
