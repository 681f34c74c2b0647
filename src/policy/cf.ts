/**
 * Cloud Foundry formats: ASG rules checked exactly as Cloud Controller's
 * security group rule validator does (plus icmpv6 and network names as
 * destinations), CF ASG JSON files (rules array or v3 security group object)
 * and policy-server JSON (`{"policies":[{source, destination}]}`).
 */
import type { SourceLoc } from '../errors.js';
import type { AddrSet } from '../core/index.js';
import type { PortRange, Protocol } from './model.js';
import { AddressPool, NAME_RE, type EntryItem } from './addresses.js';
import type { MapNode, Node } from './nodes.js';
import { child, type Reader } from './source.js';

export const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp', 'icmp', 'icmpv6', 'all'];
export const RULE_KEYS = ['protocol', 'destination', 'ports', 'type', 'code', 'log', 'description'] as const;
export const PORTS_FORM = 'one port "443", a comma list "80,443" or one range "8000-9000", ports 1..65535, as a string';
export const DEST_FORM = 'an IP address, CIDR, range a-b (start <= end) or network name, or a comma list of them without spaces';
const ICMP_FORM = 'an integer from -1 to 255 (-1 means any)';

/** A structurally valid rule whose destination is not resolved yet. */
export interface RawRule {
  protocol: Protocol;
  items: EntryItem[];
  /** the destination's union when it is a list of literal entries only (then items is empty) */
  literal?: AddrSet;
  destinationText: string;
  ports?: PortRange[];
  icmpType?: number;
  icmpCode?: number;
  log: boolean;
  description?: string;
  loc: SourceLoc;
}

type PortsResult = { ok: true; ranges: PortRange[] } | { ok: false; reason: string; offset: number };

/**
 * Cloud Controller's TransportRuleValidator.validate_port: only digits,
 * whitespace, '-' and ','; either one range `a-b` with a < b, or a comma
 * list of single ports (whitespace around items allowed); 1..65535.
 */
export function parsePorts(s: string): PortsResult {
  const bad = s.search(/[^\d\s,-]/);
  if (bad >= 0) return { ok: false, reason: `invalid character ${JSON.stringify(s[bad])}`, offset: bad };
  const range = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(s);
  if (range) {
    const a = Number(range[1]);
    const b = Number(range[2]);
    const out = [a, b].find((p) => p < 1 || p > 65535);
    if (out !== undefined) return { ok: false, reason: `port ${out} is out of range 1..65535`, offset: s.indexOf(String(out === a ? range[1] : range[2])) };
    if (a >= b) return { ok: false, reason: `range start ${a} is not less than its end ${b}`, offset: s.indexOf(range[1]) };
    return { ok: true, ranges: [{ from: a, to: b }] };
  }
  // Ruby's String#split drops trailing empty fields
  const items = s.split(',');
  while (items.length && items[items.length - 1] === '') items.pop();
  if (!items.length) return { ok: false, reason: 'no port given', offset: 0 };
  const ranges: PortRange[] = [];
  let offset = 0;
  for (const it of items) {
    if (!/^\s*\d+\s*$/.test(it)) {
      const reason = it.includes('-') ? 'a list may not hold a range' : `invalid list item ${JSON.stringify(it)}`;
      return { ok: false, reason, offset };
    }
    const p = Number(it.trim());
    if (p < 1 || p > 65535) return { ok: false, reason: `port ${it.trim()} is out of range 1..65535`, offset: offset + it.search(/\d/) };
    ranges.push({ from: p, to: p });
    offset += it.length + 1;
  }
  return { ok: true, ranges: mergePorts(ranges) };
}

/** sorted, overlapping and adjacent ranges merged */
export function mergePorts(ranges: PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((x, y) => x.from - y.from || x.to - y.to);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else out.push({ ...r });
  }
  return out;
}

/** parsed CF ports strings (a policy repeats a handful of them); results are shared and frozen */
const portsCache = new Map<string, PortRange[]>();
const PORTS_CACHE_MAX = 4096;

