/**
 * `diff POLICY --live --backend ebpf`: the maps of the generation the last
 * `apply --backend ebpf` installed (named in the state dir's manifest), read
 * back with `bpftool map dump -j`, against the maps compiled from POLICY (or
 * a `compile --backend ebpf --out` folder) plus the dynamic members recorded
 * in the state dir.
 *
 * Class ids are numbering only, so the semantic comparison names each class
 * by its prefixes: source and destination classes present on one side only,
 * and verdict rows (source class, destination class, protocol, port or icmp
 * type/code prefix) whose verdict differs. The text part lists every entry
 * decoded (prefix -> class, class . class . proto . ports -> verdict).
 */
import type { CliContext } from '../cli/main.js';
import { CellwallError } from '../errors.js';
import type { MapContents, MapEntry } from '../ebpf/maps.js';
import { MAP_NAMES, VERDICT_PORT_BIT } from '../ebpf/program.js';
import type { DiffCliOptions } from './cli.js';
import { diffLines, formatHunks, type TextHunk } from './text.js';

const PROTO_NAME: Record<number, string> = { 6: 'tcp', 17: 'udp', 1: 'icmp', 58: 'icmpv6' };
const VERDICT_NAME: Record<number, string> = { 0: 'untouched', 1: 'deny', 2: 'allow' };

