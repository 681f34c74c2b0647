/**
 * Robustness: whatever the input, the loader either returns a Policy or
 * throws a DiagnosticsError whose every diagnostic has a real position;
 * never another exception (which the CLI would print as an internal error
 * with a stack trace).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DiagnosticsError } from '../../src/errors.js';
import { loadPolicyText } from '../../src/policy/index.js';

const GOOD = join(import.meta.dirname, '..', 'policies', 'good');
const seeds = ['spec-example.yaml', 'description-quoting.yaml', 'v3-object.yaml'].map((f) => readFileSync(join(GOOD, f), 'utf8'));
const ALPHABET = [...' \t\n:-,[]{}"\'!#&*|>/.0123456789abcdefxyz:'];

type Edit = { at: number; del: number; ins: string };
const edit = fc.record({
  at: fc.nat(),
  del: fc.integer({ min: 0, max: 8 }),
  ins: fc.array(fc.constantFrom(...ALPHABET), { maxLength: 6 }).map((a) => a.join('')),
});

function apply(text: string, edits: Edit[]): string {
  let t = text;
  for (const e of edits) {
    const at = t.length ? e.at % t.length : 0;
    t = t.slice(0, at) + e.ins + t.slice(at + e.del);
  }
  return t;
}

describe('loader robustness', () => {
  it('mutated policies give a Policy or positioned diagnostics, never a crash', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...seeds.keys()), fc.array(edit, { minLength: 1, maxLength: 4 }), async (i, edits) => {
      const text = apply(seeds[i], edits);
      try {
        await loadPolicyText(text, 'fuzz.yaml', GOOD);
      } catch (e) {
        if (!(e instanceof DiagnosticsError)) throw new Error(`non-diagnostic failure for input:\n${text}\n${(e as Error).stack}`);
        expect(e.diagnostics.some((d) => d.severity === 'error')).toBe(true);
        for (const d of e.diagnostics) {
          expect(d.loc.line).toBeGreaterThanOrEqual(1);
          expect(d.loc.col).toBeGreaterThanOrEqual(1);
        }
      }
    }), { numRuns: 300 });
  });
});