function cachedPorts(text: string): PortsResult {
  const hit = portsCache.get(text);
  if (hit) return { ok: true, ranges: hit };
  const res = parsePorts(text);
  if (res.ok) {
    if (portsCache.size >= PORTS_CACHE_MAX) portsCache.clear();
    portsCache.set(text, Object.freeze(res.ranges.map((r) => Object.freeze(r))) as PortRange[]);
  }
  return res;
}

/** Read a ports value; `allowNumber` accepts a bare integer (app rules), CF rules require a string. */
export function readPorts(r: Reader, raw: Node | null, path: string, allowNumber: boolean): PortRange[] | undefined {
  const s = r.scalar(raw);
  if (allowNumber && s && typeof s.value === 'number') {
    if (Number.isInteger(s.value) && s.value >= 1 && s.value <= 65535) return [{ from: s.value, to: s.value }];
    r.error(s, path, `port ${s.value} is out of range 1..65535`, PORTS_FORM);
    return undefined;
  }
  if (!s || typeof s.value !== 'string') {
    r.error(raw, path, `ports must be a string, got ${r.describe(raw)}`, PORTS_FORM);
    return undefined;
  }
  const res = cachedPorts(s.value);
  if (res.ok) return res.ranges;
  r.error(s, path, `invalid ports ${JSON.stringify(s.value)}: ${res.reason}`, PORTS_FORM, res.offset);
  return undefined;
}

/** A CF destination read: its text and either its literal union or its entries (network names, or for error reports). */
export interface Destination { text: string; items: EntryItem[]; literal?: AddrSet }

/**
 * Split a CF destination (comma list, no whitespace) into entries, as Cloud
 * Controller does. A list of literal entries only is parsed in one core call
 * straight into its union (`literalOk`, no per-entry objects); otherwise, or
 * when that parse finds a problem, each entry is read on its own, so that a
 * message names the entry's own column.
 */
export function readDestination(r: Reader, node: Node | null, path: string, pool: AddressPool, literalOk = false): Destination | undefined {
  const s = r.scalar(node);
  if (!s || typeof s.value !== 'string') {
    r.error(node, path, `destination must be a string, got ${r.describe(node)}`, DEST_FORM);
    return undefined;
  }
  const text = s.value;
  const ws = text.search(/\s/);
  if (ws >= 0) {
    r.error(s, path, `destination ${JSON.stringify(text)} must not contain whitespace`, DEST_FORM, ws);
    return undefined;
  }
  if (literalOk) {
    let count = 1;
    for (let c = text.indexOf(','); c >= 0; c = text.indexOf(',', c + 1)) count++;
    const literal = pool.literalUnion(text, count);
    if (literal) return { text, items: NO_ITEMS, literal };
  }
  const items: EntryItem[] = [];
  let offset = 0;
  let ok = true;
  for (const part of text.split(',')) {
    const dash = part.indexOf('-');
    if (part === '') {
      r.error(s, path, text === '' ? 'empty destination' : `empty item in destination ${JSON.stringify(text)}`, DEST_FORM, offset);
      ok = false;
    } else if (part.startsWith('!')) {
      r.error(s, path, `exclusions are not allowed in an ASG destination: ${JSON.stringify(part)}`, DEST_FORM, offset);
      ok = false;
    } else if (dash >= 0 && part.indexOf('-', dash + 1) >= 0 && !NAME_RE.test(part)) {
      r.error(s, path, `invalid destination item ${JSON.stringify(part)}: more than one "-"`, DEST_FORM, offset);
      ok = false;
    } else {
      items.push(pool.item(part, false, { reader: r, node: s, path, offset }));
    }
    offset += part.length + 1;
  }
  return ok ? { text, items } : undefined;
}

/** the value in slot k of Reader.slots(), null when the key is absent */
function slotValue(m: MapNode, at: number[], k: number): Node | null {
  return at[k] < 0 ? null : m.values[at[k]];
}

/** a literal destination has no entries to resolve */
const NO_ITEMS: EntryItem[] = Object.freeze([]) as unknown as EntryItem[];

// slots of RULE_KEYS
const PROTOCOL = 0, DESTINATION = 1, PORTS = 2, TYPE = 3, LOG = 5, DESCRIPTION = 6;

