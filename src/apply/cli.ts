/**
 * `cellwall apply` behind the thin command file: input loading, output
 * (text or --json), exit codes, and --watch.
 */
import type { CliContext } from '../cli/main.js';
import { CellwallError } from '../errors.js';
import { applyPayload, type ApplyResult } from './index.js';
import { loadInput, type InputSpec } from './source.js';
import { stateDirOf } from './statedir.js';
import { watch } from './watch.js';

export interface ApplyCommand extends InputSpec {
  dryRun?: boolean;
  watch?: string;
  iptables?: string;
  stateDir?: string;
  lockTimeout: number;
  json?: boolean;
  /** iptables (default), nft or ebpf */
  backend?: string;
  /** ebpf: bpffs root, device globs (comma-separated), fill path */
  bpffs?: string;
  devices?: string;
  fill?: string;
}

export async function runApplyCommand(o: ApplyCommand, ctx: CliContext): Promise<number> {
  const stateDir = stateDirOf(o.stateDir);
  const log = (line: string): void => { ctx.stderr.write(`cellwall: ${line}\n`); };
  if (o.watch !== undefined) {
    const secs = Number(o.watch);
    if (!Number.isFinite(secs) || secs <= 0) throw new CellwallError(`--watch: expected a number of seconds > 0, got "${o.watch}"`);
    if (o.dryRun) throw new CellwallError('--watch and --dry-run do not go together');
    const ebpf = o.backend === 'ebpf' ? await ebpfTarget(o) : undefined;
    return await watch(o, { stateDir, iptables: o.iptables, lockTimeout: o.lockTimeout, intervalSec: secs, log, json: !!o.json, out: ctx.stdout, backend: o.backend, ebpf });
  }
  if (o.backend === 'nft') return await runNftApply(o, ctx, stateDir, log);
  if (o.backend === 'ebpf') {
    const { applyEbpf, loadEbpfInput } = await import('./ebpf.js');
    const r = await applyEbpf(await loadEbpfInput(o), { stateDir, dryRun: o.dryRun, lockTimeout: o.lockTimeout, log, ...(await ebpfTarget(o)) });
    report(r, o.json ?? false, ctx);
    return r.dryRun && r.changed ? 2 : 0;
  }
  if (typeof process.getuid === 'function' && process.getuid() !== 0 && !o.dryRun) {
    log('warning: not running as root; iptables and ipset will most likely refuse');
  }
  const input = await loadInput(o);
  const r = await applyPayload(input.payload, {
    stateDir, iptables: o.iptables, dryRun: o.dryRun, lockTimeout: o.lockTimeout,
    policyHash: input.policyHash, segment: input.segment, log,
  });
  report(r, o.json ?? false, ctx);
  if (r.dryRun) return r.changed ? 2 : 0;
  return 0;
}

/** --bpffs, --devices, --fill (defaults in src/state/ebpf.ts) */
async function ebpfTarget(o: ApplyCommand): Promise<{ root: string; devices: string[]; fill: 'syscall' | 'bpftool' }> {
  const { DEFAULT_BPFFS_ROOT, DEFAULT_DEVICES, parseDeviceGlobs } = await import('../state/ebpf.js');
  const { resolve } = await import('node:path');
  return {
    root: resolve(o.bpffs ?? DEFAULT_BPFFS_ROOT),
    devices: o.devices !== undefined ? parseDeviceGlobs(o.devices) : DEFAULT_DEVICES,
    fill: o.fill === 'bpftool' ? 'bpftool' : 'syscall',
  };
}

async function runNftApply(o: ApplyCommand, ctx: CliContext, stateDir: string, log: (line: string) => void): Promise<number> {
  const { applyNft, loadNftInput } = await import('./nft.js');
  const r = await applyNft(await loadNftInput(o), { stateDir, dryRun: o.dryRun, lockTimeout: o.lockTimeout, log });
  report(r, o.json ?? false, ctx);
  return r.dryRun && r.changed ? 2 : 0;
}

/** what report() prints: an iptables or an nft apply result */
type Reportable = Pick<ApplyResult, 'changed' | 'dryRun' | 'backend' | 'backendReason' | 'recovered' | 'warnings' | 'planText' | 'ms'> & { plan: unknown; hashes: unknown };

export function report(r: Reportable, json: boolean, ctx: CliContext): void {
  if (json) {
    ctx.stdout.write(JSON.stringify({
      changed: r.changed, dryRun: r.dryRun, backend: r.backend, backendReason: r.backendReason, hashes: r.hashes,
      recovered: r.recovered, warnings: r.warnings, plan: r.plan, ms: r.ms,
    }, null, 2) + '\n');
    return;
  }
  for (const w of r.warnings) ctx.stderr.write(`cellwall: warning: ${w}\n`);
  ctx.stdout.write(`backend: ${r.backend} (${r.backendReason})\n`);
  if (r.recovered) ctx.stdout.write(`${r.recovered}\n`);
  if (!r.changed) { ctx.stdout.write('no changes\n'); return; }
  ctx.stdout.write(r.planText);
  ctx.stdout.write(r.dryRun ? 'dry run: nothing written\n' : `applied and verified in ${Math.round(r.ms.total)} ms\n`);
}
