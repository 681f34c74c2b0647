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
  bpffs?: string;
  devices?: string;
  fill?: string;
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
    .option('--backend <backend>', 'iptables, nft (one `nft -f` transaction into table inet cellwall) or ebpf (tc classifier, policy in LPM maps)', 'iptables')
    .option('--iptables <variant>', 'iptables variant: auto (detect, then pinned in the state dir), nft or legacy', 'auto')
    .option('--bpffs <dir>', 'ebpf: bpffs directory cellwall owns for its program generations (default /sys/fs/bpf/cellwall)')
    .option('--devices <globs>', 'ebpf: container-facing interfaces to attach to (tc ingress), comma-separated names or globs (default "s-*", silk\'s host-side veths)')
    .option('--fill <method>', 'ebpf: map fill path, syscall (BPF_MAP_UPDATE_BATCH via python3, falls back to bpftool) or bpftool', 'syscall')
    .option('--state-dir <dir>', 'state dir (lock, journal, manifest); default $CELLWALL_STATE_DIR or /run/cellwall')
    .option('--lock-timeout <seconds>', 'how long to wait for another apply on this cell', '120')
    .option('--json', 'machine-readable result')
    .action(async (policy: string | undefined, o: ApplyCliOptions) => {
      if (o.backend !== 'iptables' && o.backend !== 'nft' && o.backend !== 'ebpf') throw new CellwallError(`--backend ${o.backend}: expected iptables, nft or ebpf`);
      if (o.backend !== 'ebpf' && (o.bpffs !== undefined || o.devices !== undefined)) throw new CellwallError('--bpffs and --devices go with --backend ebpf');
      if (o.fill !== 'syscall' && o.fill !== 'bpftool') throw new CellwallError(`--fill: expected syscall or bpftool, got "${o.fill}"`);
      if (!o.payload && !policy) throw new CellwallError('apply: give a POLICY file (with --segment) or --payload DIR');
      if (policy && !o.payload && !o.segment) throw new CellwallError('apply: --segment is required with a POLICY file');
      const lockTimeout = Number(o.lockTimeout);
      if (!Number.isFinite(lockTimeout) || lockTimeout < 0) throw new CellwallError(`--lock-timeout: expected seconds >= 0, got "${o.lockTimeout}"`);
      const { runApplyCommand } = await import('../apply/cli.js');
      ctx.setExit(await runApplyCommand({ ...o, policy, lockTimeout }, ctx));
    });
}
