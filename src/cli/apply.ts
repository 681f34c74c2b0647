import type { Command } from 'commander';
import { CellwallError } from '../errors.js';
import type { CliContext } from './main.js';

interface ApplyCliOptions {
  segment?: string;
  payload?: string;
  dryRun?: boolean;
  watch?: string;
  backend?: string;
  iptables?: string;
  stateDir?: string;
  lockTimeout?: string;
  json?: boolean;
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('apply')
    .description('atomically apply a segment\'s compiled policy on this cell (root); verify, roll back on failure')
    .argument('[policy]', 'policy file (YAML or JSON)')
    .option('--segment <name>', 'the segment this cell belongs to')
    .option('--payload <dir>', 'apply an already compiled payload (`cellwall compile --out DIR`) instead of POLICY')
    .option('--dry-run', 'print the plan; exit 0 when nothing would change, 2 when something would')
    .option('--watch <seconds>', 'stay running and reconcile drift every SECONDS (SIGTERM stops)')
    .option('--backend <backend>', 'iptables, or nft (one `nft -f` transaction into table inet cellwall)', 'iptables')
    .option('--iptables <variant>', 'iptables variant: auto (detect, then pinned in the state dir), nft or legacy', 'auto')
    .option('--state-dir <dir>', 'state dir (lock, journal, manifest); default $CELLWALL_STATE_DIR or /run/cellwall')
    .option('--lock-timeout <seconds>', 'how long to wait for another apply on this cell', '120')
    .option('--json', 'machine-readable result')
    .action(async (policy: string | undefined, o: ApplyCliOptions) => {
      if (o.backend !== 'iptables' && o.backend !== 'nft') throw new CellwallError(`--backend ${o.backend}: apply supports the iptables and nft backends (expected iptables or nft)`);
      if (!o.payload && !policy) throw new CellwallError('apply: give a POLICY file (with --segment) or --payload DIR');
      if (policy && !o.payload && !o.segment) throw new CellwallError('apply: --segment is required with a POLICY file');
      const lockTimeout = Number(o.lockTimeout);
      if (!Number.isFinite(lockTimeout) || lockTimeout < 0) throw new CellwallError(`--lock-timeout: expected seconds >= 0, got "${o.lockTimeout}"`);
      const { runApplyCommand } = await import('../apply/cli.js');
      ctx.setExit(await runApplyCommand({ ...o, policy, lockTimeout }, ctx));
    });
}
