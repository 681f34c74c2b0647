/**
 * Issue 2, aggregation: cellwall vs peers on the geoip sets.
 *  - whole process: `cellwall cidr aggregate FILE` vs iprange (v4, >= 5 runs each)
 *    and vs python3 ipaddress.collapse_addresses (v6, python run once);
 *  - in process: core AddrSet / parseLines vs cidr-tools mergeCidr (v4, v6).
 * Outputs are compared before any time is reported.
 */
import { readFileSync } from 'node:fs';
import { geoipCidrFile, geoipCidrs, type GeoFamily } from '../data/geoip.js';
import { compareCidrLists, outputLines, type Agreement } from '../lib/cidr.js';
import type { Core } from '../lib/core.js';
import { type Command, runOnce, timeCommands, timeFn } from '../lib/measure.js';
import { type Figure, type Row, row } from '../lib/report.js';

export interface SuiteOptions {
  /** whole-process runs per command (>= 5) */
  runs: number;
  /** tinybench minimum iterations for in-process tasks */
  iterations: number;
  core: Core | null;
  coreError: string | null;
  log: (msg: string) => void;
}

const PYTHON_COLLAPSE = [
  'import ipaddress, sys',
  'nets = [ipaddress.ip_network(l.strip()) for l in open(sys.argv[1]) if l.strip()]',
  "sys.stdout.write(''.join(str(n) + '\\n' for n in ipaddress.collapse_addresses(nets)))",
].join('\n');

// the whole-process peer in the issue's own baseline: node reading the file and calling mergeCidr
const CIDR_TOOLS_SCRIPT = [
  "import { mergeCidr } from 'cidr-tools';",
  "import { readFileSync } from 'node:fs';",
  "const list = readFileSync(process.argv[1], 'utf8').split('\\n').filter(Boolean);",
  "process.stdout.write(mergeCidr(list).join('\\n') + '\\n');",
].join('\n');

function cidrToolsCmd(file: string): Command {
  return { name: 'cidr-tools (node, whole process)', argv: [process.execPath, '--input-type=module', '-e', CIDR_TOOLS_SCRIPT, file] };
}

/** cellwall vs cidr-tools, both as whole processes on the same file; outputs compared first */
function versusCidrTools(o: SuiteOptions, family: GeoFamily, file: string, cw: Command, cwLines: string[] | null): Row {
  const peerCmd = cidrToolsCmd(file);
  const peerLines = outputLines(runOnce(peerCmd).stdout);
  const agree = cwLines ? compareCidrLists(cwLines, peerLines, family) : null;
  o.log(`  cidr-tools ${peerLines.length} CIDRs (v${family})`);
  const runs = Math.max(3, Math.min(o.runs, 5));
  const timed = Object.fromEntries(timeCommands(agree?.agree ? [cw, peerCmd] : [peerCmd], runs).map((t) => [t.name, t]));
  const fig = (name: string, n: number): Figure | null => (timed[name]
    ? { name, value: timed[name].medianMs, unit: 'ms', detail: { ...timed[name], outputCidrs: n } } : null);
  return row({
    suite: 'aggregate', task: `aggregate v${family} whole process vs cidr-tools`,
    cellwall: fig(cw.name, cwLines?.length ?? 0), peer: fig(peerCmd.name, peerLines.length),
    target: 10, agree: agree ? agree.agree : null,
    note: agree ? agreementNote(agree, ['cellwall', 'cidr-tools']) : 'cellwall failed',
  });
}

function cellwallCmd(file: string): Command {
  return { name: 'cellwall cidr aggregate', argv: [process.execPath, 'bin/cellwall.js', 'cidr', 'aggregate', file] };
}

function agreementNote(a: Agreement, who: [string, string]): string | undefined {
  if (a.agree) return undefined;
  const d = a.firstDifference;
  return `${who[0]} ${a.counts[0]} vs ${who[1]} ${a.counts[1]} CIDRs; first difference at #${d?.index}: ${d?.a} vs ${d?.b}`;
}

/** Run cellwall once to capture its output; null (with the reason) when it fails. */
function tryCellwall(cmd: Command): { lines: string[] | null; error: string | null } {
  try {
    return { lines: outputLines(runOnce(cmd).stdout), error: null };
  } catch (e) {
    return { lines: null, error: (e as Error).message };
  }
}

