/**
 * `npm run bench` entry (compiled to dist/bench/run.js).
 *
 *   node dist/bench/run.js [--name NAME] [--only whole,inprocess,lookup,cfscale] [--quick]
 *                          [--scale full,tenth] [--load-budget SECONDS]
 *
 * Default: the issue 2 suites (whole, inprocess, lookup), all in one process on
 * the same data. `--only cfscale` runs the issue 3 CF-scale suite (minutes; root
 * for the kernel load part). Prints the table (ratio = peer / cellwall, > 1
 * means cellwall is better) and writes bench/results/<NAME>.json. Exit 1 when
 * a suite failed or an output disagreed.
 */
import { cpus, hostname, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { loadCore } from './lib/core.js';
import { formatTable, type Row, writeResults } from './lib/report.js';
import { inProcess, type SuiteOptions, wholeProcess } from './suites/aggregate.js';
import { backends } from './suites/backends.js';
import { cfscale } from './suites/cfscale.js';
import { ebpfFill } from './suites/ebpf-fill.js';
import { lookups } from './suites/lookup.js';

const SUITES = ['whole', 'inprocess', 'lookup', 'cfscale', 'backends', 'ebpf-fill'] as const;
const DEFAULT_SUITES: Suite[] = ['whole', 'inprocess', 'lookup'];
type Suite = (typeof SUITES)[number];

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      scale: { type: 'string', default: 'tenth,full' },
      'load-budget': { type: 'string', default: '120' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(`usage: node dist/bench/run.js [--name NAME] [--only ${SUITES.join(',')}] [--quick] [--scale full,tenth] [--load-budget SECONDS]`);
    return 0;
  }
  const only = (values.only ? values.only.split(',') : DEFAULT_SUITES) as Suite[];
  for (const s of only) if (!SUITES.includes(s)) throw new Error(`unknown suite '${s}' (expected ${SUITES.join(', ')})`);
  const scales = values.scale.split(',') as Array<'full' | 'tenth'>;
  for (const s of scales) if (s !== 'full' && s !== 'tenth') throw new Error(`unknown scale '${s}' (expected full, tenth)`);
  const loadBudgetMs = Number(values['load-budget']) * 1000;
  if (!(loadBudgetMs > 0)) throw new Error(`--load-budget: expected a number of seconds, got '${values['load-budget']}'`);
  const name = values.name ?? `${only.includes('backends') ? 'backends' : only.includes('cfscale') ? 'issue3' : 'issue2'}-${hostname()}`;
  const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

  const load = loadavg()[0];
  if (load > cpus().length) log(`warning: load average ${load.toFixed(1)} on ${cpus().length} cores: figures will be noisy`);
  const { core, error: coreError } = await loadCore();
  if (coreError) log(`cellwall core: ${coreError} (peers still run)`);
  const opts: SuiteOptions = {
    runs: values.quick ? 5 : 7, iterations: 5, core, coreError, log,
  };
  const rows: Row[] = [];
  const failures: Array<{ suite: string; error: string }> = [];
  const extra: Record<string, unknown> = {};
  const t0 = performance.now();
  for (const s of only) {
    try {
      if (s === 'whole') rows.push(...(await wholeProcess(opts)));
      if (s === 'inprocess') rows.push(...(await inProcess(opts)));
      if (s === 'lookup') rows.push(...(await lookups({ ...opts, queries: 100_000, peerBudgetMs: values.quick ? 1500 : 5000 })));
      if (s === 'cfscale') {
        const r = await cfscale({ seed: 42, scales, loadBudgetMs, log });
        rows.push(...r.rows);
        extra.cfscale = r.detail;
      }
      if (s === 'ebpf-fill') { const r = await ebpfFill({ log, quick: values.quick }); rows.push(...r.rows); extra.ebpfFill = r.detail; }
      if (s === 'backends') {
        const r = await backends({ core, log, quick: values.quick });
        rows.push(...r.rows);
        extra.backends = r.detail;
        for (const error of r.errors) failures.push({ suite: s, error });
      }
    } catch (e) {
      const err = e as Error;
      log(`suite ${s} failed: ${err.stack ?? err.message}`);
      failures.push({ suite: s, error: err.message });
    }
  }
  const totalS = (performance.now() - t0) / 1000;
  console.log(`\ncellwall benchmarks (${name}); ratio = peer/cellwall (cellwall/peer for throughput), > 1 means cellwall is better\n`);
  console.log(formatTable(rows));
  const path = writeResults(name, rows, {
    suites: only, failures, coreError, ...extra, totalSeconds: +totalS.toFixed(1), loadavgAtStart: +load.toFixed(2),
  });
  console.log(`\nresults: ${path} (${totalS.toFixed(0)} s)`);
  const wrong = rows.filter((r) => r.agree === false);
  if (failures.length || wrong.length || coreError) {
    console.log(`\n${failures.length} suite failure(s), ${wrong.length} disagreeing output(s)${coreError ? `, ${coreError}` : ''}`);
    return 1;
  }
  return 0;
}

main().then((code) => { process.exitCode = code; }, (e: Error) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exitCode = 1;
});
