/**
 * `apply --watch SECONDS`: apply, then every SECONDS re-read the cell and
 * re-apply when a CW- chain, the FORWARD jump or a cw- set is missing or
 * altered (silk's pre-start wipes the filter table, other agents rewrite
 * FORWARD). Logs what it repaired. SIGTERM/SIGINT end it cleanly after the
 * apply in progress, if any. Reloads the input when its files change.
 */
import { applyPayload } from './index.js';
import { inputStamp, loadInput, type Input, type InputSpec } from './source.js';

export interface WatchOptions {
  stateDir: string;
  iptables?: string;
  lockTimeout: number;
  intervalSec: number;
  log: (line: string) => void;
  json: boolean;
  out: NodeJS.WritableStream;
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
    let input: Input = await loadInput(spec);
    let first = true;
    event('start', { interval: o.intervalSec, source: input.payload.source }, `watching ${input.payload.source} every ${o.intervalSec}s (state dir ${o.stateDir})`);
    while (!stopping) {
      const stamp = await inputStamp(spec).catch(() => input.stamp);
      if (stamp !== input.stamp) {
        try {
          input = await loadInput(spec);
          event('reload', { source: input.payload.source }, `input changed: reloaded ${input.payload.source}`);
        } catch (e) {
          event('error', { error: (e as Error).message }, `input changed but cannot be loaded, keeping the previous one: ${(e as Error).message}`);
          input = { ...input, stamp };
        }
      }
      try {
        const r = await applyPayload(input.payload, {
          stateDir: o.stateDir, iptables: o.iptables, lockTimeout: Math.min(o.lockTimeout, o.intervalSec),
          policyHash: input.policyHash, segment: input.segment, log: o.log,
        });
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
