/**
 * `cellwall validate`: load the policy, add the compiler's checks when the
 * compiler provides them (src/compile/index.ts `checkPolicy`), report every
 * diagnostic. Returns the exit code (0 no errors, 1 errors).
 */
import { DiagnosticsError, formatDiagnostic, type Diagnostic } from '../errors.js';
import { loadPolicy } from './index.js';
import type { Policy } from './model.js';

export interface ValidateOutput { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }

export interface Summary {
  networks: number; securityGroups: number; asgRules: number; groups: number;
  segments: number; bindings: number; appRules: number; warnings: number; hash: string;
}

type CheckPolicy = (p: Policy) => Diagnostic[];

/** The compiler's checkPolicy, when the compile stage exists and exports it. */
async function compilerCheck(): Promise<CheckPolicy | undefined> {
  const spec = '../compile/index.js';
  try {
    const mod = (await import(spec)) as { checkPolicy?: unknown };
    return typeof mod.checkPolicy === 'function' ? (mod.checkPolicy as CheckPolicy) : undefined;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // only "the compile stage is not there"; any other failure is a bug worth seeing
    if (err?.code === 'ERR_MODULE_NOT_FOUND' && /compile[\\/]index\.js/.test(err.message)) return undefined;
    throw e;
  }
}

export function summarize(p: Policy, warnings: number): Summary {
  return {
    networks: p.networks.size,
    securityGroups: p.securityGroups.size,
    asgRules: [...p.securityGroups.values()].reduce((n, g) => n + g.rules.length, 0),
    groups: p.groups.size,
    segments: p.segments.size,
    bindings: p.bindings.length,
    appRules: p.policies.rules.length,
    warnings,
    hash: p.hash,
  };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export async function runValidate(file: string, opts: { json?: boolean }, out: ValidateOutput): Promise<number> {
  let diags: Diagnostic[];
  let summary: Summary | null = null;
  try {
    const policy = await loadPolicy(file);
    const check = await compilerCheck();
    diags = [...policy.warnings, ...(check ? check(policy) : [])];
    summary = summarize(policy, diags.filter((d) => d.severity === 'warning').length);
  } catch (e) {
    if (!(e instanceof DiagnosticsError)) throw e;
    diags = e.diagnostics;
  }
  const errors = diags.filter((d) => d.severity === 'error');
  const warnings = diags.filter((d) => d.severity === 'warning');
  const ok = errors.length === 0;
  if (opts.json) {
    out.stdout.write(`${JSON.stringify({ ok, errors, warnings, summary: ok ? summary : null }, null, 2)}\n`);
    return ok ? 0 : 1;
  }
  for (const d of diags) out.stderr.write(`${formatDiagnostic(d)}\n`);
  if (ok && summary) {
    const s = summary;
    out.stdout.write(`${file}: ok: ${plural(s.networks, 'network')}, ${plural(s.securityGroups, 'security group')} (${plural(s.asgRules, 'rule')}), `
      + `${plural(s.groups, 'group')}, ${plural(s.segments, 'segment')}, ${plural(s.bindings, 'binding')}, ${plural(s.appRules, 'app rule')}, `
      + `${plural(s.warnings, 'warning')}\n`);
  } else {
    out.stderr.write(`cellwall: ${file}: ${plural(errors.length, 'error')}, ${plural(warnings.length, 'warning')}\n`);
  }
  return ok ? 0 : 1;
}
