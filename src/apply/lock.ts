/**
 * A real flock(2) on STATE/apply.lock. Node has no flock, so flock(1) locks
 * an fd this process shares with it: the lock belongs to our open file
 * description and is released by the kernel when this process exits, even
 * on SIGKILL, so a crashed apply never leaves a stale lock behind.
 */
import { spawn } from 'node:child_process';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';

export interface Lock { path: string; release(): Promise<void> }

export async function acquireLock(stateDir: string, timeoutSec: number, log: (s: string) => void): Promise<Lock> {
  const path = join(stateDir, 'apply.lock');
  const fh: FileHandle = await open(path, 'a+');
  const attempt = (wait: number): Promise<number> => new Promise((resolve, reject) => {
    const args = wait > 0 ? ['-x', '-w', String(wait), '3'] : ['-x', '-n', '3'];
    const child = spawn('flock', args, { stdio: ['ignore', 'ignore', 'pipe', fh.fd] });
    child.on('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new CellwallError('flock: not found in PATH (util-linux), needed for the apply lock') : e));
    child.on('close', (code) => resolve(code ?? 1));
  });
  let code = await attempt(0);
  if (code !== 0 && timeoutSec > 0) {
    log(`waiting for another apply to finish (lock ${path})`);
    code = await attempt(timeoutSec);
  }
  if (code !== 0) {
    await fh.close();
    throw new CellwallError(`another apply holds ${path} (waited ${timeoutSec}s); try again later or raise --lock-timeout`);
  }
  return { path, release: async () => { await fh.close(); } };
}
