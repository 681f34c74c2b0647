/**
 * Issue 7: eBPF LPM trie fill, the apply path's BPF_MAP_UPDATE_BATCH (python3
 * ctypes, src/ebpf/load.ts fillMapsSyscall) and its fallback `bpftool batch
 * file` (fillMaps), against `ipset restore` of the same prefixes into one
 * hash:net set: 100k and 500k geoip v4 prefixes, each in a fresh cwt-*
 * namespace (maps in a private bpffs under a temp dir, unmounted after).
 * The fill times include starting python3 / bpftool and reading their input.
 * Every path's entry count is checked (agree).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { geoipCidrs, parseIPv4 } from '../data/geoip.js';
import { median } from '../lib/measure.js';
import { kernelMissing, timedLoad, withNamespace } from '../lib/netns.js';
import { type Row, row } from '../lib/report.js';
import { fillMaps, fillMapsSyscall, generation, loadObject, type Exec } from '../../src/ebpf/load.js';
import type { MapContents } from '../../src/ebpf/maps.js';
import { buildObject, MAP_NAMES } from '../../src/ebpf/program.js';
import { key4 } from './backends.js';

export interface EbpfFillOptions { log: (msg: string) => void; quick: boolean; budgetMs?: number }

function nsExec(ns: string, timeoutMs: number): Exec {
  return async (argv) => {
    const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 30 });
    if (r.error || r.status !== 0) throw new Error(`${argv[0]} ${argv[1] ?? ''}: ${(r.stderr || String(r.error)).trim().slice(0, 300)}`);
    return r.stdout;
  };
}

const entriesIn = async (exec: Exec, map: string): Promise<number> => (JSON.parse(await exec(['bpftool', '-j', 'map', 'dump', 'pinned', map])) as unknown[]).length;

export async function ebpfFill(o: EbpfFillOptions): Promise<{ rows: Row[]; detail: unknown }> {
  const missing = kernelMissing() ?? (['bpftool', 'python3'].some((t) => spawnSync('which', [t]).status !== 0) ? 'bpftool or python3 not found' : null);
  if (missing) throw new Error(`ebpf-fill: ${missing}`);
  const budget = o.budgetMs ?? 300_000;
  const runs = o.quick ? 1 : 3;
  const tmp = mkdtempSync(join(tmpdir(), 'cwt-bench-fill-'));
  const bpffs = join(tmp, 'bpf');
  mkdirSync(bpffs);
  execFileSync('mount', ['-t', 'bpf', 'bpf', bpffs], { stdio: 'pipe' });
  const rows: Row[] = [];
  const detail: Record<string, unknown> = {};
  try {
    const obj = join(tmp, 'cellwall.bpf.o');
    writeFileSync(obj, buildObject());
    const all = geoipCidrs(4);
    for (const n of [100_000, 500_000]) {
      const cidrs = all.slice(0, n);
      const contents: MapContents = {
        maps: { [MAP_NAMES.dst4]: cidrs.map((c) => { const [a, l] = c.split('/'); const v = Buffer.alloc(4); v.writeUInt32LE(1); return { key: key4(parseIPv4(a), Number(l ?? 32)), value: v }; }) },
        stats: { srcClasses: 0, dstClasses: 1, verdicts: 0, evaluations: 0 },
      };
      const ipsetFile = join(tmp, `p${n}.ipset`);
      writeFileSync(ipsetFile, [`create p hash:net family inet hashsize 65536 maxelem ${Math.max(65536, n * 2)}`, ...cidrs.map((c) => `add p ${c}`), ''].join('\n'));
      const times: Record<'syscall' | 'bpftool' | 'ipset', number[]> = { syscall: [], bpftool: [], ipset: [] };
      const counts: Record<string, number> = {};
      for (let r = 0; r < runs; r++) {
        for (const method of ['syscall', 'bpftool'] as const) {
          await withNamespace('fill', async (ns) => {
            const exec = nsExec(ns, budget);
            const g = generation(bpffs, `${method}-${n}-${r}`);
            await loadObject(exec, obj, g);
            const t0 = process.hrtime.bigint();
            await (method === 'syscall' ? fillMapsSyscall : fillMaps)(exec, contents, g, tmp);
            times[method].push(Number(process.hrtime.bigint() - t0) / 1e6);
            counts[method] = await entriesIn(exec, join(g.maps, MAP_NAMES.dst4));
            rmSync(g.dir, { recursive: true, force: true });
          });
        }
        await withNamespace('ips', async (ns) => {
          const s = timedLoad(ns, ['ipset', 'restore', '-f', ipsetFile], budget);
          if (!s.ok) throw new Error(`ipset restore: ${s.error}`);
          times.ipset.push(s.ms);
          counts.ipset = Number(/Number of entries: (\d+)/.exec(await nsExec(ns, budget)(['ipset', 'list', '-t', 'p']))?.[1] ?? -1);
        });
      }
      const m = { syscall: median(times.syscall), bpftool: median(times.bpftool), ipset: median(times.ipset) };
      o.log(`  ${n} prefixes: BPF_MAP_UPDATE_BATCH ${m.syscall.toFixed(0)} ms, bpftool batch ${m.bpftool.toFixed(0)} ms, ipset restore ${m.ipset.toFixed(0)} ms (entries ${JSON.stringify(counts)})`);
      detail[`n${n}`] = { runs, ms: times, median: m, entries: counts };
      const agree = counts.syscall === n && counts.bpftool === n && counts.ipset === n;
      const note = `median of ${runs}`;
      rows.push(row({
        suite: 'ebpf-fill', task: `eBPF LPM fill ${n / 1000}k v4 prefixes (batch syscall vs ipset)`,
        cellwall: { name: 'BPF_MAP_UPDATE_BATCH (python3)', value: m.syscall, unit: 'ms' },
        peer: { name: 'ipset restore hash:net', value: m.ipset, unit: 'ms' }, target: null, agree, note,
      }));
      rows.push(row({
        suite: 'ebpf-fill', task: `eBPF LPM fill ${n / 1000}k v4 prefixes (batch syscall vs bpftool)`,
        cellwall: { name: 'BPF_MAP_UPDATE_BATCH (python3)', value: m.syscall, unit: 'ms' },
        peer: { name: 'bpftool batch file', value: m.bpftool, unit: 'ms' }, target: null, agree, note,
      }));
    }
  } finally {
    try { execFileSync('umount', [bpffs], { stdio: 'ignore' }); } catch { /* not mounted */ }
    rmSync(tmp, { recursive: true, force: true });
  }
  return { rows, detail };
}
