/**
 * Plan -> `iptables-restore --noflush` / `ip6tables-restore --noflush` payload
 * for the filter table. Touches only CW- chains (`:CW-X - [0:0]` creates or
 * flushes just that chain) and inserts one jump at FORWARD position 1: loading
 * the payload twice inserts the jump twice, so the applier removes an existing
 * jump first (see manifest.apply).
 *
 * Matches are written in iptables-save's canonical order and form
 * (`-p tcp -m tcp --dport`, `-m icmp --icmp-type`) so live rules read back
 * with `iptables-save` compare line by line.
 */
import type { Family } from '../core/index.js';
import type { FamilyPlan, Plan, PlanMatch, PlanRule, PlanSet, PlanTarget } from '../compile/plan.js';
import { locText } from '../compile/util.js';
import { commentLine, iptQuote } from './quote.js';

export const LOG_LIMIT = '-m limit --limit 10/min --limit-burst 5';

export function renderIptables(plan: Plan, family: Family): string {
  const fp = plan.families[family];
  const sets = new Map(fp.sets.map((s) => [s.name, s]));
  const lines: string[] = [
    commentLine(`cellwall ${plan.cellwallVersion} segment ${plan.segment} IPv${family} policy ${plan.policyHash}`),
    commentLine(`load with: ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush (after ipset restore)`),
    '*filter',
  ];
  for (const c of fp.chains) lines.push(`:${c.name} - [0:0]`);
  lines.push(forwardJump(plan, fp));
  for (const c of fp.chains) {
    for (const r of c.rules) lines.push(`-A ${c.name} ${ruleText(plan, family, r, sets)}`);
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The one rule outside CW- chains. */
export function forwardJump(plan: Plan, fp: FamilyPlan): string {
  return `-I FORWARD 1 -m comment --comment ${iptQuote(plan.jumpComment)} -j ${fp.top}`;
}

/** The rule's text after `-A CHAIN` (concatenated, not joined: one copy when the payload's lines are joined). */
export function ruleText(plan: Plan, family: Family, r: PlanRule, sets: Map<string, PlanSet>): string {
  let t = matchText(family, r.match, sets);
  if (r.target.kind === 'log') t += `${LOG_LIMIT} `;
  return `${t}-m comment --comment ${iptQuote(ruleComment(plan, r))} ${targetText(plan, family, r.target)}`;
}

export function ruleComment(plan: Plan, r: PlanRule): string {
  const where = r.locs.length ? locText(r.locs[0], plan.policyFile) + ' ' : '';
  const more = r.locs.length > 1 ? ` (+${r.locs.length - 1} more)` : '';
  return `${where}${r.what}${more}`;
}

/** the match options, each followed by a space ('' for none) */
function matchText(family: Family, m: PlanMatch, sets: Map<string, PlanSet>): string {
  let out = '';
  if (m.proto) {
    const icmp = m.proto === 'icmp' || m.proto === 'icmpv6';
    out += `-p ${m.proto === 'icmpv6' ? 'ipv6-icmp' : m.proto} `;
    if (icmp && m.icmp && m.icmp.type !== -1) {
      const t = m.icmp.code === -1 ? `${m.icmp.type}` : `${m.icmp.type}/${m.icmp.code}`;
      out += family === 4 ? `-m icmp --icmp-type ${t} ` : `-m icmp6 --icmpv6-type ${t} `;
    }
    if (!icmp && m.dports && m.dports.length) {
      const one = m.dports.length === 1;
      const spec = m.dports.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}:${p.to}`)).join(',');
      out += one ? `-m ${m.proto} --dport ${spec} ` : `-m multiport --dports ${spec} `;
    }
  }
  if (m.src) out += `${setMatch(m.src.set, 'src', m.src.negate, sets)} `;
  if (m.dst) out += `${setMatch(m.dst.set, 'dst', m.dst.negate, sets)} `;
  if (m.ctstate) out += `-m conntrack --ctstate ${m.ctstate} `;
  return out;
}

function setMatch(name: string, dir: 'src' | 'dst', negate: boolean | undefined, sets: Map<string, PlanSet>): string {
  const s = sets.get(name);
  if (!s) throw new Error(`render: rule references unknown set ${name}`);
  const flags = s.kind.type === 'net,port' ? `${dir},${dir}` : dir;
  return `-m set ${negate ? '! ' : ''}--match-set ${name} ${flags}`;
}

function targetText(plan: Plan, family: Family, t: PlanTarget): string {
  switch (t.kind) {
    case 'allow':
      return plan.mode === 'enforce' ? '-j ACCEPT' : '-j RETURN';
    case 'goto':
      return `-g ${t.chain}`;
    case 'log':
      return `-j LOG --log-prefix ${iptQuote(t.prefix, 29)}`;
    case 'reject':
      if (t.with === 'tcp-reset') return '-j REJECT --reject-with tcp-reset';
      return `-j REJECT --reject-with ${family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable'}`;
    case 'drop':
      return '-j DROP';
  }
}

/** The kernel target a plan target becomes, for traces. */
export function kernelTarget(plan: Plan, family: Family, t: PlanTarget): string {
  return targetText(plan, family, t).replace(/^-[jg] /, '');
}