/** One ASG rule, checked like Cloud Controller's RulesValidator. */
export function readCfRule(r: Reader, raw: Node, path: string, pool: AddressPool): RawRule | undefined {
  const m = r.map(raw, path, 'a rule mapping {protocol, destination, ports, type, code, log, description}');
  if (!m) return undefined;
  const at = r.slots(m, path, RULE_KEYS);
  const errorsBefore = r.diags.errorCount;
  const loc = r.loc(m, path);
  const value = (k: number): Node | null => slotValue(m, at, k);
  const present = (k: number): boolean => !r.isNull(slotValue(m, at, k));

  let protocol: Protocol | undefined;
  if (!present(PROTOCOL)) r.error(m, child(path, 'protocol'), 'missing protocol', PROTOCOLS.join(' | '));
  else {
    const v = value(PROTOCOL)!;
    protocol = v.kind === 'scalar' && PROTOCOLS.includes(v.value as Protocol) ? v.value as Protocol : r.oneOf(v, child(path, 'protocol'), PROTOCOLS);
  }

  let dest: Destination | undefined;
  if (!present(DESTINATION)) r.error(m, child(path, 'destination'), 'missing destination', DEST_FORM);
  else {
    // icmp/icmpv6 take one family: a literal list of the other (or both) is read per entry, to name the entry
    dest = readDestination(r, value(DESTINATION), child(path, 'destination'), pool, protocol !== undefined);
    const lit = dest?.literal;
    const wrongFamily = lit !== undefined && ((protocol === 'icmp' && lit.v6.length > 0) || (protocol === 'icmpv6' && lit.v4.length > 0));
    if (wrongFamily) dest = readDestination(r, value(DESTINATION), child(path, 'destination'), pool, false);
  }

  let log = false;
  if (present(LOG)) {
    const v = value(LOG)!;
    log = v.kind === 'scalar' && typeof v.value === 'boolean' ? v.value : r.bool(v, child(path, 'log')) ?? false;
  }
  let description: string | undefined;
  if (present(DESCRIPTION)) {
    const v = value(DESCRIPTION)!;
    description = v.kind === 'scalar' && typeof v.value === 'string' ? v.value : r.str(v, child(path, 'description'));
  }

  let ports: PortRange[] | undefined;
  let icmpType: number | undefined;
  let icmpCode: number | undefined;
  if (protocol === 'tcp' || protocol === 'udp') {
    if (!present(PORTS)) r.error(m, child(path, 'ports'), `ports are required for protocol ${protocol}`, PORTS_FORM);
    else ports = readPorts(r, value(PORTS), child(path, 'ports'), false);
  } else if (protocol && present(PORTS)) {
    r.error(value(PORTS), child(path, 'ports'), `ports are not allowed for protocol ${protocol}`, 'no ports (ports apply to tcp and udp only)');
  }
  for (let k = TYPE; k <= TYPE + 1; k++) {
    const key = RULE_KEYS[k];
    if (protocol === 'icmp' || protocol === 'icmpv6') {
      if (!present(k)) { r.error(m, child(path, key), `${key} is required for protocol ${protocol}`, ICMP_FORM); continue; }
      const v = r.int(value(k), child(path, key), -1, 255, ICMP_FORM);
      if (k === TYPE) icmpType = v; else icmpCode = v;
    } else if (protocol && present(k)) {
      r.warn(value(k), child(path, key), `${key} is ignored for protocol ${protocol}`, `${key} only with icmp or icmpv6`);
    }
  }
  if (r.diags.errorCount > errorsBefore || !protocol || !dest) return undefined;
  const rule: RawRule = { protocol, items: dest.items, destinationText: dest.text, log, loc };
  if (dest.literal) rule.literal = dest.literal;
  if (ports) rule.ports = ports;
  if (icmpType !== undefined) { rule.icmpType = icmpType; rule.icmpCode = icmpCode; }
  if (description !== undefined) rule.description = description;
  return rule;
}

