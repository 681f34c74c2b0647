/**
 * bench/instructions.ts: the instruction count of the compile pipeline
 * repeats from run to run (what makes it useful where wall time varies by
 * 15-25%), and it measures the build it is pointed at.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateCfScale, SEGMENT } from '../../bench/cfscale.js';
import { countInstructions } from '../../bench/instructions.js';
import { IN_CI } from '../helpers/caps.js';

const ROOT = join(import.meta.dirname, '..', '..');
const PIPELINE = join(ROOT, 'dist', 'bench', 'lib', 'pipeline.js');

function valgrindMissing(): string | null {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'pipe' });
    return null;
  } catch {
    return 'valgrind not installed';
  }
}
const missing = valgrindMissing();
if (missing && IN_CI) throw new Error(`CI=true but the instruction-count test cannot run: ${missing}`);
if (missing) console.warn(`[skip] instruction counts: ${missing}`);

describe.skipIf(missing !== null)('instruction counts of the compile pipeline (valgrind)', () => {
  it('repeat within 0.5% on the same build, with the same bytes rendered', () => {
    const policy = join(ROOT, 'examples', 'govuk-isolation.yaml');
    const a = countInstructions(ROOT, policy, 'egress-restricted-1', PIPELINE);
    const b = countInstructions(ROOT, policy, 'egress-restricted-1', PIPELINE);
    expect(a.bytes).toBe(b.bytes);
    expect(a.bytes).toBeGreaterThan(1000);
    expect(Math.abs(a.instructions - b.instructions) / a.instructions).toBeLessThan(0.005);
  }, 180_000);

  it('count the pipeline, not only the start-up: a CF-shaped policy 8x larger costs more', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cw-ir-'));
    try {
      const file = (name: string, k: number) => {
        const f = join(dir, `${name}.json`);
        const shape = { asgs: 30 * k, rulesPerAsg: 8, maxDestinations: 40, spaces: 12, apps: 30, appRules: 60 * k, globalAsgs: 3 };
        writeFileSync(f, JSON.stringify(generateCfScale(5, shape)));
        return f;
      };
      const small = countInstructions(ROOT, file('small', 1), SEGMENT, PIPELINE);
      const large = countInstructions(ROOT, file('large', 8), SEGMENT, PIPELINE);
      expect(large.bytes).toBeGreaterThan(small.bytes * 4);
      // start-up is the same in both; the difference is the policy's work, well beyond the 0.5% noise
      expect(large.instructions).toBeGreaterThan(small.instructions * 1.05);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
