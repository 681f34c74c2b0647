/**
 * CLI entry. Commands live one per file in src/cli/<name>.ts and export
 * `register(program, ctx)`. Command files stay thin: they parse options and
 * call into src/<stage>/ through a dynamic import so that a quick command
 * (`cidr aggregate`) does not pay for loading the whole compiler.
 */
import { Command, CommanderError } from 'commander';
import { CellwallError } from '../errors.js';
import { register as registerCidr } from './cidr.js';
import { register as registerValidate } from './validate.js';
import { register as registerCompile } from './compile.js';
import { register as registerExplain } from './explain.js';
import { register as registerPush } from './push.js';
import { register as registerApply } from './apply.js';
import { register as registerMembers } from './members.js';
import { register as registerDiff } from './diff.js';

export interface CliContext {
  /** Set the process exit code for the running command (0 ok, 2 changes, 1 error). */
  setExit(code: number): void;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const ctx: CliContext = {
    setExit(code) { exitCode = code; },
    stdout: process.stdout,
    stderr: process.stderr,
  };
  const program = new Command();
  program
    .name('cellwall')
    .description('Compile egress policies for multi-tenant platforms into optimised iptables/ipset payloads')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError(false)
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  registerCidr(program, ctx);
  registerValidate(program, ctx);
  registerCompile(program, ctx);
  registerExplain(program, ctx);
  registerPush(program, ctx);
  registerApply(program, ctx);
  registerMembers(program, ctx);
  registerDiff(program, ctx);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    return reportError(e);
  }
  return exitCode;
}

function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    // help and version exit 0; usage errors were already printed by commander
    return e.exitCode === 0 ? 0 : 1;
  }
  if (e instanceof CellwallError) {
    process.stderr.write(`cellwall: ${e.message}\n`);
    return e.exitCode;
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.path && ['ENOENT', 'EACCES', 'EISDIR', 'ENOTDIR'].includes(err.code)) {
    process.stderr.write(`cellwall: ${err.path}: ${err.code === 'ENOENT' ? 'no such file or directory' : err.message}\n`);
    return 1;
  }
  process.stderr.write(`cellwall: internal error (a bug, please report): ${err?.stack ?? String(e)}\n`);
  return 1;
}
