import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCompile } from '../../src/compile/cli.js';
import { runDiff } from '../../src/diff/cli.js';
import { diffLines } from '../../src/diff/text.js';
import { ctx } from '../helpers/cli-ctx.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));


let dir = '';
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cw-diff-'));
  cpSync(join(ROOT, 'examples'), dir, { recursive: true });
  const text = readFileSync(join(dir, 'cellwall.yaml'), 'utf8');
  writeFileSync(join(dir, 'new.yaml'), text.replaceAll('ports: "53" }', 'ports: "53,853" }'));
  await runCompile(join(dir, 'cellwall.yaml'), { segment: 'shared', out: join(dir, 'bundle') }, ctx().ctx);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('cellwall diff', () => {
  it('exit 0 for a policy against its own compiled bundle, 2 with the change listed', async () => {
    const a = ctx();
    expect(await runDiff(join(dir, 'bundle'), join(dir, 'cellwall.yaml'), {}, a.ctx)).toBe(0);
    expect(a.out.stdout).toContain('segment shared: semantically equal');
    const b = ctx();
    expect(await runDiff(join(dir, 'bundle'), join(dir, 'new.yaml'), { json: true, text: true }, b.ctx)).toBe(2);
    const j = JSON.parse(b.out.stdout);
    expect(j.equal).toBe(false);
    expect(j.segments[0].changes.every((c: { services: string[]; from: string; to: string }) =>
      c.services.join(';') === 'tcp 853;udp 853' && c.from === 'deny' && c.to === 'allow')).toBe(true);
    const removed = j.segments[0].text['ipset.restore'].flatMap((h: { oldLines: string[] }) => h.oldLines);
    const added = j.segments[0].text['ipset.restore'].flatMap((h: { newLines: string[] }) => h.newLines);
    expect(added.some((l: string) => l.includes('tcp:853'))).toBe(true);
    expect(removed.some((l: string) => l.includes('853'))).toBe(false);
  });

  it('compares every segment present in both policies', async () => {
    const a = ctx();
    expect(await runDiff(join(dir, 'cellwall.yaml'), join(dir, 'new.yaml'), {}, a.ctx)).toBe(2);
    expect(a.out.stdout).toMatch(/segment shared: \d+ changes/);
    expect(a.out.stdout).toMatch(/segment egress-restricted-1: \d+ changes/);
  });

  it('user errors: --live with two inputs, a missing segment', async () => {
    await expect(runDiff('a', 'b', { live: true }, ctx().ctx)).rejects.toThrow(/only OLD/);
    await expect(runDiff(join(dir, 'cellwall.yaml'), join(dir, 'new.yaml'), { segment: 'nope' }, ctx().ctx)).rejects.toThrow(/no segment "nope"/);
  });
});

describe('line diff', () => {
  it('reports exactly the changed lines with their positions', () => {
    expect(diffLines(['a', 'b', 'c', 'd'], ['a', 'x', 'c', 'd', 'e'])).toEqual([
      { oldStart: 2, oldLines: ['b'], newStart: 2, newLines: ['x'] },
      { oldStart: 5, oldLines: [], newStart: 5, newLines: ['e'] },
    ]);
    expect(diffLines(['a'], ['a'])).toEqual([]);
  });
});
