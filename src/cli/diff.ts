import type { Command } from 'commander';
import { CellwallError } from '../errors.js';
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
    .option('--backend <backend>', 'with --live: iptables, nft (reads table inet cellwall with nft -j) or ebpf (reads the maps of the applied generation)', 'iptables')
    .option('--iptables <variant>', 'with --live: auto, nft or legacy', 'auto')
    .option('--state-dir <dir>', 'with --live: state dir holding the pinned iptables variant (ebpf: the applied generation and members)')
    .action(async (oldPath: string, newPath: string | undefined, o: DiffCliOptions) => {
      if (o.backend === 'ebpf') {
        if (newPath) throw new CellwallError('diff --live compares ONE policy or bundle with this cell: give only OLD');
        const { runDiffEbpf } = await import('../diff/ebpf.js');
        ctx.setExit(await runDiffEbpf(oldPath, o, ctx));
        return;
      }
      const { runDiff } = await import('../diff/cli.js');
      ctx.setExit(await runDiff(oldPath, newPath, o, ctx));
    });
}
