import type { Command } from 'commander';
import type { CliContext } from './main.js';
import type { CompileCliOptions } from '../compile/cli.js';

export function register(program: Command, ctx: CliContext): void {
  program
    .command('compile')
    .description('compile a segment into ipset.restore, iptables.v4, iptables.v6 and manifest.json')
    .argument('<policy>', 'policy file (YAML or JSON)')
    .requiredOption('--segment <name>', 'the isolation segment to compile')
    .option('--out <dir>', 'write the payloads and manifest.json into this folder')
    .option('--backend <name>', 'iptables, nft (adds ruleset.nft) or ebpf (adds cellwall.bpf.o, cellwall-stateless.bpf.o and maps.json)', 'iptables')
    .option('--print', 'print the payloads on stdout')
    .option('--json', 'print a JSON summary on stdout')
    .action(async (policy: string, o: CompileCliOptions) => {
      const { runCompile } = await import('../compile/cli.js');
      ctx.setExit(await runCompile(policy, o, ctx));
    });
}
