/**
 * `ipset save` / `ipset restore` text: parsing into sets, normalisation of
 * headers and members so a payload and the kernel's form compare equal.
 */
export const DYNAMIC_SET_PREFIX = 'cw-d-';
/**
 * cellwall's sets: `cw-...` (dynamic member sets `cw-d-...`, apply's temp sets
 * `cw-tmp-...`) and the compiler's content-addressed `cw4n-`, `cw6p-`, `cw4l-`...
 */
export const isCwSet = (name: string): boolean => /^cw(-|[46][a-z]*-)/.test(name);
export const isDynamicSet = (name: string): boolean => name.startsWith(DYNAMIC_SET_PREFIX);

export interface IpSetState {
  name: string;
  type: string;
  /** header options as written (after the type), without -exist */
  options: string[];
  /** normalised header: type + options that define the set (no hashsize/initval/bucketsize) */
  header: string;
  /** members as written */
  members: string[];
  /** normalised, sorted, deduplicated members */
  membersNorm: string[];
  dynamic: boolean;
  origin?: { file: string; line: number };
}

const VOLATILE_OPTS = new Set(['hashsize', 'initval', 'bucketsize']);
const VALUED_OPTS = new Set(['family', 'hashsize', 'maxelem', 'initval', 'bucketsize', 'timeout', 'netmask', 'range', 'size', 'markmask']);

export function normalizeHeader(type: string, options: string[]): string {
  const o = new Map<string, string>();
  for (let i = 0; i < options.length; i++) {
    const k = options[i]!;
    if (k === '-exist' || k === '-!') continue;
    if (VALUED_OPTS.has(k)) { o.set(k, options[i + 1] ?? ''); i++; } else o.set(k, '');
  }
  for (const k of VOLATILE_OPTS) o.delete(k);
  if (type.startsWith('hash:') && !o.has('family')) o.set('family', 'inet');
  if (!o.has('maxelem') && type.startsWith('hash:')) o.set('maxelem', '65536');
  const keys = [...o.keys()].sort();
  return [type, ...keys.map((k) => (o.get(k) ? `${k} ${o.get(k)}` : k))].join(' ');
}

export function normalizeMember(m: string): string {
  const words = m.split(/\s+/).filter((w) => w !== '' && w !== '-exist' && w !== '-!');
  const first = words[0] ?? '';
  const norm = first.split(',').map((part) => {
    let [addr, len]: (string | undefined)[] = part.split('/');
    if (addr!.includes(':')) {
      try { addr = new URL(`http://[${addr}]`).hostname.slice(1, -1); } catch { /* keep */ }
      if (len === '128') len = undefined;
    } else if (len === '32') len = undefined;
    return len === undefined ? addr! : `${addr}/${len}`;
  }).join(',');
  // timeouts count down: not part of the identity of a member
  const extra: string[] = [];
  for (let i = 1; i < words.length; i++) {
    if (words[i] === 'timeout' || words[i] === 'packets' || words[i] === 'bytes') { i++; continue; }
    extra.push(words[i]!);
  }
  return [norm, ...extra].join(' ');
}

export interface ParsedIpset { sets: Map<string, IpSetState>; problems: { line: number; text: string }[] }

/**
 * Parse `ipset save` output or an `ipset restore` payload. Only create/add
 * lines are understood; anything else is reported in `problems` (a payload
 * must not flush, destroy or swap on its own).
 */
export function parseIpset(text: string, file = 'ipset'): ParsedIpset {
  const sets = new Map<string, IpSetState>();
  const problems: { line: number; text: string }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    const w = line.split(/\s+/).filter((x) => x !== '-exist' && x !== '-!');
    const cmd = w[0];
    if ((cmd === 'create' || cmd === '-N' || cmd === 'n') && w.length >= 3) {
      const options = w.slice(3);
      sets.set(w[1]!, {
        name: w[1]!, type: w[2]!, options, header: normalizeHeader(w[2]!, options), members: [], membersNorm: [],
        dynamic: isDynamicSet(w[1]!), origin: { file, line: i + 1 },
      });
    } else if ((cmd === 'add' || cmd === '-A' || cmd === 'a') && w.length >= 3) {
      const s = sets.get(w[1]!);
      if (!s) { problems.push({ line: i + 1, text: line }); continue; }
      s.members.push(w.slice(2).join(' '));
    } else {
      problems.push({ line: i + 1, text: line });
    }
  }
  for (const s of sets.values()) s.membersNorm = [...new Set(s.members.map(normalizeMember))].sort();
  return { sets, problems };
}

/** Only the cw- sets. */
export function cwSets(all: Map<string, IpSetState>): Map<string, IpSetState> {
  const out = new Map<string, IpSetState>();
  for (const [k, v] of all) if (isCwSet(k)) out.set(k, v);
  return out;
}
