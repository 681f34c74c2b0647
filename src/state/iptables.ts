/**
 * iptables-save / iptables-restore text: parsing, the cellwall (CW-) part of
 * a filter table, and rule normalisation so that a payload rule and the form
 * the kernel reads back compare equal.
 *
 * The parser understands any table and any chain (rules other tools wrote are
 * kept as opaque text), so cellwall can touch its own chains only.
 */
export type IpFamily = 4 | 6;

export const CW_CHAIN_PREFIX = 'CW-';
export const isCwChain = (name: string): boolean => name.startsWith(CW_CHAIN_PREFIX);

export interface SavedChain { name: string; policy: string | null; rules: string[] }
export interface SavedTable { name: string; chains: Map<string, SavedChain> }

/** One rule of cellwall's: the raw rule text after `-A CHAIN ` and its normalised form. */
export interface CwRule {
  spec: string;
  norm: string;
  /** where the rule came from in a payload (1-based line), for error messages */
  origin?: { file: string; line: number };
}

/** A rule in a non-CW chain (FORWARD) that jumps to a CW- chain. */
export interface CwJump extends CwRule { host: string }

/**
 * The CW- part of one family's filter table.
 * jumps: in desired state, the jumps that must open their host chain (in order);
 * in live state, every jump found, with `top` telling whether it is inside
 * the leading block of CW jumps of its host chain.
 */
export interface FamilyState {
  chains: Map<string, CwRule[]>;
  jumps: (CwJump & { top?: boolean })[];
}

/** Split a rule into words like iptables does: whitespace separated, "double quotes" with \" and \\ escapes. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = line.length;
  while (i < n) {
    while (i < n && /\s/.test(line[i]!)) i++;
    if (i >= n) break;
    let tok = '';
    let quoted = false;
    while (i < n && (quoted || !/\s/.test(line[i]!))) {
      const c = line[i]!;
      if (c === '"') { quoted = !quoted; i++; continue; }
      if (c === '\\' && i + 1 < n && (line[i + 1] === '"' || line[i + 1] === '\\')) { tok += line[i + 1]; i += 2; continue; }
      tok += c;
      i++;
    }
    out.push(tok);
  }
  return out;
}

/** Quote a word for an iptables-restore line when needed. */
export function quoteWord(w: string): string {
  if (w !== '' && !/[\s"\\]/.test(w)) return w;
  return `"${w.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Parse iptables-save output (all tables). Counters and comments are dropped. */
export function parseSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let cur: SavedTable | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      cur = { name: line.slice(1), chains: new Map() };
      tables.set(cur.name, cur);
      continue;
    }
    if (!cur) continue;
    if (line === 'COMMIT') { cur = null; continue; }
    if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      cur.chains.set(name!, { name: name!, policy: policy && policy !== '-' ? policy : null, rules: [] });
      continue;
    }
    const m = /^(?:\[\d+:\d+\]\s+)?-A\s+(\S+)\s*(.*)$/.exec(line);
    if (m) {
      const chain = m[1]!;
      let c = cur.chains.get(chain);
      if (!c) { c = { name: chain, policy: null, rules: [] }; cur.chains.set(chain, c); }
      c.rules.push(m[2]!);
    }
  }
  return tables;
}

/** The jump target (-j/-g) of a rule, if any. */
export function ruleTarget(spec: string): string | null {
  const t = tokenize(spec);
  for (let i = 0; i < t.length - 1; i++) if (t[i] === '-j' || t[i] === '-g') return t[i + 1]!;
  return null;
}

/** The CW- part of a saved filter table. */
export function cwPartOf(table: SavedTable | undefined, family: IpFamily): FamilyState {
  const st: FamilyState = { chains: new Map(), jumps: [] };
  if (!table) return st;
  for (const c of table.chains.values()) {
    if (isCwChain(c.name)) {
      st.chains.set(c.name, c.rules.map((spec) => ({ spec, norm: normalizeRule(spec, family) })));
      continue;
    }
    let leading = true;
    for (const spec of c.rules) {
      const target = ruleTarget(spec);
      const isJump = target !== null && isCwChain(target);
      if (!isJump) { leading = false; continue; }
      st.jumps.push({ host: c.name, spec, norm: normalizeRule(spec, family), top: leading });
    }
  }
  return st;
}

const IMPLICIT_MATCHES = new Set(['tcp', 'udp', 'icmp', 'icmp6', 'icmpv6', 'sctp', 'udplite']);
const BASIC = ['-s', '-d', '-i', '-o', '-p'];
const LONG_BASIC: Record<string, string> = {
  '--source': '-s', '--src': '-s', '--destination': '-d', '--dst': '-d', '--in-interface': '-i',
  '--out-interface': '-o', '--protocol': '-p', '--jump': '-j', '--goto': '-g', '--match': '-m',
  '--destination-port': '--dport', '--source-port': '--sport', '--destination-ports': '--dports', '--source-ports': '--sports',
};
const LIMIT_UNITS: Record<string, string> = { second: 'sec', s: 'sec', minute: 'min', m: 'min', hour: 'hour', h: 'hour', day: 'day', d: 'day' };

function normAddr(a: string, family: IpFamily): string {
  const parts = a.split(',');
  return parts.map((p) => {
    let [addr, len] = p.split('/');
    if (family === 6 && addr!.includes(':')) {
      try { addr = new URL(`http://[${addr}]`).hostname.slice(1, -1); } catch { /* keep as written */ }
    }
    if (len === undefined) len = family === 4 ? '32' : '128';
    return `${addr}/${len}`;
  }).join(',');
}

