/**
 * Just enough of an iptables-restore / iptables-save reader for the tests:
 * rules per chain, split into match chunks and a verdict, with counters when
 * the text came from `iptables-save -c`.
 */

export interface ParsedRule {
  chain: string;
  /** the rule as written, without the counter prefix */
  rule: string;
  /** match chunks, e.g. `-p tcp`, `-m set --match-set X dst`, `! -d 10.0.0.0/8`; comment and limit left out */
  matches: string[];
  /** the -j target (RETURN, LOG, ...) or `goto:<chain>` for -g */
  verdict: string;
  /** the target's options, e.g. `--log-prefix "CW-DENY x "` */
  targetArgs: string[];
  /** rate limit of the rule, when it has one */
  limit?: { rate: string; burst: number };
  /** iptables-save -c counters */
  packets?: number;
}

/** split like a POSIX shell does for iptables-save output: whitespace, "double quotes" with \" escapes */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inTok = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '\\' && i + 1 < line.length) cur += line[++i];
      else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') {
      quoted = true;
      inTok = true;
    } else if (/\s/.test(ch)) {
      if (inTok) out.push(cur);
      cur = '';
      inTok = false;
    } else {
      cur += ch;
      inTok = true;
    }
  }
  if (inTok) out.push(cur);
  return out;
}

/** every `-A` / `-I` rule of the text, in order (both payload and `iptables-save [-c]` forms) */
export function parseRules(text: string): ParsedRule[] {
  const rules: ParsedRule[] = [];
  for (const raw of text.split('\n')) {
    const m = /^(?:\[(\d+):(\d+)\] )?(-[AI] \S+.*)$/.exec(raw.trim());
    if (!m) continue;
    const toks = tokenize(m[3]);
    const chain = toks[1];
    // -I CHAIN [position]
    if (toks[0] === '-I' && /^\d+$/.test(toks[2] ?? '')) toks.splice(2, 1);
    const chunks: string[][] = [];
    let verdict = '';
    let targetArgs: string[] = [];
    let negate = false;
    for (let i = 2; i < toks.length; i++) {
      const tk = toks[i];
      if (tk === '-j' || tk === '-g') {
        verdict = tk === '-g' ? `goto:${toks[i + 1]}` : toks[i + 1];
        targetArgs = toks.slice(i + 2);
        break;
      }
      if (tk === '!') {
        negate = true;
        continue;
      }
      if (/^-[a-zA-Z]$/.test(tk) || tk === '--protocol' || tk === '--source' || tk === '--destination') {
        chunks.push(negate ? ['!', tk] : [tk]);
        negate = false;
      } else if (chunks.length) {
        if (negate) chunks[chunks.length - 1].push('!');
        chunks[chunks.length - 1].push(tk);
        negate = false;
      }
    }
    let limit: ParsedRule['limit'];
    const matches: string[] = [];
    for (const c of chunks) {
      if (c[0] === '-m' && c[1] === 'comment') continue;
      if (c[0] === '-m' && c[1] === 'limit') {
        const rate = c[c.indexOf('--limit') + 1];
        const b = c.indexOf('--limit-burst');
        limit = { rate, burst: b >= 0 ? Number(c[b + 1]) : 5 };
        continue;
      }
      matches.push(c.join(' '));
    }
    rules.push({
      chain,
      rule: m[3],
      matches,
      verdict,
      targetArgs,
      limit,
      packets: m[1] === undefined ? undefined : Number(m[1]),
    });
  }
  return rules;
}

export interface LogRule {
  log: ParsedRule;
  prefix: string;
  /** the rule right after the LOG in its chain */
  next?: ParsedRule;
  /**
   * the rules after the LOG in its chain up to and including the first one
   * without matches (the chain's catch-all), i.e. where a logged packet goes
   */
  following: ParsedRule[];
}

const TERMINAL = /^(RETURN|ACCEPT|REJECT|DROP|goto:.*)$/;

/** the LOG rules of a rule text, each with what follows it in its chain */
export function logRules(text: string): LogRule[] {
  const rules = parseRules(text);
  const out: LogRule[] = [];
  rules.forEach((r, i) => {
    if (r.verdict !== 'LOG') return;
    const p = r.targetArgs.indexOf('--log-prefix');
    const following: ParsedRule[] = [];
    for (const n of rules.slice(i + 1)) {
      if (n.chain !== r.chain) break;
      following.push(n);
      if (n.matches.length === 0 && TERMINAL.test(n.verdict)) break;
    }
    out.push({ log: r, prefix: p >= 0 ? r.targetArgs[p + 1] : '', next: following[0], following });
  });
  return out;
}
