import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { recoverFromJournal } from '../../src/apply/index.js';
import { journalPath } from '../../src/apply/statedir.js';
import type { Tools } from '../../src/state/backend.js';

const dir = mkdtempSync(join(tmpdir(), 'cw-journal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('iptables apply: journal recovery', () => {
  // never used: the journal is refused before any tool runs
  const tools = {} as Tools;
  for (const [what, journal] of [
    ['an nft apply (ruleset text snapshot)', { version: 1, pid: 1, started: 'x', backend: 'nft', target: 't', snapshot: 'table inet cellwall {}' }],
    ['an nft apply of an empty table', { version: 1, pid: 1, started: 'x', backend: 'nft', target: 't', snapshot: null }],
    ['an eBPF apply', { version: 1, pid: 1, started: 'x', backend: 'ebpf', target: 't', snapshot: { generation: 'g1' } }],
  ] as const) {
    it(`refuses the journal of ${what} and keeps it`, async () => {
      writeFileSync(journalPath(dir), JSON.stringify(journal));
      await expect(recoverFromJournal(tools, dir, () => {})).rejects.toThrow(/another backend/);
      expect(existsSync(journalPath(dir))).toBe(true);
    });
  }
});

describe('nft apply: journal recovery', () => {
  it('refuses the journal of an iptables apply on iptables-nft (backend "nft", parsed-state snapshot) and keeps it', async () => {
    const { recoverNftJournal } = await import('../../src/apply/nft.js');
    writeFileSync(journalPath(dir), JSON.stringify({ version: 1, pid: 1, started: 'x', backend: 'nft', target: 't', snapshot: { v4: {}, v6: {}, sets: [] } }));
    await expect(recoverNftJournal(dir, () => {})).rejects.toThrow(/iptables \(iptables-nft\) apply/);
    expect(existsSync(journalPath(dir))).toBe(true);
  });
});
