/**
 * Capability gates for kernel and SSH tests.
 *
 * Kernel/SSH tests run when we are root and the tools exist. Under CI=true a
 * missing capability is a failure (the test throws), elsewhere the test is
 * skipped with a visible reason.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export const IN_CI = process.env.CI === 'true';

function have(tool: string): boolean {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin', '/usr/local/sbin', '/usr/local/bin']) {
    if (existsSync(`${dir}/${tool}`)) return true;
  }
  return false;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/**
 * Returns null when every capability is present, or the reason one is missing.
 */
export function missingCapability(tools: string[]): string | null {
  if (!isRoot()) return 'not running as root';
  for (const t of tools) if (!have(t)) return `tool not found: ${t}`;
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe' });
  } catch {
    return 'cannot list network namespaces';
  }
  return null;
}

export const KERNEL_TOOLS = ['ip', 'iptables-restore', 'ip6tables-restore', 'iptables-save', 'ipset', 'ping', 'socat'];

/**
 * Use as: `const kernel = kernelGate(); describe.skipIf(kernel.skip)(...)`.
 * In CI a missing capability throws at import time so the file fails.
 */
export function kernelGate(tools: string[] = KERNEL_TOOLS): { skip: boolean; reason: string } {
  const reason = missingCapability(tools);
  if (reason === null) return { skip: false, reason: '' };
  if (IN_CI) throw new Error(`CI=true but kernel tests cannot run: ${reason}`);
  // visible reason
  console.warn(`[skip] kernel tests skipped: ${reason}`);
  return { skip: true, reason };
}
