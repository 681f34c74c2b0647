/**
 * The bad-policy corpus: test/policies/bad/<case>.(yaml|yml|json), one case
 * per file. A YAML case starts with comment lines
 *   # expect: <substring of one diagnostic>
 *   # at: <line>:<col>            (in the case file)  or
 *   # at: <file>:<line>:<col>     (file relative to the case's directory)
 * A JSON case (no comments in JSON) has a sidecar <case>.json.expect holding
 * the same lines without the leading '#'. Files under bad/files/ are inputs
 * referenced by cases, not cases themselves.
 * Each case runs the real loader; when the loader accepts the policy (a
 * compile-level case), the compiler's checkPolicy is consulted.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPolicy } from '../../src/policy/index.js';
import { DiagnosticsError, formatDiagnostic, type Diagnostic } from '../../src/errors.js';

export const BAD = join(import.meta.dirname, '..', 'policies', 'bad');

export interface Case { file: string; path: string; expect: string; at: { file: string; line: number; col: number } }

export function readCase(file: string): Case {
  const path = join(BAD, file);
  const header = file.endsWith('.json') ? readFileSync(`${path}.expect`, 'utf8') : readFileSync(path, 'utf8');
  const field = (name: string) => {
    const m = new RegExp(`^#?\\s*${name}:\\s*(.*?)\\s*$`, 'm').exec(header);
    if (!m) throw new Error(`${file}: missing "${name}:" header`);
    return m[1];
  };
  const at = field('at');
  const m = /^(?:(.+):)?(\d+):(\d+)$/.exec(at);
  if (!m) throw new Error(`${file}: bad "at:" header ${at}`);
  return { file, path, expect: field('expect'), at: { file: m[1] ? join(BAD, m[1]) : path, line: Number(m[2]), col: Number(m[3]) } };
}

export function caseFiles(): string[] {
  return readdirSync(BAD, { withFileTypes: true })
    .filter((d) => d.isFile() && /\.(ya?ml|json)$/.test(d.name))
    .map((d) => d.name)
    .sort();
}

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
