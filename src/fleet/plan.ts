/**
 * Dry-run: what a push would change on a cell. The cell reports its live CW-
 * part (iptables-save / ip6tables-save lines of CW- chains and FORWARD jumps,
 * ipset save lines of cw- sets, dynamic cw-d-* sets excluded); we compare it
 * with the bundle: chains added/removed, rules per chain, sets and set entries
 * added/removed, and a textual diff of the normalised rules.
 */
import type { Bundle } from './bundle.js';
import { isCwSet, isDynamicSet } from '../state/ipset.js';

export interface CwPart { v4: string[]; v6: string[]; sets: string[] }

export interface CellDiff {
  chainsAdded: string[];
  chainsRemoved: string[];
  /** chains whose rule count differs: [chain, live, bundle]; IPv6 chains are written "CW-x (v6)" */
  rulesChanged: [string, number, number][];
  setsAdded: string[];
  setsRemoved: string[];
  entriesAdded: number;
  entriesRemoved: number;
  /** unified-style lines ("+ ..." / "- ..."), rules only, normalised */
  text: string[];
}

/** Parse the live CW- part printed between `CW-SECTION live` and `CW-SECTION end`. */
export function parseLive(stdout: string): CwPart | null {
  const lines = stdout.split('\n');
  const start = lines.indexOf('CW-SECTION live');
  const end = lines.indexOf('CW-SECTION end');
  if (start < 0 || end < start) return null;
  const part: CwPart = { v4: [], v6: [], sets: [] };
  let cur: string[] | null = null;
  for (const l of lines.slice(start + 1, end)) {
    if (l === 'v4' || l === 'v6' || l === 'sets') cur = part[l];
    else if (cur && l) cur.push(l);
  }
  return part;
}

/** The same view of a bundle (computed once per bundle: every cell of a segment compares with it). */
const parts = new WeakMap<Bundle, CwPart>();
export function bundlePart(b: Bundle): CwPart {
  let p = parts.get(b);
  if (!p) parts.set(b, (p = bundlePartOf(b)));
  return p;
}

function bundlePartOf(b: Bundle): CwPart {
  const rules = (text: string) => text.split('\n').filter((l) => /^:CW-/.test(l) || /^-A CW-/.test(l) || (/^-[AI] FORWARD /.test(l) && / -j CW-/.test(l)))
    .map((l) => (l.startsWith(':') ? l.split(/\s+/)[0] : l));
  const sets = (b.files['ipset.restore'] ?? '').split('\n')
    .filter((l) => { const w = l.split(' '); return (w[0] === 'create' || w[0] === 'add') && isCwSet(w[1] ?? '') && !isDynamicSet(w[1]); });
  return { v4: rules(b.files['iptables.v4'] ?? ''), v6: rules(b.files['iptables.v6'] ?? ''), sets };
}