export const V3_KEYS = ['guid', 'created_at', 'updated_at', 'name', 'globally_enabled', 'rules', 'relationships', 'links', 'metadata'] as const;

/** What a CF ASG JSON file holds besides its rules (v3 objects only). */
export interface CfAsgFile {
  rules: RawRule[];
  /** the rules were all valid */
  ok: boolean;
  name?: { value: string; loc: SourceLoc };
  globallyEnabled: Array<{ phase: 'running' | 'staging'; loc: SourceLoc }>;
  spaces: Array<{ phase: 'running' | 'staging'; guid: string; loc: SourceLoc }>;
}

function readRules(r: Reader, raw: Node | null, path: string, pool: AddressPool, out: CfAsgFile): void {
  const list = r.list(raw, path, 'a list of rules');
  if (!list) { out.ok = false; return; }
  list.forEach((n, i) => {
    const rule = readCfRule(r, n, child(path, i), pool);
    if (rule) out.rules.push(rule); else out.ok = false;
  });
}

/** A CF ASG JSON document: a rules array (cf create-security-group) or a v3 security group object. */
export function readCfAsgFile(r: Reader, node: Node, pool: AddressPool): CfAsgFile {
  const out: CfAsgFile = { rules: [], ok: true, globallyEnabled: [], spaces: [] };
  if (node.kind === 'seq') { readRules(r, node, 'rules', pool, out); return out; }
  const m = r.map(node, '', 'a rules array (cf create-security-group format) or a v3 security group object');
  if (!m) { out.ok = false; return out; }
  const f = r.fieldMap(m, '', V3_KEYS);
  if (!f.has('rules')) { r.error(m, 'rules', 'missing rules', 'a list of rules'); out.ok = false; }
  else readRules(r, f.get('rules')!.value, 'rules', pool, out);
  const name = f.get('name');
  if (name && !r.isNull(name.value)) {
    const v = r.str(name.value, 'name');
    if (v !== undefined) out.name = { value: v, loc: r.loc(r.at(name), 'name') };
  }
  const ge = f.get('globally_enabled');
  if (ge && !r.isNull(ge.value)) {
    const gm = r.map(ge.value, 'globally_enabled', 'a mapping {running: bool, staging: bool}');
    if (gm) {
      for (const g of r.fields(gm, 'globally_enabled', ['running', 'staging'])) {
        if (r.bool(g.value, g.path)) out.globallyEnabled.push({ phase: g.key as 'running' | 'staging', loc: r.loc(r.at(g), g.path) });
      }
    }
  }
  const rel = f.get('relationships');
  if (rel && !r.isNull(rel.value)) {
    const rm = r.map(rel.value, 'relationships', 'a mapping {running_spaces, staging_spaces}');
    if (rm) {
      for (const sp of r.fields(rm, 'relationships', ['running_spaces', 'staging_spaces'])) {
        const phase = sp.key === 'running_spaces' ? 'running' : 'staging';
        const spm = r.map(sp.value, sp.path, 'a mapping {data: [{guid}]}');
        if (!spm) continue;
        const data = r.fieldMap(spm, sp.path, ['data']).get('data');
        if (!data) continue;
        const dpath = child(sp.path, 'data');
        (r.list(data.value, dpath, 'a list of {guid}') ?? []).forEach((item, i) => {
          const ip = child(dpath, i);
          const im = r.map(item, ip, 'a mapping {guid}');
          if (!im) return;
          const g = r.fieldMap(im, ip, ['guid']).get('guid');
          if (!g) { r.error(im, child(ip, 'guid'), 'missing guid', 'a space GUID string'); return; }
          const guid = r.str(g.value, g.path, 'a space GUID string');
          if (guid !== undefined) out.spaces.push({ phase, guid, loc: r.loc(r.at(g), g.path) });
        });
      }
    }
  }
  return out;
}

/** An app-to-app rule as read from policy-server JSON or the policy file, before group names are checked. */
export interface RawAppRule {
  from: string; fromLoc: SourceLoc;
  to: string; toLoc: SourceLoc;
  protocol: Protocol;
  ports?: PortRange[];
  icmpType?: number;
  icmpCode?: number;
  loc: SourceLoc;
}