function addrText(b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i));
  // longest run of zero groups (length > 1) becomes ::
  let best = -1, len = 0;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > len && j - i > 1) { best = i; len = j - i; }
    i = j === i ? i + 1 : j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + len))}`;
}

const prefixText = (e: MapEntry): string => `${addrText(e.key.subarray(4))}/${e.key.readUInt32LE(0)}`;
const classOf = (e: MapEntry): number => e.value.readUInt16BE(0);

interface VerdictRow { src: number; dst: number; what: string; verdict: string }

function verdictRow(e: MapEntry): VerdictRow {
  const len = e.key.readUInt32LE(0);
  const d = e.key.subarray(4);
  const src = d.readUInt16BE(0), dst = d.readUInt16BE(2);
  const verdict = VERDICT_NAME[e.value.readUInt32LE(0)] ?? `value ${e.value.readUInt32LE(0)}`;
  if (len <= 32) return { src, dst, what: 'other protocols', verdict };
  const proto = PROTO_NAME[d[4]] ?? `proto ${d[4]}`;
  if (len <= VERDICT_PORT_BIT) return { src, dst, what: `${proto} any`, verdict };
  const bits = len - VERDICT_PORT_BIT;
  const from = d.readUInt16BE(6), to = from + (1 << (16 - bits)) - 1;
  if (d[4] === 1 || d[4] === 58) {
    const t = (x: number) => `${x >> 8}/${x & 0xff}`;
    return { src, dst, what: `${proto} type/code ${from === to ? t(from) : `${t(from)}-${t(to)}`}`, verdict };
  }
  return { src, dst, what: `${proto} ${from === to ? from : `${from}-${to}`}`, verdict };
}

/** class id -> its prefixes (v4 then v6), sorted */
function classes(c: MapContents, maps: string[]): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const name of maps) {
    for (const e of c.maps[name] ?? []) {
      const id = classOf(e);
      let l = out.get(id);
      if (!l) out.set(id, (l = []));
      l.push(prefixText(e));
    }
  }
  for (const l of out.values()) l.sort();
  return out;
}

const label = (prefixes: string[] | undefined): string => {
  if (!prefixes) return '(no prefixes)';
  return prefixes.length <= 3 ? prefixes.join(',') : `${prefixes.slice(0, 3).join(',')} (+${prefixes.length - 3} more)`;
};

export interface EbpfChange {
  kind: 'source-class' | 'destination-class' | 'verdict';
  /** compiled: only in the compiled maps; live: only in the live maps; both: verdict differs */
  side: 'compiled' | 'live' | 'both';
  text: string;
}

/** semantic differences between two map contents, independent of class numbering */
export function diffMapContents(compiled: MapContents, live: MapContents): EbpfChange[] {
  const sides = [compiled, live].map((c) => {
    const src = classes(c, [MAP_NAMES.src4, MAP_NAMES.src6]);
    const dst = classes(c, [MAP_NAMES.dst4, MAP_NAMES.dst6]);
    const srcName = (id: number) => src.get(id)?.join(',') ?? `#${id}`;
    const dstName = (id: number) => dst.get(id)?.join(',') ?? `#${id}`;
    const rows = new Map<string, { row: VerdictRow; s: string; d: string; sk: string; dk: string }>();
    for (const e of c.maps[MAP_NAMES.verdict] ?? []) {
      const row = verdictRow(e);
      const sk = srcName(row.src), dk = dstName(row.dst);
      rows.set(`${sk}|${dk}|${row.what}`, { row, s: src.has(row.src) ? label(src.get(row.src)) : `#${row.src} (no prefixes)`, d: label(dst.get(row.dst)), sk, dk });
    }
    return { srcs: new Map([...src.values()].map((p) => [p.join(','), p])), dsts: new Map([...dst.values()].map((p) => [p.join(','), p])), rows };
  });
  const [a, b] = sides;
  const out: EbpfChange[] = [];
  // rows of a class the other side does not have: counted under that class, not listed one by one
  const orphans = new Map<string, number>();
  const onlyIn = (x: Map<string, string[]>, y: Map<string, string[]>) => [...x.keys()].filter((k) => !y.has(k)).sort();
  for (const k of [...new Set([...a.rows.keys(), ...b.rows.keys()])].sort()) {
    const x = a.rows.get(k), y = b.rows.get(k);
    if (x && y && x.row.verdict === y.row.verdict) continue;
    const r = (x ?? y)!;
    const other = x ? b : a;
    const side = x && y ? 'both' : x ? 'compiled' : 'live';
    if (side !== 'both' && (!other.srcs.has(r.sk) || !other.dsts.has(r.dk))) {
      const key = `${side}|${!other.srcs.has(r.sk) ? `source class ${r.s}` : `destination class ${r.d}`}`;
      orphans.set(key, (orphans.get(key) ?? 0) + 1);
      continue;
    }
    out.push({ kind: 'verdict', side, text: `${r.s} -> ${r.d} ${r.row.what}: compiled ${x?.row.verdict ?? '(no row)'}, live ${y?.row.verdict ?? '(no row)'}` });
  }
  const rowsOf = (side: string, what: string) => { const n = orphans.get(`${side}|${what}`) ?? 0; orphans.delete(`${side}|${what}`); return n ? ` (with ${n} verdict row${n === 1 ? '' : 's'})` : ''; };
  const classChanges: EbpfChange[] = [];
  for (const [kind, key] of [['source-class', 'srcs'], ['destination-class', 'dsts']] as const) {
    const what = (p: string[] | undefined) => `${kind.replace('-', ' ')} ${label(p)}`;
    for (const k of onlyIn(a[key], b[key])) classChanges.push({ kind, side: 'compiled', text: `${what(a[key].get(k))}: only in the compiled maps${rowsOf('compiled', what(a[key].get(k)))}` });
    for (const k of onlyIn(b[key], a[key])) classChanges.push({ kind, side: 'live', text: `${what(b[key].get(k))}: only in the live maps${rowsOf('live', what(b[key].get(k)))}` });
  }
  // rows of a class id with no prefixes at all (unreachable)
  for (const [k, n] of orphans) {
    const [side, what] = k.split('|');
    classChanges.push({ kind: what.startsWith('source') ? 'source-class' : 'destination-class', side: side as 'compiled' | 'live', text: `${what}: ${n} verdict row${n === 1 ? '' : 's'} only in the ${side} maps` });
  }
  out.unshift(...classChanges);
  return out;
}