export async function wholeProcess(o: SuiteOptions): Promise<Row[]> {
  const rows: Row[] = [];

  // v4: cellwall vs iprange, both timed the same way
  const f4 = geoipCidrFile(4);
  const cw4 = cellwallCmd(f4);
  const ipr: Command = { name: 'iprange', argv: ['iprange', f4] };
  o.log(`whole-process v4: checking outputs (${f4})`);
  const iprLines = outputLines(runOnce(ipr).stdout);
  const cw4out = tryCellwall(cw4);
  const agree4 = cw4out.lines ? compareCidrLists(cw4out.lines, iprLines, 4) : null;
  o.log(`  iprange ${iprLines.length} CIDRs; cellwall ${cw4out.lines ? cw4out.lines.length : cw4out.error}`);
  const timed4 = timeCommands(agree4?.agree ? [cw4, ipr] : [ipr], o.runs);
  const t4 = Object.fromEntries(timed4.map((t) => [t.name, t]));
  const figure = (name: string, counts: number): Figure | null => (t4[name]
    ? { name, value: t4[name].medianMs, unit: 'ms', detail: { ...t4[name], outputCidrs: counts } }
    : null);
  rows.push(row({
    suite: 'aggregate', task: 'aggregate v4 whole process (562k CIDRs)',
    cellwall: figure(cw4.name, cw4out.lines?.length ?? 0), peer: figure('iprange', iprLines.length),
    target: 1.0, agree: agree4 ? agree4.agree : null,
    note: cw4out.error ?? (agree4 ? agreementNote(agree4, ['cellwall', 'iprange']) : undefined),
  }));
  rows.push(versusCidrTools(o, 4, f4, cw4, cw4out.lines));

  // v6: cellwall (>= 5 runs) vs python (one run; it takes ~15-20 s)
  const f6 = geoipCidrFile(6);
  const cw6 = cellwallCmd(f6);
  o.log('whole-process v6: python3 ipaddress.collapse_addresses (one run)');
  const py = runOnce({ name: 'python3 collapse_addresses', argv: ['python3', '-c', PYTHON_COLLAPSE, f6] });
  const pyLines = outputLines(py.stdout);
  const cw6out = tryCellwall(cw6);
  const agree6 = cw6out.lines ? compareCidrLists(cw6out.lines, pyLines, 6) : null;
  o.log(`  python ${pyLines.length} CIDRs in ${(py.ms / 1000).toFixed(1)} s; cellwall ${cw6out.lines ? cw6out.lines.length : cw6out.error}`);
  let cwFig6: Figure | null = null;
  if (agree6?.agree) {
    const [t] = timeCommands([cw6], o.runs);
    cwFig6 = { name: cw6.name, value: t.medianMs, unit: 'ms', detail: { ...t, outputCidrs: cw6out.lines!.length } };
  }
  rows.push(row({
    suite: 'aggregate', task: 'aggregate v6 whole process (595k CIDRs)',
    cellwall: cwFig6,
    peer: { name: 'python3 ipaddress', value: py.ms, unit: 'ms', detail: { runs: 1, outputCidrs: pyLines.length } },
    target: null, agree: agree6 ? agree6.agree : null,
    note: cw6out.error ?? (agree6 ? agreementNote(agree6, ['cellwall', 'python']) : undefined),
  }));
  rows.push(versusCidrTools(o, 6, f6, cw6, cw6out.lines));
  return rows;
}

export async function inProcess(o: SuiteOptions): Promise<Row[]> {
  const { mergeCidr } = await import('cidr-tools');
  const rows: Row[] = [];
  for (const family of [4, 6] as GeoFamily[]) {
    const list = geoipCidrs(family);
    const buf = readFileSync(geoipCidrFile(family));
    o.log(`in-process v${family}: cidr-tools mergeCidr on ${list.length} CIDRs`);
    const peerOut = mergeCidr(list) as string[];
    const peerT = await timeFn(`cidr-tools mergeCidr v${family}`, () => mergeCidr(list), o.iterations);
    const peer: Figure = {
      name: 'cidr-tools mergeCidr', value: peerT.medianMs, unit: 'ms', detail: { ...peerT, outputCidrs: peerOut.length },
    };
    const task = `aggregate v${family} in process`;
    const core = o.core;
    if (!core) {
      rows.push(row({ suite: 'aggregate', task, cellwall: null, peer, target: 10, agree: null, note: o.coreError ?? 'no core' }));
      continue;
    }
    // strings in, strings out, like mergeCidr
    const viaOf = () => core.AddrSet.of(list).toCidrs(family);
    const viaLines = () => core.parseLines(buf).set.toCidrs(family);
    for (const [label, fn] of [['AddrSet.of(strings).toCidrs', viaOf], ['parseLines(file).toCidrs', viaLines]] as const) {
      const out = fn();
      const a = compareCidrLists(out, peerOut, family);
      let cellwall: Figure | null = null;
      if (a.agree) {
        const t = await timeFn(`cellwall ${label} v${family}`, fn, Math.max(o.iterations, 10), 1000);
        cellwall = { name: `cellwall ${label}`, value: t.medianMs, unit: 'ms', detail: { ...t, outputCidrs: out.length } };
      }
      rows.push(row({
        suite: 'aggregate', task: `${task}: ${label}`, cellwall, peer,
        target: 10, agree: a.agree, note: agreementNote(a, ['cellwall', 'cidr-tools']),
      }));
    }
  }
  return rows;
}