/** Spelling differences between a restore payload and iptables-save output. */
export function normalizeRule(l: string): string {
  return l.replace(/^\[\d+:\d+\]\s*/, '')
    .replace(/^-I FORWARD(?: \d+)? /, '-A FORWARD ')
    .replace(/ -m (?:tcp|udp|icmp|icmp6|ipv6-icmp|sctp)(?= )/g, '')
    .replace(/"/g, '')
    .replace(/\s+/g, ' ')
    .trim();
}

function normalizeEntry(l: string): string {
  return l.replace(/\/(?:32|128)(?=[\s,]|$)/, '').replace(/\s+/g, ' ').trim();
}

const entrySets = new WeakMap<CwPart, Set<string>>();

export function diffPart(live: CwPart, want: CwPart): CellDiff {
  const chains = (p: CwPart) => new Set([...p.v4, ...p.v6].filter((l) => l.startsWith(':')).map((l) => l.slice(1)));
  // rule counts per chain and family ("CW-x" for IPv4, "CW-x (v6)" for IPv6)
  const counts = (p: CwPart) => {
    const m = new Map<string, number>();
    for (const [fam, lines] of [['', p.v4], [' (v6)', p.v6]] as const) {
      for (const l of lines) {
        const c = /^(?::(CW-\S+)|-A (CW-\S+))/.exec(l);
        if (!c) continue;
        const key = (c[1] ?? c[2]) + fam;
        m.set(key, (m.get(key) ?? 0) + (c[2] ? 1 : 0));
      }
    }
    return m;
  };
  const lc = chains(live), wc = chains(want);
  const lr = counts(live), wr = counts(want);
  const rulesChanged: [string, number, number][] = [];
  for (const c of new Set([...lr.keys(), ...wr.keys()])) {
    const a = lr.get(c) ?? 0, b = wr.get(c) ?? 0;
    if (a !== b) rulesChanged.push([c, a, b]);
  }
  const setNames = (p: CwPart) => new Set(p.sets.filter((l) => l.startsWith('create ')).map((l) => l.split(/\s+/)[1]));
  // the entry only (field 3): a bundle's add lines end with "-exist", ipset save's do not
  const entries = (p: CwPart) => {
    let e = entrySets.get(p);
    if (!e) entrySets.set(p, (e = new Set(p.sets.filter((l) => l.startsWith('add ')).map((l) => normalizeEntry(l.split(/\s+/)[2] ?? '')))));
    return e;
  };
  const ls = setNames(live), ws = setNames(want);
  const le = entries(live), we = entries(want);
  const text = [
    ...lineDiff(live.v4.map(normalizeRule), want.v4.map(normalizeRule)),
    ...lineDiff(live.v6.map(normalizeRule), want.v6.map(normalizeRule)).map((l) => l.replace(/^([+-]) /, '$1 [v6] ')),
  ];
  return {
    chainsAdded: [...wc].filter((c) => !lc.has(c)).sort(),
    chainsRemoved: [...lc].filter((c) => !wc.has(c)).sort(),
    rulesChanged: rulesChanged.sort((x, y) => x[0].localeCompare(y[0])),
    setsAdded: [...ws].filter((s) => !ls.has(s)).sort(),
    setsRemoved: [...ls].filter((s) => !ws.has(s)).sort(),
    entriesAdded: [...we].filter((e) => !le.has(e)).length,
    entriesRemoved: [...le].filter((e) => !we.has(e)).length,
    text,
  };
}

export function isEmptyDiff(d: CellDiff): boolean {
  return !d.chainsAdded.length && !d.chainsRemoved.length && !d.rulesChanged.length && !d.setsAdded.length &&
    !d.setsRemoved.length && !d.entriesAdded && !d.entriesRemoved && !d.text.length;
}

/** Line diff (LCS); "- " live only, "+ " bundle only. Falls back to set difference for very large inputs. */
export function lineDiff(a: string[], b: string[]): string[] {
  if (a.length * b.length > 4_000_000) {
    const sa = new Set(a), sb = new Set(b);
    return [...a.filter((l) => !sb.has(l)).map((l) => `- ${l}`), ...b.filter((l) => !sa.has(l)).map((l) => `+ ${l}`)];
  }
  const n = a.length, m = b.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) {
    dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  }
  const out: string[] = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(`- ${a[i++]}`);
    else out.push(`+ ${b[j++]}`);
  }
  while (i < n) out.push(`- ${a[i++]}`);
  while (j < m) out.push(`+ ${b[j++]}`);
  return out;
}

export function summarizeDiff(d: CellDiff): string {
  const parts: string[] = [];
  if (d.chainsAdded.length) parts.push(`+${d.chainsAdded.length} chains`);
  if (d.chainsRemoved.length) parts.push(`-${d.chainsRemoved.length} chains`);
  const rules = d.text.length ? `${d.text.filter((l) => l.startsWith('+')).length}+/${d.text.filter((l) => l.startsWith('-')).length}- rule lines` : '';
  if (rules) parts.push(rules);
  if (d.setsAdded.length || d.setsRemoved.length) parts.push(`sets +${d.setsAdded.length}/-${d.setsRemoved.length}`);
  if (d.entriesAdded || d.entriesRemoved) parts.push(`entries +${d.entriesAdded}/-${d.entriesRemoved}`);
  return parts.join(', ') || 'no difference in the CW- part (state record differs)';
}

/**
 * nft: canonical lines of a table, from an `nft list` block or a ruleset.nft
 * (the same as cw_nftcanon in the cell script): "C chain", "R chain rule"
 * (counter values dropped), "S set statement", "E set element" (a host's /32 or
 * /128 dropped, as the kernel prints it).
 */
