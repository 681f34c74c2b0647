/**
 * `apply --watch SECONDS`: apply, then every SECONDS re-read the cell and
 * re-apply when a CW- chain, the FORWARD jump or a cw- set is missing or
 * altered (silk's pre-start wipes the filter table, other agents rewrite
 * FORWARD). Logs what it repaired. SIGTERM/SIGINT end it cleanly after the
 * apply in progress, if any. Reloads the input when its files change.
 */
import { applyPayload } from './index.js';
import { inputStamp, loadInput, type InputSpec } from './source.js';

export interface WatchOptions {
  stateDir: string;
  iptables?: string;
  lockTimeout: number;
  intervalSec: number;
  log: (line: string) => void;
  json: boolean;
  out: NodeJS.WritableStream;
  /** iptables (default), nft or ebpf */
  backend?: string;
  /** ebpf: where to pin, which devices, fill path */
  ebpf?: { root: string; devices: string[]; fill: 'syscall' | 'bpftool' };
}

interface Reconciler {
  stamp: string;
  source: string;
  apply(o: WatchOptions): Promise<{ changed: boolean; recovered: string | null; backend: string; hashes: unknown; planText: string; ms: { total: number } }>;
}

/** load the input for the watched backend, bound to that backend's apply */
async function load(spec: InputSpec, o: WatchOptions): Promise<Reconciler> {
  if (o.backend === 'nft') {
    const { applyNft, loadNftInput } = await import('./nft.js');
    const input = await loadNftInput(spec);
    return { stamp: input.stamp, source: input.source, apply: (w) => applyNft(input, { stateDir: w.stateDir, lockTimeout: Math.min(w.lockTimeout, w.intervalSec), log: w.log }) };
  }
  if (o.backend === 'ebpf') {
    const { applyEbpf, loadEbpfInput } = await import('./ebpf.js');
    const input = await loadEbpfInput(spec);
    return { stamp: input.stamp, source: input.source, apply: (w) => applyEbpf(input, { stateDir: w.stateDir, lockTimeout: Math.min(w.lockTimeout, w.intervalSec), log: w.log, ...w.ebpf! }) };
  }
  const input = await loadInput(spec);
  return {
    stamp: input.stamp, source: input.payload.source,
    apply: (w) => applyPayload(input.payload, {
      stateDir: w.stateDir, iptables: w.iptables, lockTimeout: Math.min(w.lockTimeout, w.intervalSec),
      policyHash: input.policyHash, segment: input.segment, log: w.log,
    }),
  };
}

export async function watch(spec: InputSpec, o: WatchOptions): Promise<number> {
  let stopping = false;
  let wake: (() => void) | null = null;
  const stop = (sig: string): void => {
    if (!stopping) o.log(`${sig}: stopping the watcher`);
    stopping = true;
    wake?.();
  };
  const onTerm = (): void => stop('SIGTERM');
  const onInt = (): void => stop('SIGINT');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  const event = (kind: string, detail: Record<string, unknown>, text: string): void => {
    if (o.json) o.out.write(JSON.stringify({ time: new Date().toISOString(), event: kind, ...detail }) + '\n');
    else o.log(text);
  };
  try {
    let input: Reconciler = await load(spec, o);
    let first = true;
    event('start', { interval: o.intervalSec, source: input.source }, `watching ${input.source} every ${o.intervalSec}s (state dir ${o.stateDir})`);
    while (!stopping) {
      const stamp = await inputStamp(spec).catch(() => input.stamp);
      if (stamp !== input.stamp) {
        try {
          input = await load(spec, o);
          event('reload', { source: input.source }, `input changed: reloaded ${input.source}`);
        } catch (e) {
          event('error', { error: (e as Error).message }, `input changed but cannot be loaded, keeping the previous one: ${(e as Error).message}`);
          input = { ...input, stamp };
        }
      }
      try {
        const r = await input.apply(o);
        if (r.recovered) event('recovered', { detail: r.recovered }, r.recovered);
        if (first) event('applied', { changed: r.changed, backend: r.backend, hashes: r.hashes }, r.changed ? `applied (${r.backend}):\n${r.planText.trimEnd()}` : `in sync (${r.backend})`);
        else if (r.changed) event('repaired', { plan: r.planText.trimEnd().split('\n'), ms: Math.round(r.ms.total) }, `drift repaired in ${Math.round(r.ms.total)} ms:\n${r.planText.trimEnd()}`);
        first = false;
      } catch (e) {
        event('error', { error: (e as Error).message }, `reconcile failed, retrying in ${o.intervalSec}s: ${(e as Error).message}`);
      }
      if (stopping) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, o.intervalSec * 1000);
        wake = () => { clearTimeout(t); resolve(); };
      });
      wake = null;
    }
    event('stop', {}, 'watcher stopped');
    return 0;
  } finally {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
  }
}
