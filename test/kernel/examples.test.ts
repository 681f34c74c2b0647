/**
 * The example policies (examples/*.yaml) are valid and clean: `cellwall
 * validate --json` reports no error and no warning (a warning in an example
 * would teach operators a bad habit). No kernel needed.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cellwall, EXAMPLES } from './cli.js';

const files = readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml')).sort();

describe('example policies', () => {
  it('include the SPEC §1 example and the three scenarios', () => {
    expect(files).toEqual(expect.arrayContaining(['cellwall.yaml', 'cloudgov.yaml', 'dcos-it-hr.yaml', 'govuk-isolation.yaml']));
  });

  it.each(files)('%s validates without errors or warnings', async (f) => {
    const r = await cellwall(['validate', join(EXAMPLES, f), '--json']);
    const out = JSON.parse(r.stdout) as { ok: boolean; errors: unknown[]; warnings: unknown[] };
    expect(out.errors).toEqual([]);
    expect(out.warnings).toEqual([]);
    expect(out.ok).toBe(true);
    expect(r.code).toBe(0);
  });
});
