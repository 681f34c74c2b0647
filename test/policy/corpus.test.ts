/** Runs every case of the bad-policy corpus (format: ./corpus-cases.ts). */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPolicy } from '../../src/policy/index.js';
import { DiagnosticsError, formatDiagnostic, type Diagnostic } from '../../src/errors.js';
import { caseFiles, readCase } from './corpus-cases.js';

async function diagnosticsOf(path: string): Promise<Diagnostic[]> {
  try {
    const policy = await loadPolicy(path);
    const compile = existsSync(join(import.meta.dirname, '..', '..', 'src', 'compile', 'index.ts'))
      ? ((await import('../../src/compile/index.js')) as { checkPolicy?: (p: unknown) => Diagnostic[] })
      : {};
    return [...policy.warnings, ...(compile.checkPolicy ? compile.checkPolicy(policy) : [])];
  } catch (e) {
    if (e instanceof DiagnosticsError) return e.diagnostics;
    throw e;
  }
}

describe('bad policy corpus', () => {
  const files = caseFiles();
  it('holds at least 40 cases', () => {
    expect(files.length).toBeGreaterThanOrEqual(40);
  });
  for (const file of files) {
    it(file, async () => {
      const c = readCase(file);
      const diags = await diagnosticsOf(c.path);
      const errors = diags.filter((d) => d.severity === 'error');
      const lines = errors.map(formatDiagnostic).join('\n');
      expect(errors.length, `no error reported; diagnostics:\n${diags.map(formatDiagnostic).join('\n')}`).toBeGreaterThan(0);
      const hit = errors.find((d) => formatDiagnostic(d).includes(c.expect));
      expect(hit, `no error contains ${JSON.stringify(c.expect)}; got:\n${lines}`).toBeDefined();
      expect({ file: hit!.loc.file, line: hit!.loc.line, col: hit!.loc.col }, lines).toEqual(c.at);
      // every error names the field path and the expected form
      for (const d of errors) {
        expect(d.loc.line).toBeGreaterThan(0);
        expect(d.loc.col).toBeGreaterThan(0);
        expect(d.expected, formatDiagnostic(d)).toBeTruthy();
      }
    });
  }
});

describe('good policies', () => {
  const GOOD = join(import.meta.dirname, '..', 'policies', 'good');
  const files = readdirSync(GOOD).filter((f) => /\.(ya?ml|json)$/.test(f) && f !== 'policies.json');
  for (const file of files) {
    it(`${file} loads and passes the compiler's checks`, async () => {
      const diags = await diagnosticsOf(join(GOOD, file));
      expect(diags.filter((d) => d.severity === 'error').map(formatDiagnostic)).toEqual([]);
    });
  }
});
