/**
 * Running the netfilter tools. Always execFile-style (argv arrays, never a
 * shell); payloads go through stdin. A missing tool becomes a CellwallError
 * that names it.
 */
import { spawn } from 'node:child_process';
import { CellwallError } from '../errors.js';

export interface RunResult { code: number; stdout: string; stderr: string }

export async function run(cmd: string, args: string[], input?: string): Promise<RunResult> {
  return await new Promise<RunResult>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') reject(new CellwallError(`${cmd}: not found in PATH (install it, e.g. the ${packageOf(cmd)} package)`));
      else reject(e);
    });
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
    child.stdin.on('error', () => { /* the tool may exit before reading everything; its exit code tells */ });
    child.stdin.end(input ?? '');
  });
}

/** run and throw a CellwallError with the tool's stderr on a non-zero exit */
export async function runOk(cmd: string, args: string[], input?: string): Promise<string> {
  const r = await run(cmd, args, input);
  if (r.code !== 0) throw new CellwallError(`${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

function packageOf(cmd: string): string {
  if (cmd.startsWith('ipset')) return 'ipset';
  if (cmd.includes('tables')) return 'iptables';
  return cmd;
}
