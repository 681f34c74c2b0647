import type { Command } from 'commander';
import type { CliContext } from './main.js';
import type { ExplainCliOptions } from '../compile/cli.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function register(program: Command, ctx: CliContext): void {
  program
    .command('explain')
    .description('verdict for one packet and the rule trace, evaluated on the compiled rules')
    .argument('<policy>', 'policy file (YAML or JSON)')
    .requiredOption('--segment <name>', 'the isolation segment')
    .requiredOption('--src <ip>', 'source address')
    .requiredOption('--dst <ip>', 'destination address')
    .option('--phase <phase>', 'running | staging (staging needs --member)', 'running')
    .option('--member <group>', 'the source is in this dynamic group\'s member set for --phase (repeatable)', collect)
    .option('--dst-member <group>', 'the destination is in this dynamic group\'s member set for --dst-phase (repeatable)', collect)
    .option('--dst-phase <phase>', 'running | staging: the phase of the destination\'s --dst-member sets (default running)')
    .option('--proto <proto>', 'tcp | udp | icmp | icmpv6', 'tcp')
    .option('--port <n>', 'destination port (tcp/udp)')
    .option('--type <n>', 'icmp type (default: echo request)')
    .option('--code <n>', 'icmp code (default 0)')
    .option('--established', 'the packet belongs to an ESTABLISHED/RELATED connection')
    .option('--json', 'print the verdict and trace as JSON')
    .action(async (policy: string, o: ExplainCliOptions) => {
      const { runExplain } = await import('../compile/cli.js');
      ctx.setExit(await runExplain(policy, o, ctx));
    });
}
