// Measurement (no assertions): wall time and CPU of `cellwall push` to 1 cell
// and to N cells (default 24) with --max-in-flight N; bytes per cell, compression.
// Needs root, a build (npm run build), and runs every ssh from a cwt-* namespace.
//   node test/fleet/measure.mjs [--tiny | --entries N | --cfscale] [--backend nft] [--cells N] [--repeat R]
//
// CPU is split three ways, so that a reader can tell what a real fleet (one
// machine per cell) would see:
//   operator  the push process and its ssh clients (GNU time on the push; plus
//             any daemonised ssh process in the operator namespace, polled)
//   sshd      each cell's sshd (its accumulated children's CPU, from
//             /proc/<sshd>/stat cutime+cstime, minus the cell-side figure), incl. `gzip -dc`
//   cell      the cell-side shell and the commands it ran (`times`, cellCpuMs in the report)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Fleet, writeBundles } from './harness.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = join(ROOT, 'bin/cellwall.js');
const arg = (k, d) => { const i = process.argv.indexOf(k); return i > 0 ? process.argv[i + 1] : d; };
const has = (k) => process.argv.includes(k);
const SEGMENT = 'shared';
const N = Number(arg('--cells', '24'));
const REPEAT = Number(arg('--repeat', '1'));
const backend = arg('--backend', 'iptables');
const TICK = 1e3 / 100; // ms per clock tick (USER_HZ)
const CORES = cpus().length;

const out = mkdtempSync(join(tmpdir(), 'cwt-fleet-measure-'));
const bundles = [join(out, 'b1'), join(out, 'b2')];
let policy = join(ROOT, 'test/fleet/fixtures/policy.yaml');
let kind;
let compileMs = 0;
if (has('--tiny')) {
  // the hand-written two-version bundle of the tests (a few CIDRs): orchestration only
  kind = 'tiny';
  if (backend !== 'iptables') throw new Error('--tiny is iptables only (hand-written bundles); use --entries 20 for nft');
  writeBundles(bundles[0], [SEGMENT], 1);
  writeBundles(bundles[1], [SEGMENT], 2);
  policy = join(out, 'policy.yaml');
  writeFileSync(policy, readFileSync(join(ROOT, 'test/fleet/fixtures/policy.yaml'), 'utf8').replace(/seg-a:/, `${SEGMENT}:`));
} else {
  const policies = [];
  if (has('--cfscale')) {
    // CF scale (bench/cfscale.ts); version 2 is the same policy plus one network entry
    kind = 'cfscale';
    const { cfScaleFile } = await import(join(ROOT, 'dist/bench/cfscale.js'));
    const p1 = cfScaleFile();
    const j = JSON.parse(readFileSync(p1, 'utf8'));
    policies.push(p1);
    const first = Object.keys(j.networks)[0];
    j.networks[first] = [...j.networks[first], '198.51.100.77'];
    writeFileSync(join(out, 'cf2.json'), JSON.stringify(j));
    policies.push(join(out, 'cf2.json'));
  } else {
    // a geoip policy: N IPv4 + N/5 IPv6 geoip CIDRs as an ASG destination; version 2 drops the last 100
    const { geoipCidrs } = await import(join(ROOT, 'dist/bench/data/geoip.js'));
    const n = Number(arg('--entries', '50000'));
    kind = `geoip-${n}`;
    const v4 = geoipCidrs(4).slice(0, n), v6 = geoipCidrs(6).slice(0, Math.ceil(n / 5));
    for (const [k, cut] of [[1, 0], [2, Math.min(100, Math.floor(n / 2))]]) {
      const f = join(out, `geo${k}.json`);
      writeFileSync(f, JSON.stringify({
        version: 1, mode: 'tighten',
        networks: { overlay: ['10.255.0.0/16'], geo: [...v4.slice(0, v4.length - cut), ...v6] },
        security_groups: {
          geo: [{ protocol: 'tcp', destination: 'geo', ports: '443' }, { protocol: 'udp', destination: 'geo', ports: '53,123' }],
          dns: [{ protocol: 'udp', destination: '0.0.0.0/0', ports: '53' }],
        },
        segments: { [SEGMENT]: { container_network: 'overlay', egress: 'open' } },
        bindings: [{ security_groups: ['geo', 'dns'], phase: ['running', 'staging'] }],
      }));
      policies.push(f);
    }
  }
  policy = policies[0];
  for (let k = 0; k < 2; k++) {
    const t = Date.now();
    execFileSync(process.execPath, [CLI, 'compile', policies[k], '--segment', SEGMENT, '--out', join(bundles[k], SEGMENT), '--backend', backend],
      { stdio: 'pipe', maxBuffer: 1 << 28 });
    if (k === 0) compileMs = Date.now() - t;
  }
}
const payloadFiles = backend === 'nft' ? ['ruleset.nft'] : ['ipset.restore', 'iptables.v4', 'iptables.v6'];
const files = payloadFiles.map((f) => readFileSync(join(bundles[0], SEGMENT, f)));
const raw = files.reduce((n, b) => n + b.length, 0);
const gz = gzipSync(Buffer.concat(files), { level: 6 }).length;

/** utime+stime and cutime+cstime of a process, ms */
function cpuOf(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return { ppid: Number(f[1]), own: (Number(f[11]) + Number(f[12])) * TICK, children: (Number(f[13]) + Number(f[14])) * TICK, comm: s.slice(s.indexOf('(') + 1, s.lastIndexOf(')')) };
  } catch { return null; }
}