const CF_POLICY_FORM = '{"policies":[{"source":{"id":...},"destination":{"id":...,"protocol":"tcp","ports":{"start":N,"end":M}}}]}';

/** CF policy-server JSON (external API v1; the internal API's `tag` fields are accepted and ignored). */
export function readCfPolicies(r: Reader, root: Node): RawAppRule[] | undefined {
  const m = r.map(root, '', `policy-server JSON ${CF_POLICY_FORM}`);
  if (!m) return undefined;
  const f = r.fieldMap(m, '', ['policies', 'total_policies']);
  const tp = f.get('total_policies');
  if (tp) r.int(tp.value, tp.path, 0, Number.MAX_SAFE_INTEGER, 'a count');
  const pol = f.get('policies');
  if (!pol) { r.error(m, 'policies', 'missing policies', CF_POLICY_FORM); return undefined; }
  const list = r.list(pol.value, 'policies', 'a list of policies');
  if (!list) return undefined;
  const out: RawAppRule[] = [];
  list.forEach((item, i) => {
    const p = child('policies', i);
    const pm = r.map(item, p, 'a policy {source, destination}');
    if (!pm) return;
    const pf = r.fieldMap(pm, p, ['source', 'destination']);
    const src = pf.get('source');
    const dst = pf.get('destination');
    if (!src) r.error(pm, child(p, 'source'), 'missing source', '{"id": group}');
    if (!dst) r.error(pm, child(p, 'destination'), 'missing destination', '{"id", "protocol", "ports": {"start", "end"}}');
    if (!src || !dst) return;
    const sm = r.map(src.value, src.path, 'a mapping {id}');
    const dm = r.map(dst.value, dst.path, 'a mapping {id, protocol, ports}');
    if (!sm || !dm) return;
    const sf = r.fieldMap(sm, src.path, ['id', 'tag']);
    const df = r.fieldMap(dm, dst.path, ['id', 'tag', 'protocol', 'ports']);
    const need = (map: typeof sf, k: string, node: Node, path: string, exp: string) => {
      const fld = map.get(k);
      if (!fld) r.error(node, child(path, k), `missing ${k}`, exp);
      return fld;
    };
    const sid = need(sf, 'id', sm, src.path, 'a group name');
    const did = need(df, 'id', dm, dst.path, 'a group name');
    const proto = need(df, 'protocol', dm, dst.path, 'tcp | udp');
    const ports = need(df, 'ports', dm, dst.path, '{"start": N, "end": M}');
    // the internal API's tags are accepted (so its output loads) but carry no meaning here
    for (const tag of [sf.get('tag'), df.get('tag')]) if (tag) r.str(tag.value, tag.path);
    const from = sid && r.str(sid.value, sid.path, 'a group name');
    const to = did && r.str(did.value, did.path, 'a group name');
    const protocol = proto && r.oneOf(proto.value, proto.path, ['tcp', 'udp'] as const);
    let range: PortRange | undefined;
    if (ports) {
      const portm = r.map(ports.value, ports.path, '{"start": N, "end": M}');
      if (portm) {
        const pfm = r.fieldMap(portm, ports.path, ['start', 'end']);
        const s = need(pfm, 'start', portm, ports.path, 'a port 1..65535');
        const e = need(pfm, 'end', portm, ports.path, 'a port 1..65535');
        const sv = s && r.int(s.value, s.path, 1, 65535, 'a port 1..65535');
        const ev = e && r.int(e.value, e.path, 1, 65535, 'a port 1..65535');
        if (sv !== undefined && ev !== undefined) {
          if (sv > ev) r.error(r.at(s!), s!.path, `port range start ${sv} is after its end ${ev}`, 'start <= end');
          else range = { from: sv, to: ev };
        }
      }
    }
    if (from === undefined || to === undefined || protocol === undefined || !range) return;
    out.push({
      from, fromLoc: r.loc(r.at(sid!), sid!.path), to, toLoc: r.loc(r.at(did!), did!.path),
      protocol, ports: [range], loc: r.loc(pm, p),
    });
  });
  return out;
}
