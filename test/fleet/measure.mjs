// Measurement (no assertions): wall time of `cellwall push` of the largest
// policy available (bench/cfscale.ts, CF scale, segment "shared") to 1 cell
// and to 24 cells with --max-in-flight 24; bytes per cell, compression.
// Needs root, a build (npm run build), and runs every ssh from a cwt-* namespace.
//   node test/fleet/measure.mjs [--entries N | --cfscale]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Fleet } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(ROOT, 'bin/cellwall.js');
// The CF-scale policy of bench/cfscale.ts (--cfscale) is the largest; when it
// does not compile here, a geoip policy (network of N IPv4 + N/5 IPv6 geoip
// CIDRs as an ASG destination, plus the examples' shape) is the fallback.
const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : d; };
const SEGMENT = 'shared';
let policy;
if (process.argv.includes('--cfscale')) {
  const { cfScaleFile } = await import(join(ROOT, 'dist/bench/cfscale.js'));
  policy = cfScaleFile();
} else {
  const { geoipCidrs } = await import(join(ROOT, 'dist/bench/data/geoip.js'));
  const n = Number(arg('--entries', '50000'));
  const v4 = geoipCidrs(4).slice(0, n), v6 = geoipCidrs(6).slice(0, Math.ceil(n / 5));
  policy = join(mkdtempSync(join(tmpdir(), 'cwt-fleet-policy-')), 'geo.json');
  writeFileSync(policy, JSON.stringify({
    version: 1, mode: 'tighten',
    networks: { overlay: ['10.255.0.0/16'], geo: [...v4, ...v6] },
    security_groups: {
      geo: [{ protocol: 'tcp', destination: 'geo', ports: '443' }, { protocol: 'udp', destination: 'geo', ports: '53,123' }],
      dns: [{ protocol: 'udp', destination: '0.0.0.0/0', ports: '53' }],
    },
    segments: { [SEGMENT]: { container_network: 'overlay', egress: 'open' } },
    bindings: [{ security_groups: ['geo', 'dns'], phase: ['running', 'staging'] }],
  }));
}
const out = mkdtempSync(join(tmpdir(), 'cwt-fleet-measure-'));
const bundles = join(out, 'bundles');
let t = Date.now();
execFileSync(process.execPath, [CLI, 'compile', policy, '--segment', SEGMENT, '--out', join(bundles, SEGMENT)], { stdio: 'pipe', maxBuffer: 1 << 28 });
const compileMs = Date.now() - t;
const files = ['ipset.restore', 'iptables.v4', 'iptables.v6'].map((f) => readFileSync(join(bundles, SEGMENT, f)));
const raw = files.reduce((n, b) => n + b.length, 0);
const gz = gzipSync(Buffer.concat(files), { level: 6 }).length;

const fleet = await new Fleet(24).start();
const results = { policy, policyBytes: statSync(policy).size, compileMs, bundleBytes: raw, bundleGzipBytes: gz };
try {
  const run = async (cells, extra = []) => {
    const inv = fleet.inventory(cells.map((i) => ({ i, segment: SEGMENT })));
    const t0 = Date.now();
    // GNU time: CPU of the push process and the ssh clients it waited for (not the
    // ControlPersist masters, which detach: they only encrypt what is sent)
    const r = await fleet.run('/usr/bin/time', ['-f', 'CW-TIME %U %S', 'node', CLI, 'push', policy, '--inventory', inv, '--bundles', bundles, '--json', '--max-in-flight', '24', '--canaries', '0', ...extra], { timeoutMs: 600_000 });
    const ms = Date.now() - t0;
    const rep = JSON.parse(r.stdout);
    const tm = /CW-TIME ([\d.]+) ([\d.]+)/.exec(r.stderr);
    return { ms, summary: rep.summary, bytesPerCell: rep.cells[0].bytesSent, compressed: rep.cells[0].compressed, cellMs: rep.cells.map((c) => c.durationMs),
      cellCpuMs: rep.cells.map((c) => c.cellCpuMs ?? 0), fastPath: rep.cells.filter((c) => c.fastPath).length,
      operatorCpuMs: tm ? Math.round((Number(tm[1]) + Number(tm[2])) * 1000) : null, pushProcessCpuMs: rep.cpuMs, bundles: rep.bundles };
  };
  results.one = await run([0]);
  results.oneAgainUnchanged = await run([0]);
  results.all24 = await run(Array.from({ length: 24 }, (_, i) => i));
  results.all24Unchanged = await run(Array.from({ length: 24 }, (_, i) => i));
  results.all24UnchangedFullCheck = await run(Array.from({ length: 24 }, (_, i) => i), ['--no-fast-path']);
  results.oneUncompressed = await run([1], ['--no-compress', '--no-fast-path']);
  const rules = fleet.inCell(0, 'iptables-save', ['-t', 'filter']).split('\n').filter((l) => l.startsWith('-A CW-')).length;
  const sets = fleet.inCell(0, 'ipset', ['list', '-n']).split('\n').filter((l) => l.startsWith('cw')).length;
  results.cell0 = { v4Rules: rules, sets };
} finally {
  fleet.stop();
  rmSync(out, { recursive: true, force: true });
  if (!process.argv.includes('--cfscale')) rmSync(dirname(policy), { recursive: true, force: true });
}
const sum = (a) => a.reduce((x, y) => x + y, 0);
const summarize = (r) => r && { ms: r.ms, summary: r.summary, fastPath: r.fastPath, bytesPerCell: r.bytesPerCell, compressed: r.compressed,
  cellMsMin: Math.min(...r.cellMs), cellMsMax: Math.max(...r.cellMs),
  operatorCpuMs: r.operatorCpuMs, pushProcessCpuMs: r.pushProcessCpuMs,
  cellCpuMsPerCell: Math.round(sum(r.cellCpuMs) / r.cellCpuMs.length), cellCpuMsMax: Math.max(...r.cellCpuMs), cellCpuMsTotal: sum(r.cellCpuMs),
  streamBytes: r.bundles[0]?.streamBytes, gzipBytes: r.bundles[0]?.gzipBytes };
console.log(JSON.stringify({ ...results, one: summarize(results.one), oneAgainUnchanged: summarize(results.oneAgainUnchanged),
  all24: summarize(results.all24), all24Unchanged: summarize(results.all24Unchanged),
  all24UnchangedFullCheck: summarize(results.all24UnchangedFullCheck), oneUncompressed: summarize(results.oneUncompressed) }, null, 2));