/** every entry decoded, one line each, sorted per map (the text part of the diff) */
export function mapLines(c: MapContents): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const name of [MAP_NAMES.src4, MAP_NAMES.dst4, MAP_NAMES.src6, MAP_NAMES.dst6]) {
    out[name] = (c.maps[name] ?? []).map((e) => `${prefixText(e)} class ${classOf(e)}`).sort();
  }
  out[MAP_NAMES.verdict] = (c.maps[MAP_NAMES.verdict] ?? []).map((e) => { const r = verdictRow(e); return `${r.src} ${r.dst} ${r.what} ${r.verdict}`; }).sort();
  return out;
}

const SHOW = 40;

export async function runDiffEbpf(oldPath: string, o: DiffCliOptions, ctx: CliContext): Promise<number> {
  if (!o.live) throw new CellwallError('--backend ebpf: only with --live (policies and bundles are compared without a backend)');
  const [{ stat }, { stateDirOf, manifestPath, readJson }, ebpf, { readMaps, contentsHash, generation }, { readMembers, hostExec }] = await Promise.all([
    import('node:fs/promises'), import('../apply/statedir.js'), import('../apply/ebpf.js'), import('../ebpf/load.js'), import('../state/ebpf.js'),
  ]);
  const stateDir = stateDirOf(o.stateDir);
  const m = await readJson<import('../apply/ebpf.js').EbpfManifest>(manifestPath(stateDir));
  if (!m || m.backend !== ebpf.EBPF_BACKEND) {
    throw new CellwallError(`nothing was applied with --backend ebpf on this cell (no eBPF manifest in ${stateDir}; give --state-dir if apply used another one)`);
  }
  const isDir = (await stat(oldPath)).isDirectory();
  const segment = o.segment ?? m.segment ?? undefined;
  if (!isDir && !segment) throw new CellwallError('--segment is required');
  const input = await ebpf.loadEbpfInput(isDir ? { payload: oldPath, segment } : { policy: oldPath, segment });
  const compiled = await ebpf.wantedContents(input, await readMembers(stateDir));
  const g = generation(m.root, m.generation);
  let live: MapContents;
  try { live = await readMaps(hostExec, g); } catch (e) {
    throw new CellwallError(`cannot read the live maps of generation ${m.generation} under ${m.root} (removed, or another bpffs?): ${(e as Error).message.split('\n')[0]}`);
  }
  const sameBytes = contentsHash(compiled) === contentsHash(live);
  const changes = sameBytes ? [] : diffMapContents(compiled, live);
  const seg = input.segment ?? '(bundle)';
  let text: Record<string, TextHunk[]> | undefined;
  if (o.text) {
    const [x, y] = [mapLines(compiled), mapLines(live)];
    text = Object.fromEntries(Object.keys(x).map((n) => [n, diffLines(x[n], y[n])]));
  }
  const equal = changes.length === 0;
  const liveLabel = `live:${m.generation}`;
  if (o.json) {
    ctx.stdout.write(JSON.stringify({ equal, old: oldPath, new: liveLabel, segments: [{ segment: seg, equal, sameBytes, changes, ...(text ? { text } : {}) }] }, null, 2) + '\n');
  } else {
    ctx.stdout.write(`segment ${seg}: ${equal ? 'semantically equal' : `${changes.length} change${changes.length === 1 ? '' : 's'}`}${equal && !sameBytes ? ' (class numbering differs)' : ''}\n`);
    for (const c of changes.slice(0, SHOW)) ctx.stdout.write(`  ${c.text}\n`);
    if (changes.length > SHOW) ctx.stdout.write(`  ... and ${changes.length - SHOW} more (--json lists all)\n`);
    if (text) for (const [name, hunks] of Object.entries(text)) ctx.stdout.write(formatHunks(name, oldPath, liveLabel, hunks));
  }
  return equal ? 0 : 2;
}
