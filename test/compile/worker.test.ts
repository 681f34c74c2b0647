/**
 * `cellwall compile` checks the policy for redundant rules and renders,
 * hashes and writes a large ipset payload in a worker thread
 * (src/compile/worker.ts, built into dist/). Run as a real process: with the
 * worker forced on and off the output directories and the warnings must be
 * identical, the payloads equal to what the in-process renderer gives, and
 * the manifest must list each file's real sha256 and length. The packed form
 * the worker gets is checked in-process too.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateCfScale } from '../../bench/cfscale.js';
import { renderAll } from '../../src/compile/cli.js';
import { compileSegment } from '../../src/compile/index.js';
import { loadPolicy } from '../../src/policy/index.js';
import { findPackedRedundant, packRedundancy, redundantAsgRules, redundantDiagnostics } from '../../src/compile/redundancy.js';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cellwall.js');
const dir = mkdtempSync(join(tmpdir(), 'cw-worker-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const FILES = ['ipset.restore', 'iptables.v4', 'iptables.v6', 'manifest.json'];

function compile(policy: string, out: string, worker: '0' | '1'): string {
  const r = spawnSync(process.execPath, [BIN, 'compile', policy, '--segment', 'shared', '--out', out], {
    encoding: 'utf8', env: { ...process.env, CELLWALL_IPSET_WORKER: worker, CELLWALL_TIMINGS: '1' },
  });
  expect(r.stderr).not.toMatch(/Error|at .*\.js:\d+/);
  expect(r.status).toBe(0);
  // the stage timings say which way the payload was rendered
  expect(r.stderr.includes('render (the ipset payload in a worker thread)')).toBe(worker === '1');
  return r.stderr.split('\n').filter((l) => !l.startsWith('timing: ')).join('\n');
}

/** a generated policy with redundant rules: a copy of a rule, or an `all` rule covering the rest */
function withRedundancy(seed: number): string {
  const p = generateCfScale(seed, { asgs: 40, rulesPerAsg: 6, maxDestinations: 100, spaces: 10, apps: 20, appRules: 40, globalAsgs: 2 });
  Object.values(p.security_groups).forEach((rules, i) => {
    if (i % 3 === 0) rules.push({ ...rules[0]! });
    else if (i % 3 === 1) rules.push({ protocol: 'all', destination: '0.0.0.0-255.255.255.255' });
  });
  return JSON.stringify(p);
}

describe('compile with the worker thread', () => {
  // a policy with a few thousand set entries: IPv4 and IPv6 sets, hash:net,port sets, lists
  const policy = join(dir, 'p.json');
  writeFileSync(policy, JSON.stringify(generateCfScale(11, { asgs: 60, rulesPerAsg: 10, maxDestinations: 300, spaces: 20, apps: 40, appRules: 120, globalAsgs: 3 })));

  it('writes the same files as the in-thread renderer, and the manifest sums them', async () => {
    const a = join(dir, 'worker'), b = join(dir, 'inline');
    expect(compile(policy, a, '1')).toBe(compile(policy, b, '0'));
    for (const d of [a, b]) expect(readdirSync(d).sort()).toEqual([...FILES].sort());
    const inProcess = renderAll(compileSegment(await loadPolicy(policy), 'shared').plan);
    expect(inProcess['ipset.restore'].split('\n').filter((l) => l.startsWith('add ')).length).toBeGreaterThan(2000);
    for (const f of FILES) {
      const bytes = readFileSync(join(a, f));
      expect(bytes.equals(readFileSync(join(b, f))), `${f}: worker and inline differ`).toBe(true);
      if (f !== 'manifest.json') expect(bytes.toString('utf8'), `${f}: differs from the in-process render`).toBe(inProcess[f as 'ipset.restore']);
    }
    const manifest = JSON.parse(readFileSync(join(a, 'manifest.json'), 'utf8')) as { files: Record<string, { sha256: string; bytes: number }> };
    for (const f of FILES.filter((x) => x !== 'manifest.json')) {
      const bytes = readFileSync(join(a, f));
      expect(manifest.files[f]).toEqual({ sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length });
    }
  });

  it('the same redundant-rule warnings, in the same order, with the worker and without', () => {
    const p = join(dir, 'redundant.json');
    writeFileSync(p, withRedundancy(21));
    const a = compile(p, join(dir, 'r-worker'), '1');
    const b = compile(p, join(dir, 'r-inline'), '0');
    expect(a.match(/redundant rule/g)?.length ?? 0).toBeGreaterThan(20);
    expect(a).toBe(b);
  });

  it('--print renders in memory, worker or not', () => {
    const r = spawnSync(process.execPath, [BIN, 'compile', policy, '--segment', 'shared', '--print'], {
      encoding: 'utf8', env: { ...process.env, CELLWALL_IPSET_WORKER: '1' }, maxBuffer: 1 << 28,
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('==> ipset.restore <==\n# cellwall');
    expect(r.stdout).toMatch(/^add cw4n-\S+ \d+\.\d+\.\d+\.\d+\/\d+ -exist$/m);
  });
});

describe('compile --out: a failed write changes nothing', () => {
  const policy = join(dir, 'p2.json');
  writeFileSync(policy, JSON.stringify(generateCfScale(12, { asgs: 40, rulesPerAsg: 8, maxDestinations: 200, spaces: 10, apps: 20, appRules: 40, globalAsgs: 2 })));
  const other = join(dir, 'p3.json');
  writeFileSync(other, JSON.stringify(generateCfScale(13, { asgs: 40, rulesPerAsg: 8, maxDestinations: 200, spaces: 10, apps: 20, appRules: 40, globalAsgs: 2 })));

  for (const worker of ['1', '0'] as const) {
    it(`the ipset payload cannot be written (${worker === '1' ? 'by the worker thread' : 'in the main thread'}): exit 1, a clear message, the previous files kept`, () => {
      const out = join(dir, `fail-${worker}`);
      compile(policy, out, worker);
      const before = Object.fromEntries(FILES.map((f) => [f, readFileSync(join(out, f))]));
      // its temporary name taken by a directory: the write fails
      mkdirSync(join(out, '.ipset.restore.tmp'));
      const r = spawnSync(process.execPath, [BIN, 'compile', other, '--segment', 'shared', '--out', out], {
        encoding: 'utf8', env: { ...process.env, CELLWALL_IPSET_WORKER: worker },
      });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^cellwall: .*\.ipset\.restore\.tmp/m);
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
      for (const f of FILES) expect(readFileSync(join(out, f)).equals(before[f]), `${f} changed`).toBe(true);
      // (the other policy does compile to other files)
      const elsewhere = join(dir, `other-${worker}`);
      compile(other, elsewhere, worker);
      for (const f of FILES) expect(readFileSync(join(elsewhere, f)).equals(before[f]), f).toBe(false);
      // no temporary file of the failed run is left behind
      expect(readdirSync(out).filter((n) => n.endsWith('.tmp'))).toEqual(['.ipset.restore.tmp']);
    });
  }
});

describe('the redundant-rule check on packed rules (what the worker gets)', () => {
  it('finds what the check on the policy finds', async () => {
    for (const seed of [31, 32, 33]) {
      const file = join(dir, `packed-${seed}.json`);
      writeFileSync(file, withRedundancy(seed));
      const policy = await loadPolicy(file);
      const direct = redundantAsgRules(policy);
      expect(direct.length).toBeGreaterThan(10);
      expect(redundantDiagnostics(policy, findPackedRedundant(packRedundancy(policy)))).toEqual(direct);
    }
  });
});
