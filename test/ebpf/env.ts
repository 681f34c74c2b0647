/**
 * Kernel test environment for the eBPF backend: a private bpffs mounted under
 * a temp directory we create (never the host's /sys/fs/bpf), and a cwt-*
 * namespace to run bpftool in. cleanup() unmounts and removes everything.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../kernel/netns.js';

export const EBPF_TOOLS = ['ip', 'tc', 'bpftool'];

export class BpfEnv {
  readonly ns = `cwt-${randomBytes(3).toString('hex')}-bpf`;
  private constructor(readonly tmp: string, readonly bpffs: string) {}

  static create(): BpfEnv {
    const tmp = mkdtempSync(join(tmpdir(), 'cwt-ebpf-'));
    const bpffs = join(tmp, 'bpf');
    mkdirSync(bpffs);
    execFileSync('mount', ['-t', 'bpf', 'bpf', bpffs], { stdio: 'pipe' });
    const e = new BpfEnv(tmp, bpffs);
    try {
      execFileSync('ip', ['netns', 'add', e.ns], { stdio: 'pipe' });
    } catch (err) {
      e.cleanup();
      throw err;
    }
    return e;
  }

  /** run argv inside the namespace; throws with the output on failure */
  exec = async (argv: string[]): Promise<string> => {
    const full = ['ip', 'netns', 'exec', this.ns, ...argv];
    const r = await run(full, 60_000);
    if (r.code !== 0) throw new Error(`${argv.join(' ')} exited ${r.code}\n${r.stderr}${r.stdout}`);
    return r.stdout;
  };

  cleanup(): void {
    try { execFileSync('ip', ['netns', 'del', this.ns], { stdio: 'ignore' }); } catch { /* not created */ }
    try { execFileSync('umount', [this.bpffs], { stdio: 'ignore' }); } catch { /* not mounted */ }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
