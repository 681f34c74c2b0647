import type { Command } from 'commander';
import type { CliContext } from './main.js';

export function register(program: Command, ctx: CliContext): void {
  program
    .command('validate')
    .description('check a policy (and the CF JSON files it names); list every error with file:line:col')
    .argument('<policy>', 'policy file (YAML or JSON)')
    .option('--json', 'print {ok, errors, warnings, summary} on stdout')
    .action(async (policy: string, o: { json?: boolean }) => {
      const { runValidate } = await import('../policy/validate.js');
      ctx.setExit(await runValidate(policy, o, ctx));
    });
}