const fleet = await new Fleet(N + 1).start();
const sshdPid = (i) => Number(readFileSync(join(fleet.cells[i].dir, 'sshd.pid'), 'utf8'));
const results = { kind, backend, cells: N, policyBytes: statSync(policy).size, compileMs, bundleBytes: raw, bundleGzipBytes: gz, cores: CORES, loadavgBefore: loadavg() };
try {
  const run = async (cells, version, extra = []) => {
    const inv = fleet.inventory(cells.map((i) => ({ i, segment: SEGMENT })));
    const sshd0 = cells.map((i) => cpuOf(sshdPid(i)).children);
    // daemonised ssh processes in the operator namespace (ControlPersist masters): polled
    const detached = new Map();
    const poll = setInterval(() => {
      let pids = [];
      try { pids = execFileSync('ip', ['netns', 'pids', fleet.ops], { encoding: 'utf8' }).split('\n').filter(Boolean); } catch { /* */ }
      for (const p of pids) { const c = cpuOf(p); if (c && c.comm === 'ssh' && c.ppid === 1) detached.set(p, Math.max(detached.get(p) ?? 0, c.own)); }
    }, 100);
    const t0 = Date.now();
    const r = await fleet.run('/usr/bin/time', ['-f', 'CW-TIME %U %S', 'node', CLI, 'push', policy, '--inventory', inv, '--bundles', bundles[version - 1], '--json',
      '--max-in-flight', String(cells.length), '--canaries', '0', ...(backend !== 'iptables' ? ['--backend', backend] : []), ...extra], { timeoutMs: 1_200_000 });
    const ms = Date.now() - t0;
    clearInterval(poll);
    await new Promise((res) => setTimeout(res, 500)); // let sshd reap its session processes
    const sshdTotal = cells.map((i, k) => cpuOf(sshdPid(i)).children - sshd0[k]);
    let rep;
    try { rep = JSON.parse(r.stdout); } catch { throw new Error(`push did not answer JSON (exit ${r.code}): ${r.stderr.slice(-2000)}`); }
    const tm = /CW-TIME ([\d.]+) ([\d.]+)/.exec(r.stderr);
    const cellCpu = rep.cells.map((c) => c.cellCpuMs ?? 0);
    const sum = (a) => a.reduce((x, y) => x + y, 0);
    const operatorCpuMs = Math.round((tm ? (Number(tm[1]) + Number(tm[2])) * 1000 : 0) + sum([...detached.values()]));
    const cellSide = sshdTotal.map((s) => Math.max(0, s)); // sshd + shell + commands, per cell
    return {
      ms, summary: rep.summary, fastPath: rep.cells.filter((c) => c.fastPath).length,
      bytesPerCell: Math.round(sum(rep.cells.map((c) => c.bytesSent)) / rep.cells.length), compressed: rep.cells[0].compressed,
      cellMsMin: Math.min(...rep.cells.map((c) => c.durationMs)), cellMsMax: Math.max(...rep.cells.map((c) => c.durationMs)),
      operatorCpuMs, operatorDetachedSshCpuMs: Math.round(sum([...detached.values()])), pushProcessCpuMs: rep.cpuMs,
      sshdCpuMs: Math.round(sum(cellSide) - sum(cellCpu)), cellCpuMs: sum(cellCpu), cellCpuMsMax: Math.max(...cellCpu),
      cellSideCpuMsPerCell: Math.round(sum(cellSide) / cells.length),
      // what a real fleet would see: remove the cell-side CPU (sshd + apply) of all but one cell from the
      // shared cores (an estimate; exact only when the run is CPU-bound on cores)
      realFleetEstimateMs: cells.length > 1 ? Math.round(ms - (sum(cellSide) * (cells.length - 1) / cells.length) / CORES) : ms,
      streamBytes: rep.bundles[0]?.streamBytes, gzipBytes: rep.bundles[0]?.gzipBytes,
      failed: rep.cells.filter((c) => !['changed', 'unchanged', 'would-change'].includes(c.outcome)).map((c) => `${c.name}: ${c.outcome} ${c.reason}`).slice(0, 3),
    };
  };
  const all = Array.from({ length: N }, (_, i) => i);
  const best = async (label, f) => {
    const runs = [];
    for (let k = 0; k < REPEAT; k++) runs.push(await f(k));
    results[label] = runs.length === 1 ? runs[0] : { ...runs.sort((a, b) => a.ms - b.ms)[0], runsMs: runs.map((x) => x.ms) };
    process.stderr.write(`${label}: ${results[label].ms} ms\n`);
  };
  // the single cell is cell N (not part of the N-cell runs): both start from an empty cell
  // (repeats alternate versions so every run changes the cell)
  await best('one', (k) => run([N], (k % 2) + 1));
  await best('oneUnchanged', () => run([N], ((REPEAT - 1) % 2) + 1));
  await best('all', (k) => run(all, (k % 2) + 1));
  await best('allUnchanged', () => run(all, ((REPEAT - 1) % 2) + 1));
  await best('allDryRunUnchanged', () => run(all, ((REPEAT - 1) % 2) + 1, ['--dry-run']));
  await best('allUnchangedFullCheck', () => run(all, ((REPEAT - 1) % 2) + 1, ['--no-fast-path']));
  await best('allChangedAgain', () => run(all, (REPEAT % 2) + 1));
  if (backend === 'iptables') await best('oneUncompressed', () => run([N], (REPEAT % 2) + 1, ['--no-compress']));
} finally {
  fleet.stop();
  rmSync(out, { recursive: true, force: true });
}
results.loadavgAfter = loadavg();
console.log(JSON.stringify(results, null, 2));
