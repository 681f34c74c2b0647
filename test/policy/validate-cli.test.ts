/** The real `cellwall validate` CLI (bin/cellwall.js -> dist; `npm test` builds first). */
import { spawnSync } from 'node:child_process';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCase } from './corpus-cases.js';

const ROOT = join(import.meta.dirname, '..', '..');

function cellwall(...args: string[]) {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'cellwall.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const noStack = (s: string) => {
  expect(s).not.toMatch(/^\s+at .+\(.*:\d+:\d+\)$/m);
  expect(s).not.toContain('internal error');
};

describe('cellwall validate', () => {
  it('exits 0 with a one-line summary for a good policy', () => {
    const r = cellwall('validate', 'test/policies/good/spec-example.yaml');
    expect(r.stderr).not.toContain('error:'); // the compiler may add warnings
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    expect(r.stdout).toContain('ok: 4 networks, 4 security groups (6 rules), 3 groups, 2 segments, 2 bindings, 5 app rules');
  });

  const cases = ['seed-typo-trailing-dot.yaml', 'ports-list-holds-range.yaml', 'icmp-without-type.yaml', 'network-cycle.yaml',
    'unknown-key-in-cf-json.yaml', 'json-policy-unknown-key.json', 'yaml-tab-indent.yaml'];
  for (const file of cases) {
    it(`exits 1 with file:line:col and no stack trace: ${file}`, () => {
      const c = readCase(file);
      const r = cellwall('validate', relative(ROOT, c.path));
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      const where = `${relative(ROOT, c.at.file)}:${c.at.line}:${c.at.col}: error: `;
      const line = r.stderr.split('\n').find((l) => l.startsWith(where));
      expect(line, r.stderr).toBeDefined();
      expect(line).toContain(c.expect);
      noStack(r.stderr);
    });
  }

  it('--json reports ok, errors, warnings and summary', () => {
    const bad = cellwall('validate', '--json', 'test/policies/bad/port-zero.yaml');
    expect(bad.code).toBe(1);
    const b = JSON.parse(bad.stdout);
    expect(b).toMatchObject({ ok: false, warnings: [], summary: null });
    expect(b.errors).toEqual([expect.objectContaining({ severity: 'error', loc: { file: 'test/policies/bad/port-zero.yaml', line: 6, col: 60, path: 'security_groups.web[0].ports' } })]);
    const good = cellwall('validate', 'test/policies/good/v3-object.yaml', '--json');
    expect(good.code).toBe(0);
    const g = JSON.parse(good.stdout);
    expect(g).toMatchObject({ ok: true, errors: [], summary: { securityGroups: 1, asgRules: 3, bindings: 2 } });
    expect(g.summary.warnings).toBe(g.warnings.length);
    expect(g.warnings.map((w: { message: string }) => w.message)).toContainEqual(expect.stringContaining('is not a group of this policy'));
  });

  it('reports a missing policy file without a stack trace', () => {
    const r = cellwall('validate', 'test/policies/does-not-exist.yaml');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('test/policies/does-not-exist.yaml: no such file');
    noStack(r.stderr);
  });
});
