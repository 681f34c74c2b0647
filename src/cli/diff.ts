import type { Command } from 'commander';
import type { CliContext } from './main.js';
import type { DiffCliOptions } from '../diff/cli.js';

export function register(program: Command, ctx: CliContext): void {
  program
    .command('diff')
    .description('what traffic changes verdict between two policies or bundles, or a policy/bundle and this cell (--live); exit 0 equal, 2 different')
    .argument('<old>', 'policy file (YAML or JSON) or a `compile --out` folder')
    .argument('[new]', 'policy file or `compile --out` folder (not with --live)')
    .option('--live', 'compare OLD with this cell\'s netns (iptables-save, ipset save; with --backend nft: nft -j list table inet cellwall)')
    .option('--segment <name>', 'the segment to compare (default: every segment present in both)')
    .option('--text', 'also print the changed payload lines (unified style, no context)')
    .option('--json', 'machine-readable result')
    .option('--backend <backend>', 'with --live: iptables, or nft (reads table inet cellwall with nft -j)', 'iptables')
    .option('--iptables <variant>', 'with --live: auto, nft or legacy', 'auto')
    .option('--state-dir <dir>', 'with --live: state dir holding the pinned iptables variant')
    .action(async (oldPath: string, newPath: string | undefined, o: DiffCliOptions) => {
      const { runDiff } = await import('../diff/cli.js');
      ctx.setExit(await runDiff(oldPath, newPath, o, ctx));
    });
}
