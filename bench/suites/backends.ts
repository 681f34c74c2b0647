/**
 * Issues 6 and 7: kernel backends, all inside cwt-* namespaces (root).
 *
 * 6. nft vs ipset: load time and memory of the aggregated geoip sets (core
 *    aggregation of bench/data/geoip.ts) as nft interval sets (`nft -f`) vs
 *    `ipset restore` hash:net.
 * 7. eBPF: LPM trie fill time (the project's fill path, src/ebpf/load.ts
 *    fillMaps = `bpftool batch`) for 100k / 500k prefixes vs `ipset restore`
 *    hash:net; per-packet cost as the number of distinct prefix lengths grows:
 *    `bpftool prog run ... repeat N` on the project's classifier (whole program:
 *    3 LPM lookups + parsing) vs ipset hash:net via iptables `-m set` rules
 *    traversed by locally sent UDP packets (differential: R rules minus 0 rules).
 *
 * 6b. the CF-scale policy (bench/cfscale.ts, `cfScaleFile()`): `cellwall compile
 *    --backend nft` once, then in fresh namespaces `nft -f ruleset.nft` against
 *    `ipset restore` + `iptables-restore --noflush` + `ip6tables-restore
 *    --noflush` of the same compile; load time and kernel memory. Full scale by
 *    default (a tenth with --quick; CELLWALL_BENCH_CFSCALE=full|tenth|off
 *    overrides), each backend bounded by CELLWALL_BENCH_CFSCALE_BUDGET seconds
 *    (default 1200): past it the load is killed and the scale reached is
 *    reported (ipsets loaded of all).
 *
 * The eBPF side uses a private bpffs mounted under a temp dir (unmounted after).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CF_SCALE, SEGMENT, cfScaleFile, scaledShape } from '../cfscale.js';
import { geoipCidrs, mulberry32, parseIPv4, repoRoot } from '../data/geoip.js';
import type { Core } from '../lib/core.js';
import { median } from '../lib/measure.js';
import { kernelMissing, type LoadStep, timedLoad, withNamespace } from '../lib/netns.js';
import { type Figure, type Row, row } from '../lib/report.js';
import { fillMaps, generation, loadObject } from '../../src/ebpf/load.js';
import type { MapContents, MapEntry } from '../../src/ebpf/maps.js';
import { buildObject, MAP_NAMES, TC_ACT_SHOT } from '../../src/ebpf/program.js';

export interface BackendsOptions {
  core: Core | null;
  log: (msg: string) => void;
  quick: boolean;
}

const ms = (name: string, value: number, detail?: Record<string, unknown>): Figure => ({ name, value, unit: 'ms', detail });
const bytes = (name: string, value: number, detail?: Record<string, unknown>): Figure => ({ name, value, unit: 'bytes', detail });

function nsRun(ns: string, argv: string[], timeoutMs = 120_000): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 30 });
  if (r.error || r.status !== 0) throw new Error(`${argv.join(' ')}: ${(r.stderr || String(r.error)).trim().slice(0, 300)}`);
  return r.stdout;
}

/** ipset restore text: one hash:net set per family entry list */
function ipsetRestore(sets: Array<{ name: string; family: 4 | 6; cidrs: string[] }>): string {
  const out: string[] = [];
  for (const s of sets) {
    out.push(`create ${s.name} hash:net family ${s.family === 4 ? 'inet' : 'inet6'} hashsize 65536 maxelem ${Math.max(65536, s.cidrs.length * 2)}`);
    for (const c of s.cidrs) out.push(`add ${s.name} ${c}`);
  }
  return out.join('\n') + '\n';
}

