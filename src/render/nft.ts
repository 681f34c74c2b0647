/**
 * Plan -> one `nft -f` script (`ruleset.nft`) for both families and every set,
 * applied by the kernel as ONE transaction: there is no moment without rules.
 *
 * Everything lives in `table inet cellwall`. The script never deletes the
 * table, because dynamic member sets (`cellwall members`) live in it and a
 * delete would lose their members. Instead, in one file (= one transaction):
 *  1. declare the table, every set WITHOUT elements and every chain (creates
 *     what is missing; an existing dynamic set keeps its members);
 *  2. flush our base chain and every chain of this plan;
 *  3. add the elements of the sets compile fills, and refill the chains.
 * Sets are never flushed (as with ipset): their names are content-addressed,
 * so an existing set of that name already holds exactly these elements and
 * adding them again changes nothing (and is ~5x faster at CF scale than a
 * flush and refill of big interval sets in one transaction).
 * Content-addressed sets of an older policy that no rule references any more,
 * and chains of an older plan, stay behind unreferenced (as with ipset);
 * removing them is the applier's job. See docs/nft.md.
 *
 * Meaning (SPEC §2) is the iptables backend's, rule for rule: the same chains
 * (suffixed with the family, as one inet table holds both), the same order,
 * `goto` for -g, `return` for RETURN (tighten) and `accept` for ACCEPT
 * (enforce), rate-limited `log` that falls through when over the limit like
 * -m limit -j LOG, `reject with tcp reset` / `reject with icmpx type
 * port-unreachable`, `drop`. A list:set match becomes one rule per member
 * set (positive match) or all members negated in one rule (negative match).
 * Every rule has a counter and a comment tracing it to the policy.
 */
import type { AddrSet, Family } from '../core/index.js';
import type { FamilyPlan, Plan, PlanMatch, PlanRule, PlanSet, PlanTarget, SetMatch } from '../compile/plan.js';
import { LOG_LIMIT, ruleComment } from './iptables.js';
import { commentLine, sanitizeText } from './quote.js';

export const NFT_TABLE = 'cellwall';
export const NFT_FAMILY = 'inet';
/** our base chain in the table */
export const NFT_BASE_CHAIN = 'forward';
/** nft's comment limit (NFT_USERDATA_MAXLEN): 128 bytes */
const COMMENT_MAX = 127;

/** same rate and burst as the iptables LOG rules (LOG_LIMIT) */
const [, LOG_RATE, LOG_BURST] = /--limit (\d+)\/min --limit-burst (\d+)/.exec(LOG_LIMIT) ?? [, '10', '5'];
export const NFT_LOG_LIMIT = `limit rate ${LOG_RATE}/minute burst ${LOG_BURST} packets`;

/**
 * A double-quoted nft string. nft has no escapes inside quotes: `"` and `\`
 * are replaced (by `'` and `/`), control characters and non-ASCII by sanitizeText.
 */
export function nftQuote(s: string, max = COMMENT_MAX): string {
  return `"${sanitizeText(s, max).replace(/"/g, "'").replace(/\\/g, '/')}"`;
}

/** the nft chain holding plan chain `name` of family `f` (one inet table holds both families) */
export function nftChainName(name: string, f: Family): string {
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`render nft: chain name ${JSON.stringify(name)} is not an nft identifier`);
  return `${name}-v${f}`;
}

function checkIdent(name: string): string {
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`render nft: name ${JSON.stringify(name)} is not an nft identifier`);
  return name;
}

const addrType = (f: Family) => (f === 4 ? 'ipv4_addr' : 'ipv6_addr');
const addrKey = (f: Family) => (f === 4 ? 'ip' : 'ip6');

function setType(s: PlanSet): string {
  return s.kind.type === 'net,port' ? `${addrType(s.family)} . inet_proto . inet_service` : addrType(s.family);
}

/** `set NAME { type ...; flags interval; }` plus elements when given */
function setDecl(s: PlanSet, elements?: string[]): string {
  const head = `  set ${checkIdent(s.name)} {\n    type ${setType(s)}; flags interval;\n    comment ${nftQuote(s.what)}`;
  if (!elements) return `${head}\n  }`;
  return `${head}\n    elements = {\n      ${elements.join(',\n      ')}\n    }\n  }`;
}

function cidrs(addrs: AddrSet, f: Family): string[] {
  return addrs.toCidrs(f);
}

