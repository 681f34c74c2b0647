/** `cellwall cidr` as a Unix tool, run as a real process (bin/cellwall.js, after npm run build). */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cellwall.js');
const dir = mkdtempSync(join(tmpdir(), 'cw-cidr-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, 'cidr', ...args], { input, encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('cellwall cidr', () => {
  it('aggregate: stdin and files, v4 first then v6, sorted, merged', () => {
    const a = file('a.txt', '# comment\n10.0.1.0/24\n2001:db8::/33\n10.0.0.0/24, 10.0.2.0-10.0.3.255\n\n');
    const r = run(['aggregate', a, '-'], '2001:db8:8000::/33\n1.2.3.4\n');
    expect(r).toEqual({ code: 0, out: '1.2.3.4/32\n10.0.0.0/22\n2001:db8::/32\n', err: '' });
    expect(run(['aggregate'], '0.0.0.0/1\n128.0.0.0/1\n::/0\n').out).toBe('0.0.0.0/0\n::/0\n');
  });

  it('bad lines: file:line: reason on stderr, exit 1, nothing on stdout', () => {
    const bad = file('bad.txt', '10.0.0.0/8\n192.168.0.0./16\n10.0.0.1/8\n010.0.0.0\n1.2.3.4/33\n10.0.0.9-10.0.0.1\n');
    const r = run(['aggregate', bad]);
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err.split('\n').filter(Boolean)).toEqual([
      `${bad}:2: trailing "." after last octet`,
      `${bad}:3: host bits set: 10.0.0.1/8 (network address is 10.0.0.0/8)`,
      `${bad}:4: leading zero in octet "010"`,
      `${bad}:5: prefix length 33 exceeds 32`,
      `${bad}:6: range start 10.0.0.9 is after end 10.0.0.1`,
    ]);
    const s = run(['aggregate', '--skip-invalid', bad]);
    expect(s.code).toBe(0);
    expect(s.out).toBe('10.0.0.0/8\n');
    expect(s.err).toContain(`${bad}:4: warning: leading zero in octet "010" (skipped)`);
    expect(run(['aggregate', '--no-strict'], '10.0.0.1/8\n').out).toBe('10.0.0.0/8\n');
  });

  it('--json and --reduce', () => {
    const j = JSON.parse(run(['aggregate', '--json'], '10.0.0.0/25\n10.0.0.128/25\nfe80::/10\n').out);
    expect(j).toMatchObject({ ok: true, in: 3, out: 2, cidrs: ['10.0.0.0/24', 'fe80::/10'] });
    // /23 + /24 + /25 -> allow growth: the /23 and /24 get split into /25s
    const red = run(['aggregate', '--reduce', '500'], '10.0.0.0/23\n10.0.2.0/24\n10.0.3.0/25\n').out.trim().split('\n');
    expect(new Set(red.map((l) => l.split('/')[1]))).toEqual(new Set(['25']));
    expect(red).toHaveLength(7);
    expect(run(['aggregate', '--reduce', 'x'], '10.0.0.0/8\n')).toMatchObject({ code: 1, out: '' });
  });

  it('exclude A B', () => {
    const a = file('ea.txt', '10.0.0.0/8\n2001:db8::/32\n');
    const b = file('eb.txt', '10.128.0.0/9\n10.0.0.0/16\n2001:db8::/33\n');
    expect(run(['exclude', a, b])).toEqual({ code: 0, out: '10.1.0.0/16\n10.2.0.0/15\n10.4.0.0/14\n10.8.0.0/13\n10.16.0.0/12\n10.32.0.0/11\n10.64.0.0/10\n2001:db8:8000::/33\n', err: '' });
  });

  it('contains SET ADDR...: the most specific CIDR of the aggregate, exit 1 when any is outside', () => {
    const s = file('set.txt', '10.0.0.0/24\n10.0.1.0/25\n2001:db8::/48\n');
    expect(run(['contains', s, '10.0.1.5', '2001:db8::7'])).toEqual({ code: 0, out: '10.0.1.0/25\n2001:db8::/48\n', err: '' });
    const miss = run(['contains', s, '10.0.0.1', '10.0.2.1']);
    expect(miss.code).toBe(1);
    expect(miss.out).toBe('10.0.0.0/24\n');
    expect(miss.err).toContain('10.0.2.1 is not in');
    const j = JSON.parse(run(['contains', '--json', s, '10.0.2.1']).out);
    expect(j).toEqual({ ok: false, results: [{ address: '10.0.2.1', match: null }] });
    const bad = run(['contains', s, '10.0.0.0/8']);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('invalid address "10.0.0.0/8"');
  });

  it('missing file: clear error, no stack', () => {
    const r = run(['aggregate', join(dir, 'nope.txt')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/nope\.txt: no such file or directory/);
    expect(r.err).not.toMatch(/\n\s+at /);
  });
});