/**
 * Normalise a rule (text after `-A CHAIN`) to a canonical word list joined by
 * spaces: basic matches first in iptables-save order, implicit protocol
 * matches and defaults dropped, addresses with prefix lengths, state lists
 * sorted, comments unquoted.
 */
export function normalizeRule(spec: string, family: IpFamily): string {
  const t = tokenize(spec).map((w) => LONG_BASIC[w] ?? w);
  const basic = new Map<string, string[]>();
  const rest: string[] = [];
  let proto: string | null = null;
  for (let i = 0; i < t.length; i++) {
    const neg = t[i] === '!' && i + 1 < t.length && BASIC.includes(t[i + 1]!);
    const opt = neg ? t[i + 1]! : t[i]!;
    if (BASIC.includes(opt) && i + (neg ? 2 : 1) < t.length) {
      let val = t[i + (neg ? 2 : 1)]!;
      if (opt === '-s' || opt === '-d') val = normAddr(val, family);
      if (opt === '-p') { val = val.toLowerCase(); if (['icmpv6', 'icmp6', 'ipv6-icmp', '58'].includes(val)) val = 'ipv6-icmp'; if (val === '6') val = 'tcp'; if (val === '17') val = 'udp'; if (val === '1') val = 'icmp'; proto = val; }
      basic.set(opt, neg ? ['!', opt, val] : [opt, val]);
      i += neg ? 2 : 1;
      continue;
    }
    if (t[i] === '-m' && i + 1 < t.length && IMPLICIT_MATCHES.has(t[i + 1]!)) { i++; continue; }
    rest.push(t[i]!);
  }
  if (basic.get('-p')?.[1] === 'all' && basic.get('-p')!.length === 2) basic.delete('-p');
  // option-level fixes on the remaining words
  const out: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const w = rest[i]!;
    const next = rest[i + 1];
    if ((w === '--ctstate' || w === '--state') && next !== undefined) { out.push(w, next.split(',').sort().join(',')); i++; continue; }
    if (w === '--limit' && next !== undefined) {
      const [n, u] = next.split('/');
      out.push(w, `${n}/${u ? (LIMIT_UNITS[u] ?? u) : 'hour'}`); i++; continue;
    }
    if (w === '--limit-burst' && next === '5') { i++; continue; }
    if (w === '--log-level' && (next === '4' || next === 'warning' || next === 'warn')) { i++; continue; }
    if ((w === '--icmp-type' || w === '--icmpv6-type') && next === 'any') { i++; continue; }
    out.push(w);
  }
  // REJECT without --reject-with gets the kernel default
  const j = out.indexOf('-j');
  if (j >= 0 && out[j + 1] === 'REJECT' && !out.includes('--reject-with')) {
    out.push('--reject-with', family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable');
  }
  void proto;
  const head: string[] = [];
  for (const k of BASIC) { const v = basic.get(k); if (v) head.push(...v); }
  return [...head, ...out].map(quoteWord).join(' ');
}
