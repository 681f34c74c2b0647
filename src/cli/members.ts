import type { Command } from 'commander';
import { CellwallError } from '../errors.js';
import type { CliContext } from './main.js';

interface MembersCliOptions { phase: string; backend: string; stateDir?: string; json?: boolean }

export function register(program: Command, ctx: CliContext): void {
  program
    .command('members')
    .description('dynamic group membership on this cell: add|del|list GROUP [IP...]')
    .argument('<action>', 'add, del or list')
    .argument('<group>', 'a dynamic group of the applied policy')
    .argument('[addresses...]', 'IPv4/IPv6 addresses or CIDRs (add, del)')
    .option('--phase <phase>', 'running or staging', 'running')
    .option('--backend <backend>', 'backend the policy was applied with (iptables, nft or ebpf)', 'iptables')
    .option('--state-dir <dir>', 'ebpf: state dir of the apply (members are kept there); default $CELLWALL_STATE_DIR or /run/cellwall')
    .option('--json', 'machine-readable result')
    .action(async (action: string, group: string, addresses: string[], o: MembersCliOptions) => {
      if (action !== 'add' && action !== 'del' && action !== 'list') throw new CellwallError(`members: unknown action "${action}" (expected add, del or list)`);
      if (o.phase !== 'running' && o.phase !== 'staging') throw new CellwallError(`--phase: expected running or staging, got "${o.phase}"`);
      if (o.backend !== 'iptables' && o.backend !== 'nft' && o.backend !== 'ebpf') throw new CellwallError(`--backend ${o.backend}: expected iptables, nft or ebpf`);
      const { runMembers } = await import('../members/index.js');
      const log = (line: string): void => { ctx.stderr.write(`cellwall: ${line}\n`); };
      const r = await runMembers({ action, group, phase: o.phase, addresses, backend: o.backend, stateDir: o.stateDir, log });
      if (o.json) ctx.stdout.write(JSON.stringify(r) + '\n');
      else if (action === 'list') ctx.stdout.write(r.members.map((m) => m + '\n').join(''));
      else {
        const how = r.ebpf ? (r.ebpf.path === 'lpm' ? ` (${r.ebpf.updates} LPM update(s) in the live maps of ${r.ebpf.generation})` : ` (new generation ${r.ebpf.generation})`) : '';
        ctx.stdout.write(`${action === 'add' ? 'added' : 'removed'} ${r.members.length} ${r.phase} member(s) of ${r.group}${how}\n`);
      }
    });
}
