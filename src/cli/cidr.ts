import type { Command } from 'commander';
import type { CliContext } from './main.js';

// placeholder until the owning stage lands; replaced by the real command
export function register(program: Command, ctx: CliContext): void {
  program.command('cidr').description('(not yet available)').allowUnknownOption().argument('[args...]').action(() => {
    ctx.stderr.write('cellwall: cidr is not implemented yet\n');
    ctx.setExit(1);
  });
}