/** the elements compile puts in a set, or null for a set nft does not hold (list, dynamic) */
function setElements(s: PlanSet): string[] | null {
  const k = s.kind;
  switch (k.type) {
    case 'net':
      return cidrs(k.addrs, s.family);
    case 'net,port': {
      const out: string[] = [];
      for (const e of k.byPort) {
        const suffix = ` . ${e.proto} . ${e.port}`;
        for (const c of cidrs(e.addrs, s.family)) out.push(c + suffix);
      }
      return out;
    }
    case 'list':
    case 'dynamic':
      return null;
  }
}

export function renderNft(plan: Plan): string {
  const fams = [plan.families[4], plan.families[6]];
  const sets = fams.flatMap((fp) => fp.sets).filter((s) => s.kind.type !== 'list');
  const filled = sets.filter((s) => s.kind.type !== 'dynamic');
  const chains = fams.flatMap((fp) => fp.chains.map((c) => nftChainName(c.name, fp.family)));
  const ref = `${NFT_FAMILY} ${NFT_TABLE}`;
  const base = `    type filter hook forward priority filter; policy accept;`;
  const out: string[] = [
    commentLine(`cellwall ${plan.cellwallVersion} segment ${plan.segment} (${plan.mode}) policy ${plan.policyHash}`),
    commentLine('load with: nft -f ruleset.nft (one transaction: both families and all sets)'),
    commentLine('1. declare (creates what is missing; dynamic member sets keep their members)'),
    `table ${ref} {`,
    ...sets.map((s) => setDecl(s)),
    `  chain ${NFT_BASE_CHAIN} {\n${base}\n  }`,
    ...chains.map((c) => `  chain ${c} {\n  }`),
    '}',
    commentLine('2. flush our chains (sets are content-addressed: never flushed; dynamic member sets keep their members)'),
    `flush chain ${ref} ${NFT_BASE_CHAIN}`,
    ...chains.map((c) => `flush chain ${ref} ${c}`),
    commentLine('3. fill the sets (same name = same elements: adding them again changes nothing) and the chains'),
    `table ${ref} {`,
    ...filled.map((s) => setDecl(s, setElements(s)!)),
    `  chain ${NFT_BASE_CHAIN} {\n${base}`,
    ...fams.map(
      (fp) => `    meta nfproto ipv${fp.family} counter jump ${nftChainName(fp.top, fp.family)} comment ${nftQuote(plan.jumpComment)}`,
    ),
    '  }',
  ];
  for (const fp of fams) {
    const byName = new Map(fp.sets.map((s) => [s.name, s]));
    for (const c of fp.chains) {
      out.push(`  chain ${nftChainName(c.name, fp.family)} {`);
      for (const r of c.rules) for (const line of nftRules(plan, fp, r, byName)) out.push(`    ${line}`);
      out.push('  }');
    }
  }
  out.push('}', '');
  return out.join('\n');
}

/** the member sets a set match stands for (a list:set is the union of its members) */
function leafSets(name: string, sets: Map<string, PlanSet>): PlanSet[] {
  const s = sets.get(name);
  if (!s) throw new Error(`render nft: rule references unknown set ${name}`);
  return s.kind.type === 'list' ? s.kind.members.flatMap((m) => leafSets(m, sets)) : [s];
}

/**
 * The match expressions for one set match, one alternative per entry: a rule
 * is emitted once per alternative (a positive list match is an OR of its
 * members; a negative one an AND, so a single alternative).
 */
function setAlternatives(f: Family, m: SetMatch, dir: 'saddr' | 'daddr', sets: Map<string, PlanSet>): string[] {
  const op = m.negate ? '!= ' : '';
  const exprs = leafSets(m.set, sets).map((s) => {
    const key = s.kind.type === 'net,port' ? `${addrKey(f)} ${dir} . meta l4proto . th dport` : `${addrKey(f)} ${dir}`;
    return `${key} ${op}@${s.name}`;
  });
  return m.negate ? [exprs.join(' ')] : exprs;
}