/** "Size in memory" summed over the sets of ns */
function ipsetMemory(ns: string): number {
  return [...nsRun(ns, ['ipset', 'list', '-t']).matchAll(/Size in memory: (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
}

/** nft set memory when nft prints it (`# size N` / `memory: N`, newer nft), else null */
function nftMemory(listing: string): number | null {
  const ms_ = [...listing.matchAll(/(?:size|memory)\D{0,12}(\d+)\s*(?:bytes|B)\b/gi)];
  return ms_.length ? ms_.reduce((a, m) => a + Number(m[1]), 0) : null;
}

/** number of elements of the set in `nft -j list set` output */
function nftElements(json: string): number {
  const doc = JSON.parse(json) as { nftables: Array<{ set?: { elem?: unknown[] } }> };
  return doc.nftables.reduce((a, o) => a + (o.set?.elem?.length ?? 0), 0);
}

/** kernel SUnreclaim + VmallocUsed from /proc/meminfo, bytes (set elements live there) */
function kernelMem(): number {
  const m = readFileSync('/proc/meminfo', 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(m)?.[1] ?? 0);
  return (kb('SUnreclaim') + kb('VmallocUsed')) * 1024;
}

/** let the previous namespace's teardown (asynchronous in the kernel) free its memory before a meminfo baseline */
const settle = () => new Promise((r) => setTimeout(r, 1500));

const countLines = (s: string, re: RegExp) => (s.match(re) ?? []).length;

/** Issue 6: geoip-scale sets, nft interval vs ipset hash:net */
async function geoipSets(o: BackendsOptions, budgetMs: number): Promise<{ rows: Row[]; detail: unknown }> {
  if (!o.core) throw new Error('backends: the cellwall core is needed to aggregate the geoip sets');
  const agg = { 4: o.core.AddrSet.of(geoipCidrs(4)).toCidrs(4), 6: o.core.AddrSet.of(geoipCidrs(6)).toCidrs(6) };
  o.log(`backends: aggregated geoip ${agg[4].length} v4 + ${agg[6].length} v6 CIDRs`);
  const dir = mkdtempSync(join(tmpdir(), 'cwt-bench-'));
  try {
    const nftFile = join(dir, 'geo.nft');
    const elems = (xs: string[]) => xs.join(',\n      ');
    writeFileSync(nftFile, `table inet cwbench {\n  set geo4 {\n    type ipv4_addr; flags interval;\n    elements = { ${elems(agg[4])} }\n  }\n`
      + `  set geo6 {\n    type ipv6_addr; flags interval;\n    elements = { ${elems(agg[6])} }\n  }\n}\n`);
    const ipsetFile = join(dir, 'geo.ipset');
    writeFileSync(ipsetFile, ipsetRestore([{ name: 'geo4', family: 4, cidrs: agg[4] }, { name: 'geo6', family: 6, cidrs: agg[6] }]));
    const runs = o.quick ? 3 : 5;
    const nftRuns: number[] = [];
    const ipsetRuns: number[] = [];
    const nftDelta: number[] = [];
    const ipsetDelta: number[] = [];
    let nftMem: number | null = null;
    let ipMem = 0;
    let nftCount = 0;
    let ipCount = 0;
    for (let i = 0; i < runs; i++) {
      await settle();
      await withNamespace('nft', (ns) => {
        const m0 = kernelMem();
        const s = timedLoad(ns, ['nft', '-f', nftFile], budgetMs);
        if (!s.ok) throw new Error(`nft -f: ${s.error}`);
        nftDelta.push(kernelMem() - m0);
        nftRuns.push(s.ms);
        if (i === 0) {
          const l4 = nsRun(ns, ['nft', 'list', 'set', 'inet', 'cwbench', 'geo4']);
          const l6 = nsRun(ns, ['nft', 'list', 'set', 'inet', 'cwbench', 'geo6']);
          nftMem = nftMemory(l4 + l6);
          nftCount = ['geo4', 'geo6'].reduce((a, set) => a + nftElements(nsRun(ns, ['nft', '-j', 'list', 'set', 'inet', 'cwbench', set])), 0);
        }
      });
      await settle();
      await withNamespace('ips', (ns) => {
        const m0 = kernelMem();
        const s = timedLoad(ns, ['ipset', 'restore', '-f', ipsetFile], budgetMs);
        if (!s.ok) throw new Error(`ipset restore: ${s.error}`);
        ipsetDelta.push(kernelMem() - m0);
        ipsetRuns.push(s.ms);
        if (i === 0) {
          ipMem = ipsetMemory(ns);
          ipCount = [...nsRun(ns, ['ipset', 'list', '-t']).matchAll(/Number of entries: (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0);
        }
      });
    }
    const want = agg[4].length + agg[6].length;
    o.log(`  nft load ${median(nftRuns).toFixed(0)} ms (${nftCount} elements listed), ipset ${median(ipsetRuns).toFixed(0)} ms (${ipCount} entries); memory nft ${nftMem} ipset ${ipMem}`);
    const note = `${agg[4].length} v4 + ${agg[6].length} v6 CIDRs; nft side is cellwall's nft backend form`;
    const rows = [
      row({
        suite: 'backends', task: 'geoip sets load: nft interval vs ipset hash:net',
        cellwall: ms('nft -f (interval sets)', median(nftRuns), { runsMs: nftRuns, elementsListed: nftCount }),
        peer: ms('ipset restore hash:net', median(ipsetRuns), { runsMs: ipsetRuns, entries: ipCount }),
        target: null, agree: ipCount === want, note,
      }),
    ];
    if (nftMem !== null) {
      rows.push(row({
        suite: 'backends', task: 'geoip sets memory: nft vs ipset', cellwall: bytes('nft list set size', nftMem),
        peer: bytes('ipset list -t Size in memory', ipMem), target: null, agree: null,
      }));
    }
    // like for like on both sides: kernel unreclaimable slab + vmalloc growth during the load (rough: machine-wide)
    rows.push(row({
      suite: 'backends', task: 'geoip sets kernel memory (meminfo delta)',
      cellwall: bytes('nft: SUnreclaim+VmallocUsed delta', median(nftDelta), { runsBytes: nftDelta }),
      peer: bytes('ipset: SUnreclaim+VmallocUsed delta', median(ipsetDelta), { runsBytes: ipsetDelta, ipsetListSizeInMemory: ipMem }),
      target: null, agree: null, note: `machine-wide /proc/meminfo delta, median of ${runs}; ipset list -t says ${ipMem} B`,
    }));
    return { rows, detail: { nftKernelDeltaBytes: nftDelta, ipsetKernelDeltaBytes: ipsetDelta, v4: agg[4].length, v6: agg[6].length, nftRunsMs: nftRuns, ipsetRunsMs: ipsetRuns, nftMemoryBytes: nftMem, nftMemoryNote: nftMem === null ? `nft ${nftVersion()} does not print set memory` : undefined, ipsetMemoryBytes: ipMem, nftElementsListed: nftCount, ipsetEntries: ipCount } };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Issue 6: the CF-scale policy, nft vs iptables + ipset, both from one `compile --backend nft --out` */
export async function cfScaleLoad(o: BackendsOptions): Promise<{ rows: Row[]; detail: unknown }> {
  const tag = (process.env.CELLWALL_BENCH_CFSCALE ?? (o.quick ? 'tenth' : 'full')) as 'full' | 'tenth';
  if (tag !== 'full' && tag !== 'tenth') throw new Error(`CELLWALL_BENCH_CFSCALE: expected full, tenth or off, got ${tag}`);
  const budgetMs = Number(process.env.CELLWALL_BENCH_CFSCALE_BUDGET ?? 1200) * 1000;
  const root = repoRoot();
  const file = cfScaleFile(42, tag === 'full' ? CF_SCALE : scaledShape(10), tag);
  const out = join(root, 'bench', '.data', `cfscale-${tag}-42-nft-out`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const t0 = performance.now();
  const c = spawnSync(process.execPath, [join(root, 'bin', 'cellwall.js'), 'compile', file, '--segment', SEGMENT, '--backend', 'nft', '--out', out], { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (c.status !== 0) throw new Error(`compile --backend nft: ${(c.stderr || String(c.error)).slice(0, 300)}`);
  const compileMs = performance.now() - t0;
  const script = readFileSync(join(out, 'ruleset.nft'), 'utf8');
  const ipsetText = readFileSync(join(out, 'ipset.restore'), 'utf8');
  const counts = {
    nftSets: new Set([...script.matchAll(/^ {2}set (\S+) \{$/gm)].map((m) => m[1])).size, // filled sets are declared twice
    nftElements: countLines(script, /^ {6}\S.*,?$/gm),
    nftRules: countLines(script, / comment "/g) - countLines(script, /^ {4}comment "/gm),
    ipsets: countLines(ipsetText, /^create /gm),
    ipsetEntries: countLines(ipsetText, /^add /gm),
    bytes: { nft: script.length, ipset: ipsetText.length, iptables: statSync(join(out, 'iptables.v4')).size + statSync(join(out, 'iptables.v6')).size },
  };
  o.log(`backends cfscale ${tag}: compiled in ${(compileMs / 1000).toFixed(1)} s; ${JSON.stringify(counts)}`);
  await settle();
  const nft = await withNamespace('cfnft', (ns) => {
    const m0 = kernelMem();
    const s = timedLoad(ns, ['nft', '-f', join(out, 'ruleset.nft')], budgetMs);
    const delta = kernelMem() - m0;
    // no read-back: listing a table of this size takes nft minutes; `nft -f` exits 0 only when the whole transaction committed
    return { step: s, kernelDeltaBytes: delta };
  });
  o.log(`  nft -f: ${nft.step.ok ? `${(nft.step.ms / 1000).toFixed(1)} s` : nft.step.error}, kernel +${(nft.kernelDeltaBytes / 2 ** 20).toFixed(0)} MiB`);
  await settle();
  const ipt = await withNamespace('cfipt', (ns) => {
    const m0 = kernelMem();
    const steps: LoadStep[] = [timedLoad(ns, ['ipset', 'restore', '-f', join(out, 'ipset.restore')], budgetMs)];
    if (steps[0].ok) {
      for (const [tool, f] of [['iptables-restore', 'iptables.v4'], ['ip6tables-restore', 'iptables.v6']]) {
        steps.push(timedLoad(ns, [tool, '--noflush', join(out, f)], Math.max(1, Math.round(budgetMs - steps.reduce((a, x) => a + x.ms, 0)))));
      }
    }
    const delta = kernelMem() - m0;
    const listing = nsRun(ns, ['ipset', 'list', '-t'], 600_000);
    return {
      steps, kernelDeltaBytes: delta,
      setsLoaded: countLines(listing, /^Name: /gm),
      entriesLoaded: [...listing.matchAll(/Number of entries: (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0),
      ipsetMemoryBytes: [...listing.matchAll(/Size in memory: (\d+)/g)].reduce((a, m) => a + Number(m[1]), 0),
    };
  });
  const iptMs = ipt.steps.reduce((a, x) => a + x.ms, 0);
  const iptOk = ipt.steps.length === 3 && ipt.steps.every((x) => x.ok);
  o.log(`  ipset + iptables: ${ipt.steps.map((x) => `${x.command.split(' ')[0]} ${x.ok ? `${(x.ms / 1000).toFixed(1)} s` : x.error}`).join('; ')}; `
    + `${ipt.setsLoaded}/${counts.ipsets} sets, ipset memory ${(ipt.ipsetMemoryBytes / 2 ** 20).toFixed(0)} MiB, kernel +${(ipt.kernelDeltaBytes / 2 ** 20).toFixed(0)} MiB`);
  const label = `cfscale ${tag}`;
  const partial = iptOk ? '' : `; iptables+ipset stopped at ${ipt.setsLoaded}/${counts.ipsets} ipsets (${((100 * ipt.setsLoaded) / counts.ipsets).toFixed(0)}% of the sets) after ${(iptMs / 1000).toFixed(0)} s`;
  const rows = [
    row({
      suite: 'backends', task: `${label}: kernel load, nft vs iptables+ipset`,
      cellwall: nft.step.ok ? ms('nft -f ruleset.nft', nft.step.ms, { sets: counts.nftSets, elements: counts.nftElements }) : null,
      peer: iptOk ? ms('ipset restore + ip(6)tables-restore --noflush', iptMs, { steps: ipt.steps }) : null,
      target: null, agree: null, note: `same compile; ${counts.nftSets} nft sets / ${counts.ipsets} ipsets${partial}${nft.step.ok ? '' : `; nft: ${nft.step.error}`}`,
    }),
    row({
      suite: 'backends', task: `${label}: kernel memory (meminfo delta), nft vs iptables+ipset`,
      cellwall: bytes('nft: SUnreclaim+VmallocUsed delta', nft.kernelDeltaBytes),
      peer: bytes('ipset+iptables: SUnreclaim+VmallocUsed delta', ipt.kernelDeltaBytes, { ipsetListSizeInMemory: ipt.ipsetMemoryBytes }),
      target: null, agree: null, note: `machine-wide, one run; ipset list -t says ${ipt.ipsetMemoryBytes} B; nft ${nftVersion()} prints no set memory`,
    }),
  ];
  return { rows, detail: { tag, budgetMs, compileMs, counts, nft, ipt: { ...ipt, totalMs: iptMs, complete: iptOk } } };
}

function nftVersion(): string {
  const r = spawnSync('nft', ['--version'], { encoding: 'utf8' });
  return (r.stdout || '').trim();
}

/** LPM key for the project's v4 tries: u32 prefix length (host order), address (network order) */
export function key4(addr: number, len: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(len, 0);
  b.writeUInt32BE(addr >>> 0, 4);
  return b;
}
const val = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v, 0); return b; };
const fmt4 = (a: number) => [a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255].join('.');

/** 198.18.0.0/15 (benchmarking range): no generated prefix overlaps it, the per-packet queries go there */
export const MISS_NET = parseIPv4('198.18.0.0');

/** n distinct v4 prefixes whose lengths are drawn from `lens` (seeded) */
export function prefixesWithLengths(n: number, lens: number[], seed: number): Array<[number, number]> {
  const rnd = mulberry32(seed);
  const seen = new Set<string>();
  const out: Array<[number, number]> = [];
  for (let tries = 0; out.length < n && tries < n * 20; tries++) {
    const len = lens[Math.floor(rnd() * lens.length)];
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    const a = (Math.floor(rnd() * 2 ** 32) & mask) >>> 0;
    const top = Math.min(len, 15);
    if (top > 0 && (a >>> (32 - top)) === (MISS_NET >>> (32 - top))) continue; // keep 198.18.0.0/15 free
    const k = `${a}/${len}`;
    if (seen.has(k)) continue;
    seen.add(k);
    out.push([a, len]);
  }
  return out;
}

/** minimal Ethernet + IPv4 + UDP frame 10.0.0.1 -> dst */
export function udpFrame(dst: number): Buffer {
  const b = Buffer.alloc(14 + 20 + 8);
  b.writeUInt16BE(0x0800, 12);
  b.set([0x45, 0, 0, 28, 0, 1, 0x40, 0, 64, 17, 0, 0], 14);
  b.writeUInt32BE(parseIPv4('10.0.0.1'), 26);
  b.writeUInt32BE(dst >>> 0, 30);
  b.set([0x9c, 0x40, 0, 53, 0, 8, 0, 0], 34);
  return b;
}

class BpfScratch {
  readonly tmp = mkdtempSync(join(tmpdir(), 'cwt-bench-bpf-'));
  readonly bpffs = join(this.tmp, 'bpf');
  readonly obj = join(this.tmp, 'cellwall.bpf.o');
  constructor() {
    mkdirSync(this.bpffs);
    execFileSync('mount', ['-t', 'bpf', 'bpf', this.bpffs], { stdio: 'pipe' });
    writeFileSync(this.obj, buildObject());
  }
  cleanup(): void {
    try { execFileSync('umount', [this.bpffs], { stdio: 'ignore' }); } catch { /* not mounted */ }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

function contents(prefixes: Array<[number, number]>): MapContents {
  const dst: MapEntry[] = prefixes.map(([a, l]) => ({ key: key4(a, l), value: val(1) }));
  return { maps: { [MAP_NAMES.src4]: [{ key: key4(0, 0), value: val(1) }], [MAP_NAMES.dst4]: dst }, stats: { srcClasses: 1, dstClasses: 1, verdicts: 0, evaluations: 0 } };
}

/** Issue 7a: fill time of the LPM trie (bpftool batch) vs ipset restore of the same prefixes */
async function ebpfLoad(o: BackendsOptions, bpf: BpfScratch, budgetMs: number): Promise<{ rows: Row[]; detail: unknown }> {
  const all = geoipCidrs(4);
  const rows: Row[] = [];
  const detail: Record<string, unknown> = {};
  for (const n of [100_000, 500_000]) {
    const cidrs = all.slice(0, n);
    const prefixes = cidrs.map((c): [number, number] => { const [a, l] = c.split('/'); return [parseIPv4(a), Number(l ?? 32)]; });
    const ipsetFile = join(bpf.tmp, `p${n}.ipset`);
    writeFileSync(ipsetFile, ipsetRestore([{ name: 'p', family: 4, cidrs }]));
    const c = contents(prefixes);
    const fill = await withNamespace('bpf', async (ns) => {
      const exec = async (argv: string[]) => nsRun(ns, argv, budgetMs);
      const g = generation(bpf.bpffs, `fill${n}`);
      await loadObject(exec, bpf.obj, g);
      const t0 = process.hrtime.bigint();
      await fillMaps(exec, c, g, bpf.tmp);
      const t = Number(process.hrtime.bigint() - t0) / 1e6;
      const count = countLines(nsRun(ns, ['bpftool', 'map', 'dump', 'pinned', join(g.maps, MAP_NAMES.dst4)]), /^key:|"key"/gm);
      rmSync(g.dir, { recursive: true, force: true });
      return { ms: t, count };
    });
    const ips = await withNamespace('ips', (ns) => {
      const s = timedLoad(ns, ['ipset', 'restore', '-f', ipsetFile], budgetMs);
      if (!s.ok) throw new Error(`ipset restore: ${s.error}`);
      const count = Number(/Number of entries: (\d+)/.exec(nsRun(ns, ['ipset', 'list', '-t', 'p']))?.[1] ?? -1);
      const mem = ipsetMemory(ns);
      return { ms: s.ms, count, mem };
    });
    o.log(`  ${n} prefixes: bpftool batch ${fill.ms.toFixed(0)} ms (${fill.count} in map), ipset restore ${ips.ms.toFixed(0)} ms (${ips.count})`);
    detail[`n${n}`] = { bpftoolBatchMs: fill.ms, mapEntries: fill.count, ipsetRestoreMs: ips.ms, ipsetEntries: ips.count, ipsetMemoryBytes: ips.mem };
    rows.push(row({
      suite: 'backends', task: `eBPF LPM fill, ${n / 1000}k v4 prefixes`,
      cellwall: ms('bpftool batch (fillMaps)', fill.ms, { entries: fill.count }),
      peer: ms('ipset restore hash:net', ips.ms, { entries: ips.count }),
      target: null, agree: fill.count === n && ips.count === n, note: 'one run each',
    }));
  }
  return { rows, detail };
}

const LENGTH_SETS: number[][] = [
  [24],
  [16, 20, 24, 28],
  Array.from({ length: 16 }, (_, i) => 13 + i), // 13..28
  Array.from({ length: 24 }, (_, i) => 9 + i), // 9..32
];

/** Issue 7b: per-packet cost vs number of distinct prefix lengths */
async function perPacket(o: BackendsOptions, bpf: BpfScratch): Promise<{ rows: Row[]; detail: unknown }> {
  const n = 100_000;
  const repeat = o.quick ? 200_000 : 1_000_000;
  const rules = 32;
  const packets = o.quick ? 20_000 : 50_000;
  const rows: Row[] = [];
  const detail: unknown[] = [];
  for (const lens of LENGTH_SETS) {
    const prefixes = prefixesWithLengths(n, lens, 7 + lens.length);
    // miss addresses in 198.18.0.0/15, outside every prefix: both sides try every length
    const rnd = mulberry32(99);
    const dsts = Array.from({ length: 8 }, () => (MISS_NET + Math.floor(rnd() * 2 ** 17)) >>> 0);
    // eBPF: the classifier with dst4 filled, run on each miss frame
    const ebpfNs = await withNamespace('bpf', async (ns) => {
      const exec = async (argv: string[]) => nsRun(ns, argv, 300_000);
      const g = generation(bpf.bpffs, `pp${lens.length}`);
      await loadObject(exec, bpf.obj, g);
      await fillMaps(exec, contents(prefixes), g, bpf.tmp);
      const per: number[] = [];
      for (const d of dsts) {
        const f = join(bpf.tmp, 'pkt.bin');
        writeFileSync(f, udpFrame(d));
        const out = nsRun(ns, ['bpftool', 'prog', 'run', 'pinned', g.prog, 'data_in', f, 'repeat', String(repeat)]);
        const m = /duration \(average\): (\d+)ns/.exec(out);
        if (!m) throw new Error(`bpftool prog run: ${out}`);
        // source class found, destination looked up, no verdict entry: drop. Anything else took a shorter path.
        const rv = /Return value: (\d+)/.exec(out)?.[1];
        if (Number(rv) !== TC_ACT_SHOT) throw new Error(`bpftool prog run: return value ${rv}, expected ${TC_ACT_SHOT} (full classifier path)`);
        per.push(Number(m[1]));
      }
      rmSync(g.dir, { recursive: true, force: true });
      return per;
    });
    // ipset: `rules` x `-m set --match-set p dst -j DROP` in OUTPUT, UDP packets to the miss addresses via a dummy device
    const ipsetNs = await withNamespace('ips', (ns) => {
      writeFileSync(join(bpf.tmp, 'pp.ipset'), ipsetRestore([{ name: 'p', family: 4, cidrs: prefixes.map(([a, l]) => `${fmt4(a)}/${l}`) }]));
      nsRun(ns, ['ipset', 'restore', '-f', join(bpf.tmp, 'pp.ipset')]);
      // a veth pair with both ends in ns; a static neighbour so packets leave without ARP
      nsRun(ns, ['ip', 'link', 'add', 'cwv0', 'type', 'veth', 'peer', 'name', 'cwv1']);
      nsRun(ns, ['ip', 'addr', 'add', '10.0.0.1/24', 'dev', 'cwv0']);
      nsRun(ns, ['ip', 'link', 'set', 'cwv0', 'up']);
      nsRun(ns, ['ip', 'link', 'set', 'cwv1', 'up']);
      nsRun(ns, ['ip', 'neigh', 'add', '10.0.0.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'cwv0']);
      nsRun(ns, ['ip', 'route', 'add', '198.18.0.0/15', 'via', '10.0.0.2', 'dev', 'cwv0']);
      const sender = `const d=require('dgram').createSocket('udp4');const a=${JSON.stringify(dsts.map(fmt4))};const b=Buffer.alloc(8);`
        + `let i=0;const n=${packets};const t0=process.hrtime.bigint();`
        + `const go=()=>{if(i>=n){console.log(Number(process.hrtime.bigint()-t0));d.close();return;}d.send(b,53,a[i%a.length],(e)=>{if(e)throw e;i++;go();});};go();`;
      const timeSend = () => Number(nsRun(ns, ['timeout', '120', process.execPath, '-e', sender], 130_000).trim());
      const base: number[] = [];
      const withRules: number[] = [];
      for (let r = 0; r < 3; r++) {
        nsRun(ns, ['iptables', '-F', 'OUTPUT']);
        base.push(timeSend());
        const restore = `*filter\n${Array.from({ length: rules }, () => '-A OUTPUT -m set --match-set p dst -j DROP').join('\n')}\n`
          + '-A OUTPUT -d 198.18.0.0/15\nCOMMIT\n'; // a counting rule: every packet got past the set rules
        const rf = join(bpf.tmp, 'pp.rules');
        writeFileSync(rf, restore);
        nsRun(ns, ['iptables-restore', rf]);
        withRules.push(timeSend());
        // every packet missed the set (no rule matched) and went through all the rules to the chain policy
        const listing = nsRun(ns, ['iptables', '-L', 'OUTPUT', '-v', '-x', '-n']);
        const matched = listing.split('\n').filter((l) => /match-set p dst/.test(l)).map((l) => Number(l.trim().split(/\s+/)[0]));
        if (matched.length !== rules || matched.some((x) => x !== 0)) throw new Error(`ipset per-packet: rule match counters ${matched.join(',')}, expected ${rules} rules matching nothing`);
        const passed = Number(listing.split('\n').find((l) => /198\.18\.0\.0\/15/.test(l))?.trim().split(/\s+/)[0] ?? -1);
        if (passed < packets) throw new Error(`ipset per-packet: only ${passed} packets reached the end of OUTPUT, expected >= ${packets}`);
      }
      return { perLookupNs: (median(withRules) - median(base)) / (packets * rules), baseNs: median(base), withRulesNs: median(withRules) };
    });
    const bpfNs = median(ebpfNs);
    o.log(`  ${lens.length} prefix lengths: eBPF classifier ${bpfNs} ns/packet, ipset hash:net ${ipsetNs.perLookupNs.toFixed(0)} ns/lookup`);
    detail.push({ lengths: lens, prefixes: prefixes.length, ebpfNsPerPacket: ebpfNs, repeat, ipset: { ...ipsetNs, rules, packets } });
    rows.push(row({
      suite: 'backends', task: `per-packet, ${lens.length} prefix length(s), ${prefixes.length / 1000}k prefixes (miss)`,
      cellwall: { name: 'eBPF classifier (bpftool prog run)', value: 1e9 / bpfNs, unit: 'ops/s', detail: { nsPerPacket: ebpfNs } },
      peer: { name: 'ipset hash:net (iptables -m set, differential)', value: 1e9 / ipsetNs.perLookupNs, unit: 'ops/s', detail: { ...ipsetNs } },
      target: null, agree: null, note: 'eBPF: whole program (3 LPM lookups); ipset: one set lookup',
    }));
  }
  return { rows, detail };
}

/** Runs the three parts; a failing part is reported in `errors` and the others still run. */
export async function backends(o: BackendsOptions, budgetMs = 300_000): Promise<{ rows: Row[]; detail: unknown; errors: string[] }> {
  const missing = kernelMissing() ?? (['nft', 'bpftool'].some((t) => spawnSync('which', [t]).status !== 0) ? 'nft or bpftool not found' : null);
  if (missing) throw new Error(`backends: ${missing}`);
  const rows: Row[] = [];
  const detail: Record<string, unknown> = {};
  const errors: string[] = [];
  const part = async (name: string, fn: () => Promise<{ rows: Row[]; detail: unknown }>) => {
    try {
      const r = await fn();
      rows.push(...r.rows);
      detail[name] = r.detail;
    } catch (e) {
      const err = e as Error;
      o.log(`backends ${name} failed: ${err.stack ?? err.message}`);
      errors.push(`${name}: ${err.message}`);
    }
  };
  await part('geoip', () => geoipSets(o, budgetMs));
  if (process.env.CELLWALL_BENCH_CFSCALE !== 'off') await part('cfscale', () => cfScaleLoad(o));
  const bpf = new BpfScratch();
  try {
    await part('ebpfLoad', () => ebpfLoad(o, bpf, budgetMs));
    await part('perPacket', () => perPacket(o, bpf));
  } finally {
    bpf.cleanup();
  }
  return { rows, detail, errors };
}
