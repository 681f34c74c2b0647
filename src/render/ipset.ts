/**
 * Plan -> `ipset restore` payload for both families.
 *
 * Every line carries -exist: loading twice is harmless. Content-addressed sets
 * (cw4n-/cw4p-/cw4l-...) have a name derived from their content, so an
 * existing set of that name already holds these entries; sets are never
 * flushed (a flush would open a window in which live rules see an empty set).
 * Dynamic member sets are created empty when missing and otherwise left alone.
 * Removing sets no longer referenced is the applier's job.
 *
 * hash:net cannot hold a /0: 0.0.0.0/0 and ::/0 are written as two /1.
 */
import type { AddrSet, Family } from '../core/index.js';
import { DYNAMIC_SET, type Plan, type PlanSet } from '../compile/plan.js';
import { commentLine } from './quote.js';

/** the CIDRs a hash:net set holds for these addresses (minimal cover, /0 split) */
export function ipsetCidrs(addrs: AddrSet, f: Family): string[] {
  const text = ipsetCidrText(addrs, f);
  return text === '' ? [] : text.slice(0, -1).split('\n');
}

/** ipsetCidrs as one '\n'-terminated string */
function ipsetCidrText(addrs: AddrSet, f: Family): string {
  const text = addrs.cidrText(f);
  if (text === '0.0.0.0/0\n') return '0.0.0.0/1\n128.0.0.0/1\n';
  if (text === '::/0\n') return '::/1\n8000::/1\n';
  return text;
}

export function renderIpset(plan: Plan): string {
  const lines: string[] = [
    commentLine(`cellwall ${plan.cellwallVersion} segment ${plan.segment} policy ${plan.policyHash}`),
    commentLine('load with: ipset restore (before iptables-restore / ip6tables-restore)'),
  ];
  for (const f of [4, 6] as const) for (const s of plan.families[f].sets) renderSet(s, lines);
  lines.push('');
  return lines.join('\n');
}

function familyWord(f: Family): string {
  return f === 4 ? 'inet' : 'inet6';
}

function renderSet(s: PlanSet, out: string[]): void {
  const k = s.kind;
  switch (k.type) {
    case 'dynamic':
      out.push(`create ${s.name} ${DYNAMIC_SET.type} family ${familyWord(s.family)} hashsize ${DYNAMIC_SET.hashsize} maxelem ${DYNAMIC_SET.maxelem} -exist`);
      return;
    case 'net':
      out.push(`create ${s.name} hash:net family ${familyWord(s.family)} hashsize ${s.hashsize} maxelem ${s.maxelem} -exist`);
      addLines(out, s.name, ipsetCidrText(k.addrs, s.family), ' -exist');
      return;
    case 'net,port':
      out.push(`create ${s.name} hash:net,port family ${familyWord(s.family)} hashsize ${s.hashsize} maxelem ${s.maxelem} -exist`);
      for (const e of k.byPort) addLines(out, s.name, ipsetCidrText(e.addrs, s.family), `,${e.proto}:${e.port} -exist`);
      return;
    case 'list':
      out.push(`create ${s.name} list:set size ${s.maxelem} -exist`);
      for (const m of k.members) out.push(`add ${s.name} ${m} -exist`);
      return;
  }
}

/** `add NAME <entry><suffix>` for every line of a '\n'-terminated text, with one native replace (millions of lines at CF scale) */
function addLines(out: string[], name: string, text: string, suffix: string): void {
  if (text) out.push(`add ${name} ${text.slice(0, -1).replaceAll('\n', `${suffix}\nadd ${name} `)}${suffix}`);
}
