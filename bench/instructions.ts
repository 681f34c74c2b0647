/**
 * Instructions executed by the compile pipeline (bench/lib/pipeline.ts: load,
 * compile, iptables payloads, ipset packing, manifest; one thread), counted by
 * valgrind's cachegrind with V8 made deterministic (`--predictable`, fixed
 * hash and random seeds):
 *
 *   node dist/bench/instructions.js [--policy FILE] [--segment S] [--runs N] [DIR...]
 *
 * DIR: checkouts with a build (`dist/src`), default this one; the runs
 * alternate between them. Wall time on this machine varies by 15-25% from
 * run to run, too much to see a 2% change; these counts repeat within 0.02%
 * (at a tenth of CF scale and at full scale), and the payload bytes must
 * agree between the builds. Judge a change at full scale: a small change can
 * move a garbage collection across the end of a smaller run, and the count
 * jumps by the collection (-1.0% at a tenth, +0.05% at full scale, once).
 * Instructions are not time (cache misses, the second thread and the kernel
 * are not in them): a change that shows here still needs its wall-clock
 * figure. And V8 under --predictable collects garbage differently from a
 * real run, so GC flags are out of this tool's reach.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cfScaleFile, scaledShape, SEGMENT } from './cfscale.js';
import { median } from './lib/measure.js';

/** the compiled pipeline next to this file (dist/bench/lib) */
const PIPELINE = join(dirname(fileURLToPath(import.meta.url)), 'lib', 'pipeline.js');
export const V8_DETERMINISTIC = ['--predictable', '--hash-seed=1', '--random-seed=1', '--max-semi-space-size=64'];

export interface IrRun { dir: string; instructions: number; bytes: number }

/** One cachegrind run of the pipeline with the build in `dir`. */
export function countInstructions(dir: string, policy: string, segment: string, pipeline = PIPELINE): IrRun {
  const dist = join(resolve(dir), 'dist', 'src');
  if (!existsSync(join(dist, 'compile', 'index.js'))) throw new Error(`${dir}: no build (run npm run build there)`);
  const r = spawnSync('valgrind', ['--tool=cachegrind', '--cache-sim=no', '--cachegrind-out-file=/dev/null',
    process.execPath, ...V8_DETERMINISTIC, pipeline, dist, policy, segment], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`valgrind: ${r.error.message} (apt-get install valgrind)`);
  const m = /I\s+refs:\s+([\d,]+)/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`pipeline under valgrind failed (exit ${r.status}): ${r.stderr.split('\n').filter((l) => !l.startsWith('==')).join('\n').slice(-2000)}`);
  return { dir, instructions: Number(m[1].replace(/,/g, '')), bytes: JSON.parse(r.stdout.trim().split('\n').pop()!).bytes };
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      policy: { type: 'string' }, segment: { type: 'string', default: SEGMENT }, runs: { type: 'string', default: '2' },
      tenth: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: node dist/bench/instructions.js [--policy FILE] [--segment S] [--runs N] [--tenth] [DIR...]  (DIR: a checkout with a build; default .)');
    return 0;
  }
  const policy = values.policy ?? (values.tenth ? cfScaleFile(42, scaledShape(10), 'tenth') : cfScaleFile());
  const dirs = positionals.length ? positionals : ['.'];
  const runs = Math.max(1, Number(values.runs));
  const got = new Map<string, IrRun[]>(dirs.map((d) => [d, []]));
  for (let i = 0; i < runs; i++) {
    for (const d of dirs) {
      const r = countInstructions(d, policy, values.segment!);
      got.get(d)!.push(r);
      console.error(`run ${i + 1}/${runs} ${d}: ${r.instructions.toLocaleString('en')} instructions`);
    }
  }
  const bytes = new Set([...got.values()].flat().map((r) => r.bytes));
  const first = median(got.get(dirs[0])!.map((r) => r.instructions));
  console.log(`policy ${policy}, segment ${values.segment}, ${runs} run(s) each`);
  for (const d of dirs) {
    const xs = got.get(d)!.map((r) => r.instructions);
    const m = median(xs);
    const spread = xs.length > 1 ? ` spread ${(((Math.max(...xs) - Math.min(...xs)) / m) * 100).toFixed(2)}%` : '';
    console.log(`${d.padEnd(30)} ${(m / 1e9).toFixed(3)} G instructions (median)${spread}  ${(m / first).toFixed(4)}x of ${dirs[0]}`);
  }
  if (bytes.size > 1) {
    console.log(`WRONG OUTPUT: the builds rendered different byte counts (${[...bytes].join(', ')})`);
    return 1;
  }
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main().then((c) => { process.exitCode = c; }, (e: Error) => { console.error(e.message); process.exitCode = 1; });
}
