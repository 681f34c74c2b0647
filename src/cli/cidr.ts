import type { Command } from 'commander';
import type { CliContext } from './main.js';
import type { CidrOptions } from '../core/cidrtool.js';

function common(cmd: Command, reduce: boolean): Command {
  if (reduce) {
    cmd.option('--reduce <N>', 'prefix-length reduction (like iprange --ipset-reduce N): at most N% more entries')
      .option('--reduce-entries <N>', 'with --reduce: growth up to N entries is always accepted (iprange --ipset-reduce-entries)')
      .option('--bare-hosts', 'write single hosts without /32 or /128 (as iprange does)');
  }
  return cmd
    .option('--skip-invalid', 'skip malformed lines (still warn on stderr)')
    .option('--no-strict', 'mask host bits of CIDRs (10.0.0.1/8 -> 10.0.0.0/8) instead of rejecting them')
    .option('--json', 'print a JSON report on stdout');
}

export function register(program: Command, ctx: CliContext): void {
  const cidr = program.command('cidr').description('the address core as a Unix tool: one entry per line in, one CIDR per line out');
  const io = { stdout: ctx.stdout, stderr: ctx.stderr };
  common(cidr.command('aggregate').description('minimal sorted CIDR list of the union of the inputs (v4 first, then v6)')
    .argument('[files...]', 'input files (stdin when none, or "-")'), true)
    .action(async (files: string[], o: CidrOptions) => {
      const { aggregate } = await import('../core/cidrtool.js');
      ctx.setExit(aggregate(files, o, io));
    });
  common(cidr.command('exclude').description('A minus B as a minimal CIDR list')
    .argument('<a>', 'file of entries (or "-")').argument('<b>', 'file of entries to remove'), true)
    .action(async (a: string, b: string, o: CidrOptions) => {
      const { exclude } = await import('../core/cidrtool.js');
      ctx.setExit(exclude(a, b, o, io));
    });
  common(cidr.command('contains').description('print the CIDR of SET\'s aggregate holding each ADDR; exit 1 when any is outside')
    .argument('<set>', 'file of entries (or "-")').argument('<addrs...>', 'addresses to look up'), false)
    .action(async (set: string, addrs: string[], o: CidrOptions) => {
      const { contains } = await import('../core/cidrtool.js');
      ctx.setExit(contains(set, addrs, o, io));
    });
}
