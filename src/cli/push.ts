import { Command, Option } from 'commander';
import type { CliContext } from './main.js';

export function register(program: Command, ctx: CliContext): void {
  program.command('push')
    .description('roll a policy out to a fleet of cells over SSH (canaries first, bounded concurrency)')
    .argument('<policy>', 'policy file (YAML or JSON)')
    .requiredOption('--inventory <file>', 'cells: cellwall YAML inventory or `bosh instances --json` output')
    .option('--dry-run', 'show what would change on each cell (exit 2 when any would change)', false)
    .option('--canaries <n>', 'cells pushed first; the rollout stops when one fails', '1')
    .option('--max-in-flight <n>', 'cells changed at once: a number or a percentage (25%)', '1')
    .addOption(new Option('--backend <b>', 'backend: iptables (ipset + iptables-restore) or nft (one nft -f transaction of table inet cellwall)').choices(['iptables', 'nft']).default('iptables'))
    .option('--bundles <dir>', 'use precompiled bundles DIR/<segment>/ instead of compiling')
    .option('--accept-new-host-keys', 'trust (and record) host keys of cells not yet in known_hosts', false)
    .option('--user <user>', 'ssh user when the inventory names none')
    .option('--identity-file <file>', 'ssh identity when the inventory names none')
    .option('--known-hosts <file>', 'known_hosts file when the inventory names none')
    .option('--proxy-jump <spec>', 'ssh ProxyJump when the inventory names none')
    .option('--connect-timeout <s>', 'ssh connect timeout, seconds', '10')
    .option('--timeout <s>', 'overall per-cell timeout, seconds', '120')
    .option('--no-compress', 'send the bundle uncompressed')
    .option('--no-fast-path', 'always send the bundle (the cell then compares its full live state, every set entry), instead of first asking for its record and a cheap fingerprint')
    .option('--json', 'print a machine-readable report', false)
    .action(async (policy: string, o: Record<string, string | boolean | undefined>) => {
      const { push } = await import('../fleet/push.js');
      const { CellwallError } = await import('../errors.js');
      const num = (name: string, v: unknown) => {
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0 || !/^\d+$/.test(String(v))) throw new CellwallError(`--${name}: expected a whole number, got "${v}"`);
        return n;
      };
      const { exitCode } = await push({
        policyFile: policy,
        inventoryFile: String(o.inventory),
        dryRun: Boolean(o.dryRun),
        canaries: num('canaries', o.canaries),
        maxInFlight: String(o.maxInFlight),
        backend: o.backend as 'iptables' | 'nft' | undefined,
        json: Boolean(o.json),
        acceptNewHostKeys: Boolean(o.acceptNewHostKeys),
        connectTimeoutSec: Math.max(1, num('connect-timeout', o.connectTimeout)),
        cellTimeoutSec: Math.max(1, num('timeout', o.timeout)),
        compress: o.compress !== false,
        fastPath: o.fastPath !== false,
        bundlesDir: o.bundles as string | undefined,
        user: o.user as string | undefined,
        identityFile: o.identityFile as string | undefined,
        knownHosts: o.knownHosts as string | undefined,
        proxyJump: o.proxyJump as string | undefined,
      }, {
        stdout: ctx.stdout,
        stderr: ctx.stderr as NodeJS.WritableStream & { isTTY?: boolean },
        onInterrupt: (fn) => {
          const h = () => fn();
          process.on('SIGINT', h);
          return () => { process.off('SIGINT', h); };
        },
      });
      ctx.setExit(exitCode);
    });
}