export function nftCanon(text: string): string[] {
  const out: string[] = [];
  let kind = '';
  let name = '';
  let inel = false;
  const elems = (l: string) => {
    const end = /[ \t]*\}.*$/.test(l);
    l = l.replace(/[ \t]*\}.*$/, '');
    for (let x of l.split(',')) {
      x = x.trim().replace(/\/(?:32|128) /g, ' ').replace(/\/(?:32|128)$/, '');
      if (x) out.push(`E ${name} ${x}`);
    }
    if (end) inel = false;
  };
  for (const raw of text.split('\n')) {
    let l = raw.trim();
    if (!l || l.startsWith('#')) continue;
    if (inel) { elems(l); continue; }
    let m: RegExpExecArray | null;
    if (/^table .*\{$/.test(l)) kind = 'T';
    else if ((m = /^(?:set|map) (\S+) \{$/.exec(l))) { kind = 'S'; name = m[1]; }
    else if ((m = /^chain (\S+) \{$/.exec(l))) { kind = 'C'; name = m[1]; out.push(`C ${name}`); }
    else if (l === '}') kind = kind === 'S' || kind === 'C' ? 'T' : '';
    else if (kind === 'S' && l.startsWith('elements = {')) { inel = true; elems(l.replace(/^elements = \{[ \t]*/, '')); }
    else if (kind === 'S') { for (const p of l.split(';')) if (p.trim()) out.push(`S ${name} ${p.trim()}`); }
    else if (kind === 'C') out.push(`R ${name} ${l.replace(/counter packets \d+ bytes \d+/g, 'counter')}`);
  }
  return out;
}

/** The canonical lines the cell printed between `CW-SECTION live` and `CW-SECTION end` (nft). */
export function parseNftLive(stdout: string): string[] | null {
  const lines = stdout.split('\n');
  const start = lines.indexOf('CW-SECTION live');
  const end = lines.indexOf('CW-SECTION end');
  if (start < 0 || end < start) return null;
  return lines.slice(start + 1, end).filter(Boolean);
}

/**
 * nft dry-run diff: chains and sets added/removed, rule counts per chain, set
 * elements added/removed (dynamic cw-d- sets: declarations only). Rules are
 * shown for chains added, removed or with another rule count: the kernel's
 * normal form differs from the script's spelling (`reject with icmpx type
 * port-unreachable` reads back as `reject`), so same-count chains are not
 * compared line by line.
 */
export function diffNft(live: string[], want: string[]): CellDiff {
  const pick = (lines: string[], k: string) => lines.filter((l) => l.startsWith(`${k} `)).map((l) => l.slice(2));
  const names = (lines: string[], k: string) => new Set(pick(lines, k).map((l) => l.split(' ')[0]));
  const rules = (lines: string[]) => {
    const m = new Map<string, string[]>();
    for (const c of pick(lines, 'C')) m.set(c, []);
    for (const r of pick(lines, 'R')) {
      const i = r.indexOf(' ');
      const c = r.slice(0, i), rule = r.slice(i + 1);
      if (!rule.startsWith('type ')) m.get(c)?.push(rule);
    }
    return m;
  };
  const lc = names(live, 'C'), wc = names(want, 'C');
  const ls = names(live, 'S'), ws = names(want, 'S');
  const lr = rules(live), wr = rules(want);
  const rulesChanged: [string, number, number][] = [];
  const text: string[] = [];
  for (const c of [...new Set([...lr.keys(), ...wr.keys()])].sort()) {
    const a = lr.get(c) ?? [], b = wr.get(c) ?? [];
    if (a.length !== b.length || !lr.has(c) || !wr.has(c)) {
      if (a.length !== b.length) rulesChanged.push([c, a.length, b.length]);
      text.push(...lineDiff(a.map((r) => `${c}: ${r}`), b.map((r) => `${c}: ${r}`)));
    }
  }
  const el = (lines: string[]) => new Set(pick(lines, 'E').filter((e) => !e.startsWith('cw-d-')));
  const le = el(live), we = el(want);
  return {
    chainsAdded: [...wc].filter((c) => !lc.has(c)).sort(),
    chainsRemoved: [...lc].filter((c) => !wc.has(c)).sort(),
    rulesChanged,
    setsAdded: [...ws].filter((s) => !ls.has(s)).sort(),
    setsRemoved: [...ls].filter((s) => !ws.has(s) && !s.startsWith('cw-d-')).sort(),
    entriesAdded: [...we].filter((e) => !le.has(e)).length,
    entriesRemoved: [...le].filter((e) => !we.has(e)).length,
    text,
  };
}
