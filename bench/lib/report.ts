/**
 * Result rows, the printed table and the JSON results file.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../data/geoip.js';
import { machineInfo } from './measure.js';

export interface Figure {
  /** what was measured, e.g. 'cellwall cidr aggregate' */
  name: string;
  /** a throughput in ops/s is higher-is-better; times, counts and sizes are lower-is-better */
  value: number;
  unit: 'ms' | 'ops/s' | 'count' | 'bytes';
  /** extra detail kept in the JSON (runs, counts, tool ...) */
  detail?: Record<string, unknown>;
}

export interface Row {
  suite: string;
  task: string;
  cellwall: Figure | null;
  peer: Figure | null;
  /** peer / cellwall for times, counts and sizes (cellwall / peer for ops/s): > 1 means cellwall is better */
  ratio: number | null;
  /** minimum ratio the tracker issue asks for, when it sets one */
  target: number | null;
  /** outputs were compared and agree (false rows never count as wins) */
  agree: boolean | null;
  note?: string;
}

export function ratioOf(cellwall: Figure | null, peer: Figure | null): number | null {
  if (!cellwall || !peer || !(cellwall.value > 0) || !(peer.value > 0)) return null;
  return cellwall.unit === 'ops/s' ? cellwall.value / peer.value : peer.value / cellwall.value;
}

export function row(r: Omit<Row, 'ratio'>): Row {
  return { ...r, ratio: r.agree === false ? null : ratioOf(r.cellwall, r.peer) };
}

export function verdict(r: Row): string {
  if (r.agree === false) return 'WRONG OUTPUT';
  if (r.target === null) return '';
  if (r.ratio === null) return 'n/a';
  return r.ratio >= r.target ? 'met' : 'MISSED';
}

function fmtFigure(f: Figure | null): string {
  if (!f) return '-';
  if (f.unit === 'count') return f.value.toLocaleString('en-US');
  if (f.unit === 'bytes') return f.value >= 2 ** 20 ? `${(f.value / 2 ** 20).toFixed(1)} MiB` : `${(f.value / 1024).toFixed(1)} KiB`;
  if (f.unit === 'ms') return f.value >= 1000 ? `${(f.value / 1000).toFixed(2)} s` : f.value >= 1 ? `${f.value.toFixed(1)} ms` : `${(f.value * 1000).toFixed(0)} µs`;
  if (f.value >= 1e6) return `${(f.value / 1e6).toFixed(2)} M/s`;
  if (f.value >= 1e3) return `${(f.value / 1e3).toFixed(1)} k/s`;
  return `${f.value.toFixed(0)} /s`;
}

/** two decimals, or two significant digits below 0.1 (a first packet 400x slower is 0.0025x, not 0.00x) */
function fmtRatio(r: number): string {
  return r >= 0.1 ? `${r.toFixed(2)}x` : `${r.toPrecision(2)}x`;
}

export function formatTable(rows: Row[]): string {
  const head = ['task', 'cellwall', 'peer', 'peer figure', 'ratio', 'target', 'verdict'];
  const body = rows.map((r) => [
    r.task,
    fmtFigure(r.cellwall),
    r.peer?.name ?? '-',
    fmtFigure(r.peer),
    r.ratio === null ? '-' : fmtRatio(r.ratio),
    r.target === null ? '-' : `>= ${r.target}x`,
    verdict(r) + (r.note ? ` (${r.note.length > 70 ? `${r.note.slice(0, 67)}...` : r.note})` : ''),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

/** Write bench/results/<name>.json and return its path. */
export function writeResults(name: string, rows: Row[], extra: Record<string, unknown>): string {
  const dir = join(repoRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.json`);
  const doc = {
    name,
    date: new Date().toISOString(),
    machine: machineInfo(),
    ...extra,
    rows: rows.map((r) => ({ ...r, verdict: verdict(r) })),
  };
  writeFileSync(path, JSON.stringify(doc, null, 2) + '\n');
  return path;
}
