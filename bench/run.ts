/**
 * `npm run bench` entry (compiled to dist/bench/run.js).
 *
 *   node dist/bench/run.js [--name NAME] [--only aggregate,lookup,...] [--quick]
 *
 * Runs every suite on the same data in one process, prints the table
 * (ratio = peer time / cellwall time, > 1 means cellwall is faster) and writes
 * bench/results/<NAME>.json. Exit 1 when a suite failed or an output disagreed.
 */
import { cpus, hostname, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { loadCore } from './lib/core.js';
import { formatTable, type Row, writeResults } from './lib/report.js';
import { inProcess, type SuiteOptions, wholeProcess } from './suites/aggregate.js';
import { lookups } from './suites/lookup.js';

const SUITES = ['whole', 'inprocess', 'lookup'] as const;
type Suite = (typeof SUITES)[number];

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      name: { type: 'string' },
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(`usage: node dist/bench/run.js [--name NAME] [--only ${SUITES.join(',')}] [--quick]`);
    return 0;
  }
  const only = (values.only ? values.only.split(',') : [...SUITES]) as Suite[];
  for (const s of only) if (!SUITES.includes(s)) throw new Error(`unknown suite '${s}' (expected ${SUITES.join(', ')})`);
  const name = values.name ?? `issue2-${hostname()}`;
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
  const t0 = performance.now();
  for (const s of only) {
    try {
      if (s === 'whole') rows.push(...(await wholeProcess(opts)));
      if (s === 'inprocess') rows.push(...(await inProcess(opts)));
      if (s === 'lookup') rows.push(...(await lookups({ ...opts, queries: 100_000, peerBudgetMs: values.quick ? 1500 : 5000 })));
    } catch (e) {
      const err = e as Error;
      log(`suite ${s} failed: ${err.stack ?? err.message}`);
      failures.push({ suite: s, error: err.message });
    }
  }
  const totalS = (performance.now() - t0) / 1000;
  console.log(`\ncellwall benchmarks (${name}); ratio = peer/cellwall time, > 1 means cellwall is faster\n`);
  console.log(formatTable(rows));
  const path = writeResults(name, rows, {
    suites: only, failures, coreError, totalSeconds: +totalS.toFixed(1), loadavgAtStart: +load.toFixed(2),
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
