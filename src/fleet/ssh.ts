/**
 * Transport: the system OpenSSH client, so the operator's ~/.ssh/config,
 * agent, known_hosts and ProxyJump work unchanged.
 *
 * Host keys are always verified (StrictHostKeyChecking=yes, or accept-new when
 * asked); BatchMode=yes (never prompts); every session has a hard timeout.
 * The remote command is a constant string; data goes on stdin only. One
 * session per cell does probe, transfer and apply, so no ControlMaster is set
 * up (the operator's own ssh config still applies).
 */
import { spawn } from 'node:child_process';
import type { Cell } from './inventory.js';

export interface SshConfig {
  acceptNewHostKeys: boolean;
  connectTimeoutSec: number;
  /** ssh binary (tests may point elsewhere) */
  ssh?: string;
}

export function sshArgs(cell: Cell, cfg: SshConfig, command: string): string[] {
  const a = [
    '-T', '-x', '-a',
    '-o', 'BatchMode=yes',
    '-o', `StrictHostKeyChecking=${cfg.acceptNewHostKeys ? 'accept-new' : 'yes'}`,
    '-o', `ConnectTimeout=${cfg.connectTimeoutSec}`,
    '-o', 'ServerAliveInterval=5',
    '-o', 'ServerAliveCountMax=3',
    '-o', 'LogLevel=ERROR',
  ];
  if (cell.knownHosts) a.push('-o', `UserKnownHostsFile="${cell.knownHosts}"`);
  if (cell.identityFile) a.push('-i', cell.identityFile, '-o', 'IdentitiesOnly=yes');
  if (cell.port) a.push('-p', String(cell.port));
  if (cell.user) a.push('-l', cell.user);
  if (cell.proxyJump) a.push('-J', cell.proxyJump);
  a.push('--', cell.host, command);
  return a;
}

export interface SessionResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** the remote command line and everything written to stdin */
  bytesSent: number;
}

export interface Session {
  result: Promise<SessionResult>;
  /** lines of stdout as they arrive */
  onLine(fn: (line: string) => void): void;
  /** the first stdout line that passes `test`, or null when the session ends without one */
  waitLine(test: (line: string) => boolean): Promise<string | null>;
  write(data: Buffer | string): void;
  /** end stdin */
  end(): void;
  kill(signal?: NodeJS.Signals): void;
}

/** Run the constant command on a cell; stdin stays open for write()/end() (or is `input`, then closed). */
export function runSession(cell: Cell, cfg: SshConfig, command: string, input: Buffer | null, timeoutMs: number): Session {
  const child = spawn(cfg.ssh ?? 'ssh', sshArgs(cell, cfg, command), { stdio: ['pipe', 'pipe', 'pipe'] });
  const listeners: ((l: string) => void)[] = [];
  let out = '';
  let err = '';
  let partial = '';
  let timedOut = false;
  let sent = Buffer.byteLength(command);
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (s: string) => {
    out += s;
    partial += s;
    let i: number;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      for (const fn of listeners) fn(line);
    }
  });
  child.stderr.on('data', (s: string) => { if (err.length < 65536) err += s; });
  child.stdin.on('error', () => { /* remote closed early: the exit status tells */ });
  const write = (data: Buffer | string) => { sent += Buffer.byteLength(data); child.stdin.write(data); };
  if (input) { write(input); child.stdin.end(); }
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
  const result = new Promise<SessionResult>((resolve) => {
    child.on('error', (e) => { err += String(e.message); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: out, stderr: err, timedOut, bytesSent: sent });
    });
  });
  return {
    result,
    onLine: (fn) => { listeners.push(fn); },
    waitLine: (test) => new Promise((resolve) => {
      const seen = out.split('\n').slice(0, -1).find(test);
      if (seen !== undefined) return resolve(seen);
      listeners.push((l) => { if (test(l)) resolve(l); });
      void result.then(() => resolve(null));
    }),
    write,
    end: () => { child.stdin.end(); },
    kill: (sig = 'SIGKILL') => { child.kill(sig); },
  };
}

/** A short reason from ssh's stderr (host key refused, connection refused, ...). */
export function sshFailureReason(stderr: string, code: number | null): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const key = lines.find((l) => /host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .*host key is known/i.test(l));
  if (key) return `host key not trusted: ${key}`;
  const last = lines.filter((l) => !/^Warning: Permanently added/.test(l)).pop();
  return last ? `ssh: ${last}` : `ssh exited with status ${code}`;
}