function protoExprs(f: Family, m: PlanMatch): string[] {
  if (!m.proto) return [];
  if (m.proto === 'icmp' || m.proto === 'icmpv6') {
    const kw = f === 4 ? 'icmp' : 'icmpv6';
    const l4 = `meta l4proto ${f === 4 ? 'icmp' : 'ipv6-icmp'}`;
    if (!m.icmp || m.icmp.type === -1) return [l4];
    const out = [`${kw} type ${m.icmp.type}`];
    if (m.icmp.code !== -1) out.push(`${kw} code ${m.icmp.code}`);
    return out;
  }
  if (!m.dports || m.dports.length === 0) return [`meta l4proto ${m.proto}`];
  const ports = m.dports.map((p) => (p.from === p.to ? `${p.from}` : `${p.from}-${p.to}`));
  return [`${m.proto} dport ${ports.length === 1 ? ports[0] : `{ ${ports.join(', ')} }`}`];
}

/** one plan rule -> one or more nft rule lines (more only for a positive list:set match) */
export function nftRules(plan: Plan, fp: FamilyPlan, r: PlanRule, sets: Map<string, PlanSet>): string[] {
  const f = fp.family;
  const m = r.match;
  const srcAlts = m.src ? setAlternatives(f, m.src, 'saddr', sets) : [''];
  const dstAlts = m.dst ? setAlternatives(f, m.dst, 'daddr', sets) : [''];
  const fixed = protoExprs(f, m);
  const ct = m.ctstate ? ['ct state established,related'] : [];
  const tail = [
    ...(r.target.kind === 'log' ? [NFT_LOG_LIMIT] : []),
    'counter',
    target(plan, f, r.target),
    `comment ${nftQuote(ruleComment(plan, r))}`,
  ];
  const out: string[] = [];
  for (const s of srcAlts) {
    for (const d of dstAlts) out.push([...fixed, s, d, ...ct, ...tail].filter((x) => x).join(' '));
  }
  return out;
}

function target(plan: Plan, f: Family, t: PlanTarget): string {
  switch (t.kind) {
    case 'allow':
      return plan.mode === 'enforce' ? 'accept' : 'return';
    case 'goto':
      return `goto ${nftChainName(t.chain, f)}`;
    case 'log':
      return `log prefix ${nftQuote(t.prefix, 29)}`;
    case 'reject':
      // the plan pairs tcp-reset with a tcp match, as iptables requires; nft needs it too
      return t.with === 'tcp-reset' ? 'reject with tcp reset' : 'reject with icmpx type port-unreachable';
    case 'drop':
      return 'drop';
  }
}

/** chain and set names of a live `table inet cellwall`, from `nft -j list table inet cellwall` output */
export function nftLiveNames(json: string): { chains: string[]; sets: string[] } {
  const items = (JSON.parse(json) as { nftables?: Array<{ chain?: { name: string }; set?: { name: string } }> }).nftables ?? [];
  return {
    chains: items.flatMap((i) => (i.chain ? [i.chain.name] : [])),
    sets: items.flatMap((i) => (i.set ? [i.set.name] : [])),
  };
}

/**
 * Lines to append to renderNft(plan) (same file, same transaction) that remove
 * what an older plan left in the live table: its chains (flushed, then
 * deleted: nft deletes only empty, unreferenced chains) and its
 * content-addressed sets. Dynamic member sets (`cw-d-...`) are kept even when
 * this plan no longer uses them, as with ipset: their members are state.
 */
export function renderNftCleanup(plan: Plan, live: { chains: string[]; sets: string[] }): string {
  const ref = `${NFT_FAMILY} ${NFT_TABLE}`;
  const fams = [plan.families[4], plan.families[6]];
  const chains = new Set([NFT_BASE_CHAIN, ...fams.flatMap((fp) => fp.chains.map((c) => nftChainName(c.name, fp.family)))]);
  const sets = new Set(fams.flatMap((fp) => fp.sets.map((s) => s.name)));
  const staleChains = live.chains.filter((c) => !chains.has(c)).map(checkIdent);
  const staleSets = live.sets.filter((s) => !sets.has(s) && !s.startsWith('cw-d-')).map(checkIdent);
  if (!staleChains.length && !staleSets.length) return '';
  return [
    commentLine('4. remove what an older policy left (chains emptied first: nft deletes only empty chains)'),
    ...staleChains.map((c) => `flush chain ${ref} ${c}`),
    ...staleChains.map((c) => `delete chain ${ref} ${c}`),
    ...staleSets.map((s) => `delete set ${ref} ${s}`),
    '',
  ].join('\n');
}
