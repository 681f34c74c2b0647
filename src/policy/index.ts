/**
 * Policy loader: YAML/JSON policy file (plus the CF JSON files it names)
 * -> validated Policy model (./model.ts). Every problem is reported with
 * file:line:col, field path and expected form; all of them are collected and
 * thrown together as one DiagnosticsError.
 *
 * Where SPEC §1 is silent, the loader decides:
 *  - segments: `egress` defaults to open (ASGs only, as in Cloud Foundry);
 *    container_network / egress_allow / group networks take the same entries
 *    as networks (addresses, CIDRs, ranges, names, `!` exclusions).
 *  - bindings: `phase` is required (no silent widening to staging).
 *  - app rules (`policies.rules`): tcp/udp need ports (a CF ports string or
 *    an integer); icmp/icmpv6 type/code are optional and default to -1 (any).
 *  - ASG rules: `type`/`code` on a non-icmp rule are accepted with a warning
 *    (Cloud Controller accepts them); ports on icmp are an error (SPEC).
 *    An icmp rule's network-name destination is restricted to IPv4 (icmpv6:
 *    IPv6); a literal of the other family is an error.
 *  - CF v3 objects: the ASG takes the policy's key as its name (a different
 *    `name` in the file is a warning); `relationships` bind to groups named
 *    by space GUID, unknown spaces are a warning.
 *  - Group names of all groups must map to distinct ipset stems (names.ts).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { AddrSet } from '../core/index.js';
import type { Family } from '../core/index.js';
import { CellwallError, DiagnosticsError, type Diagnostic, type SourceLoc } from '../errors.js';
import { AddressPool, ENTRY_FORM, NAME_FORM, NAME_RE, Resolver, readEntryList, unionAll, type EntryItem } from './addresses.js';
import { PROTOCOLS, PORTS_FORM, readCfAsgFile, readCfPolicies, readCfRule, readPorts, type RawAppRule, type RawRule } from './cf.js';
import type { AppRule, AsgRule, Binding, Egress, Group, Mode, Network, Phase, Policy, PortRange, Protocol, SecurityGroup, Segment } from './model.js';
import { groupStem } from './names.js';
import type { MapNode, Node } from './nodes.js';
import { child, Diags, Reader, SourceFile, suggest, type Field } from './source.js';

export { dynamicSetName, groupStem } from './names.js';
export type * from './model.js';

const TOP_KEYS = ['version', 'mode', 'defaults', 'strict', 'networks', 'security_groups', 'groups', 'segments', 'bindings', 'policies'] as const;
const PHASES: readonly Phase[] = ['running', 'staging'];
const APP_RULE_KEYS = ['from', 'to', 'protocol', 'ports', 'type', 'code'] as const;
const FROM = 0, TO = 1, PROTO = 2, PORTS = 3, TYPE = 4, CODE = 5;
const MAX_ALIAS_COUNT = 1000;
const MAX_OVERLAP_CHECK = 500;

/** Load and validate a policy file. Throws DiagnosticsError with every problem found. */
export async function loadPolicy(file: string): Promise<Policy> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new CellwallError(`cannot read policy ${file}: ${ioReason(e)}`);
  }
  // the bytes as well: the policy hash copies an ASCII file's scalars from them
  return loadPolicyText(bytes.toString('utf8'), file, dirname(file), bytes);
}

function ioReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a directory';
  if (code === 'EACCES') return 'permission denied';
  return (e as Error)?.message ?? String(e);
}

/** The file's canonical JSON (keys sorted: reformatting does not change the policy hash). */
function canonicalOf(src: SourceFile, r: Reader): string {
  try {
    return src.canonical(MAX_ALIAS_COUNT);
  } catch (e) {
    aliasError(src, r, e);
    return 'null';
  }
}

function aliasError(src: SourceFile, r: Reader, e: unknown): void {
  r.error(src.root, '', `cannot expand the document: ${(e as Error).message}`, `at most ${MAX_ALIAS_COUNT} alias expansions`);
}

interface RawGroup { name: string; kind: 'static' | 'dynamic'; items?: EntryItem[]; loc: SourceLoc; keyLoc: SourceLoc }
interface RawSegment {
  name: string; loc: SourceLoc; placementTags: string[]; cells?: Segment['cells'];
  container?: EntryItem[]; containerLoc: SourceLoc; egress: Egress; allow?: EntryItem[]; allowLoc?: SourceLoc;
}
interface RawBinding { sgs: Array<{ name: string; loc: SourceLoc }>; groups: Array<{ name: string; loc: SourceLoc }> | null; phases: Phase[]; loc: SourceLoc }
interface RawAsg { name: string; loc: SourceLoc; rules: RawRule[]; index: number[] }

/** The loading state of one policy. */
class Loader {
  readonly diags = new Diags();
  readonly pool = new AddressPool();
  /** external files' canonical JSON by the name written in the policy, for the hash */
  readonly files = new Map<string, string>();
  readonly networkDefs = new Map<string, { items: EntryItem[]; loc: SourceLoc }>();
  readonly asgs = new Map<string, RawAsg>();
  readonly groups = new Map<string, RawGroup>();
  readonly segments = new Map<string, RawSegment>();
  readonly bindings: RawBinding[] = [];
  readonly spaceBindings: Array<{ asg: string; phase: Phase; guid: string; loc: SourceLoc }> = [];
  readonly appRules: RawAppRule[] = [];
  mode: Mode = 'tighten';
  strict = true;
  defaults: Policy['defaults'] = { deny: 'reject', logDenied: false, established: 'accept' };
  appDefault: 'allow' | 'deny' = 'deny';

  constructor(readonly file: string, readonly baseDir: string) {}

  /** Read an external JSON/YAML file named in the policy; problems are reported at the reference. */
  async external(r: Reader, node: Node, path: string, name: string): Promise<{ reader: Reader; root: Node } | undefined> {
    const full = isAbsolute(name) ? name : resolve(this.baseDir, name);
    const shown = isAbsolute(name) ? name : join(this.baseDir, name);
    let bytes: Buffer;
    try {
      bytes = await readFile(full);
    } catch (e) {
      r.error(node, path, `cannot read ${JSON.stringify(name)}: ${ioReason(e)}`, `a path relative to ${this.baseDir}`);
      return undefined;
    }
    const src = new SourceFile(shown, bytes.toString('utf8'), this.diags, bytes);
    if (!src.ok) return undefined;
    const reader = new Reader(src, this.diags);
    if (src.root == null) {
      reader.error(null, '', 'empty file', 'a JSON document');
      return undefined;
    }
    this.files.set(name, canonicalOf(src, reader));
    return { reader, root: src.root };
  }

  name(r: Reader, f: Field, what: string, form?: { re: RegExp; text: string }): string | undefined {
    if (f.key === '') { r.error(f.keyNode, f.path, `empty ${what} name`, 'a non-empty name'); return undefined; }
    if (form && !form.re.test(f.key)) { r.error(f.keyNode, f.path, `invalid ${what} name ${JSON.stringify(f.key)}`, form.text); return undefined; }
    return f.key;
  }

  readDefaults(r: Reader, f: Field): void {
    const m = r.map(f.value, f.path, 'a mapping {deny, log_denied, established}');
    if (!m) return;
    for (const d of r.fields(m, f.path, ['deny', 'log_denied', 'established'])) {
      if (d.key === 'deny') this.defaults.deny = r.oneOf(d.value, d.path, ['reject', 'drop'] as const) ?? 'reject';
      else if (d.key === 'log_denied') this.defaults.logDenied = r.bool(d.value, d.path) ?? false;
      else this.defaults.established = r.oneOf(d.value, d.path, ['accept', 'none'] as const) ?? 'accept';
    }
  }

  readNetworks(r: Reader, f: Field): void {
    const m = r.map(f.value, f.path, 'a mapping of network names to entry lists');
    if (!m) return;
    for (const n of r.fields(m, f.path)) {
      const name = this.name(r, n, 'network', { re: NAME_RE, text: NAME_FORM });
      const items = readEntryList(r, n.value, n.path, this.pool, true);
      if (name !== undefined && items) this.networkDefs.set(name, { items, loc: r.loc(n.keyNode, n.path) });
    }
  }

  async readSecurityGroups(r: Reader, f: Field): Promise<void> {
    const m = r.map(f.value, f.path, 'a mapping of ASG names to rule lists or CF JSON file paths');
    if (!m) return;
    this.pool.prefetchLiterals(inlineDestinations(m));
    for (const g of r.fields(m, f.path)) {
      const name = this.name(r, g, 'security group');
      if (name === undefined) continue;
      const loc = r.loc(g.keyNode, g.path);
      const asg: RawAsg = { name, loc, rules: [], index: [] };
      this.asgs.set(name, asg);
      const v = r.scalar(g.value);
      if (v && typeof v.value === 'string') {
        const ext = await this.external(r, v, g.path, v.value);
        if (!ext) continue;
        const cf = readCfAsgFile(ext.reader, ext.root, this.pool);
        asg.rules = cf.rules;
        asg.loc = ext.reader.loc(ext.root, '');
        if (cf.name && cf.name.value !== name) {
          this.diags.warn(cf.name.loc, `the file's ASG is named ${JSON.stringify(cf.name.value)}; it is loaded as ${JSON.stringify(name)}`);
        }
        for (const ge of cf.globallyEnabled) this.bindings.push({ sgs: [{ name, loc: ge.loc }], groups: null, phases: [ge.phase], loc: ge.loc });
        for (const sp of cf.spaces) this.spaceBindings.push({ asg: name, ...sp });
        continue;
      }
      const list = r.list(g.value, g.path, 'a list of CF rules or a path to a CF JSON file');
      list?.forEach((n, i) => {
        const rule = readCfRule(r, n, child(g.path, i), this.pool);
        if (rule) asg.rules.push(rule);
      });
    }
  }

  readGroups(r: Reader, f: Field): void {
    const m = r.map(f.value, f.path, 'a mapping of group names to {networks: [...]} or {members: dynamic}');
    if (!m) return;
    for (const g of r.fields(m, f.path)) {
      const name = this.name(r, g, 'group');
      const gm = r.map(g.value, g.path, '{networks: [...]} or {members: dynamic}');
      if (name === undefined || !gm) continue;
      const gf = r.fieldMap(gm, g.path, ['networks', 'members']);
      const loc = r.loc(gm, g.path);
      const keyLoc = r.loc(g.keyNode, g.path);
      if (gf.has('networks') && gf.has('members')) {
        r.error(gf.get('members')!.keyNode, child(g.path, 'members'), 'a group has either networks or members, not both', '{networks: [...]} or {members: dynamic}');
      } else if (gf.has('networks')) {
        const nf = gf.get('networks')!;
        const items = readEntryList(r, nf.value, nf.path, this.pool, true);
        if (items) this.groups.set(name, { name, kind: 'static', items, loc, keyLoc });
      } else if (gf.has('members')) {
        const mf = gf.get('members')!;
        if (r.oneOf(mf.value, mf.path, ['dynamic'] as const)) this.groups.set(name, { name, kind: 'dynamic', loc, keyLoc });
      } else {
        r.error(gm, g.path, 'a group needs networks or members', '{networks: [...]} or {members: dynamic}');
      }
    }
  }

  readSegments(r: Reader, f: Field): void {
    const m = r.map(f.value, f.path, 'a mapping of segment names to segments');
    if (!m) return;
    for (const s of r.fields(m, f.path)) {
      const name = this.name(r, s, 'segment');
      const sm = r.map(s.value, s.path, 'a segment {container_network, egress, egress_allow, placement_tags, cells}');
      if (name === undefined || !sm) continue;
      const sf = r.fieldMap(sm, s.path, ['container_network', 'egress', 'egress_allow', 'placement_tags', 'cells']);
      const seg: RawSegment = { name, loc: r.loc(s.keyNode, s.path), placementTags: [], egress: 'open', containerLoc: r.loc(sm, s.path) };
      const cn = sf.get('container_network');
      if (!cn) r.error(sm, child(s.path, 'container_network'), 'missing container_network', 'network name(s) or address entries');
      else {
        seg.container = readEntryList(r, cn.value, cn.path, this.pool, true);
        seg.containerLoc = r.loc(r.at(cn), cn.path);
      }
      const eg = sf.get('egress');
      if (eg) seg.egress = r.oneOf(eg.value, eg.path, ['open', 'restricted', 'closed'] as const) ?? 'open';
      const ea = sf.get('egress_allow');
      if (ea) {
        seg.allowLoc = r.loc(r.at(ea), ea.path);
        if (eg && seg.egress !== 'restricted') {
          r.error(ea.keyNode, ea.path, `egress_allow is only valid with egress: restricted (this segment is ${seg.egress})`, 'no egress_allow, or egress: restricted');
        } else if (!eg) {
          r.error(ea.keyNode, ea.path, 'egress_allow needs egress: restricted', 'egress: restricted alongside egress_allow');
        } else seg.allow = readEntryList(r, ea.value, ea.path, this.pool, true);
      } else if (seg.egress === 'restricted') {
        r.error(r.at(eg!), child(s.path, 'egress_allow'), 'egress: restricted needs egress_allow', 'egress_allow: network name(s) or address entries running apps may reach');
      }
      const pt = sf.get('placement_tags');
      if (pt) {
        const tags = r.list(pt.value, pt.path, 'a list of placement tags');
        tags?.forEach((t, i) => { const v = r.str(t, child(pt.path, i), 'a placement tag string'); if (v !== undefined) seg.placementTags.push(v); });
      }
      const cells = sf.get('cells');
      if (cells) {
        const cm = r.map(cells.value, cells.path, 'a mapping {instance_group, instances, instance_type}');
        if (cm) {
          seg.cells = {};
          for (const c of r.fields(cm, cells.path, ['instance_group', 'instances', 'instance_type'])) {
            if (c.key === 'instances') seg.cells.instances = r.int(c.value, c.path, 0, 1_000_000, 'a non-negative integer');
            else if (c.key === 'instance_group') seg.cells.instanceGroup = r.str(c.value, c.path);
            else seg.cells.instanceType = r.str(c.value, c.path);
          }
        }
      }
      this.segments.set(name, seg);
    }
  }

  phases(r: Reader, node: Node | null, path: string): Phase[] | undefined {
    const s = r.scalar(node);
    const items = s ? [node] : r.list(node, path, 'running, staging, or a list of them');
    if (!items) return undefined;
    if (items.length === 0) { r.error(node, path, 'empty phase list', 'running, staging, or a list of them'); return undefined; }
    const out: Phase[] = [];
    let ok = true;
    items.forEach((n, i) => {
      const p = r.oneOf(n, s ? path : child(path, i), PHASES);
      if (p === undefined) ok = false; else if (!out.includes(p)) out.push(p);
    });
    return ok ? out : undefined;
  }

  nameList(r: Reader, raw: Node | null, path: string, what: string): Array<{ name: string; loc: SourceLoc }> | undefined {
    const list = r.list(raw, path, `a list of ${what} names`);
    if (!list) return undefined;
    const out: Array<{ name: string; loc: SourceLoc }> = [];
    list.forEach((n, i) => {
      const v = r.str(n, child(path, i), `a ${what} name`);
      if (v !== undefined) out.push({ name: v, loc: r.loc(n, child(path, i)) });
    });
    return out.length === list.length ? out : undefined;
  }

  readBindings(r: Reader, f: Field): void {
    const list = r.list(f.value, f.path, 'a list of bindings {security_groups, groups, phase}');
    list?.forEach((n, i) => {
      const p = child(f.path, i);
      const m = r.map(n, p, 'a binding {security_groups, groups, phase}');
      if (!m) return;
      const bf = r.fieldMap(m, p, ['security_groups', 'groups', 'phase']);
      const sgf = bf.get('security_groups');
      const phf = bf.get('phase');
      const grf = bf.get('groups');
      if (!sgf) r.error(m, child(p, 'security_groups'), 'missing security_groups', 'a list of security group names');
      if (!phf) r.error(m, child(p, 'phase'), 'missing phase', 'running, staging, or a list of them');
      const sgs = sgf && this.nameList(r, sgf.value, sgf.path, 'security group');
      if (sgs && sgs.length === 0) r.error(r.at(sgf!), sgf!.path, 'empty security_groups', 'at least one security group name');
      const phases = phf && this.phases(r, phf.value, phf.path);
      let groups: RawBinding['groups'] = null;
      if (grf) {
        groups = this.nameList(r, grf.value, grf.path, 'group') ?? null;
        if (!groups) return;
        if (groups.length === 0) { r.error(r.at(grf), grf.path, 'empty groups list', 'a list of group names, or no groups key for a global binding'); return; }
      }
      if (sgs && sgs.length && phases) this.bindings.push({ sgs, groups, phases, loc: r.loc(m, p) });
    });
  }

  readAppRule(r: Reader, raw: Node, path: string): RawAppRule | undefined {
    const m = r.map(raw, path, 'a rule {from, to, protocol, ports, type, code}');
    if (!m) return undefined;
    const at = r.slots(m, path, APP_RULE_KEYS);
    const before = this.diags.errorCount;
    /** a field's value node, or its key when the value is missing (for locations); null when absent */
    const node = (k: number): Node | null => (at[k] < 0 ? null : m.values[at[k]] ?? m.keys[at[k]]);
    const names: Array<{ v?: string; loc?: SourceLoc }> = [{}, {}];
    for (const k of [FROM, TO]) {
      const key = APP_RULE_KEYS[k];
      if (at[k] < 0) { r.error(m, child(path, key), `missing ${key}`, 'a group name'); continue; }
      const fpath = child(path, key);
      const v = m.values[at[k]];
      names[k] = { v: v?.kind === 'scalar' && typeof v.value === 'string' ? v.value : r.str(v, fpath, 'a group name'), loc: r.loc(node(k), fpath) };
    }
    let protocol: Protocol | undefined = 'all';
    if (at[PROTO] >= 0) {
      const v = m.values[at[PROTO]];
      protocol = v?.kind === 'scalar' && PROTOCOLS.includes(v.value as Protocol) ? v.value as Protocol : r.oneOf(v, child(path, 'protocol'), PROTOCOLS);
    }
    const loc = r.loc(m, path);
    let ports: PortRange[] | undefined;
    if (protocol === 'tcp' || protocol === 'udp') {
      if (at[PORTS] < 0) r.error(m, child(path, 'ports'), `ports are required for protocol ${protocol}`, PORTS_FORM);
      else ports = readPorts(r, m.values[at[PORTS]], child(path, 'ports'), true);
    } else if (at[PORTS] >= 0 && protocol) {
      r.error(m.keys[at[PORTS]], child(path, 'ports'), `ports are not allowed for protocol ${protocol}`, 'no ports (ports apply to tcp and udp only)');
    }
    const icmp: number[] = [];
    for (const k of [TYPE, CODE]) {
      const key = APP_RULE_KEYS[k];
      if (protocol === 'icmp' || protocol === 'icmpv6') {
        const v = at[k] >= 0 ? r.int(m.values[at[k]], child(path, key), -1, 255, 'an integer from -1 to 255 (-1 means any)') : -1;
        icmp.push(v!);
      } else if (at[k] >= 0 && protocol) {
        r.error(m.keys[at[k]], child(path, key), `${key} is only valid for icmp and icmpv6 (protocol is ${protocol})`, `no ${key}, or protocol icmp/icmpv6`);
      }
    }
    const [from, to] = names;
    if (this.diags.errorCount > before || !from.v || !to.v || !protocol) return undefined;
    const rule: RawAppRule = { protocol, loc, from: from.v, fromLoc: from.loc!, to: to.v, toLoc: to.loc! };
    if (ports) rule.ports = ports;
    if (icmp.length) { rule.icmpType = icmp[0]; rule.icmpCode = icmp[1]; }
    return rule;
  }

  async readPolicies(r: Reader, f: Field): Promise<void> {
    const m = r.map(f.value, f.path, 'a mapping {default, rules, from_cf}');
    if (!m) return;
    for (const p of r.fields(m, f.path, ['default', 'rules', 'from_cf'])) {
      if (p.key === 'default') this.appDefault = r.oneOf(p.value, p.path, ['allow', 'deny'] as const) ?? 'deny';
      else if (p.key === 'rules') {
        r.list(p.value, p.path, 'a list of rules {from, to, protocol, ports}')?.forEach((n, i) => {
          const rule = this.readAppRule(r, n, child(p.path, i));
          if (rule) this.appRules.push(rule);
        });
      } else {
        const name = r.str(p.value, p.path, 'a path to a CF policy-server JSON file');
        if (name === undefined) continue;
        const ext = await this.external(r, r.at(p), p.path, name);
        if (ext) this.appRules.push(...(readCfPolicies(ext.reader, ext.root) ?? []));
      }
    }
  }

  /** Group names map to ipset name stems; two names with one stem would share a kernel set. */
  checkStems(): void {
    const seen = new Map<string, RawGroup>();
    for (const g of this.groups.values()) {
      const stem = groupStem(g.name);
      const other = seen.get(stem);
      if (other) {
        const o = other.keyLoc;
        this.diags.error(g.keyLoc, `ipset name collision: groups ${JSON.stringify(other.name)} (${o.file}:${o.line}:${o.col}) and ${JSON.stringify(g.name)} map to the same ipset name stem "${stem}"`,
          'group names that differ after lowercasing and replacing characters outside [a-z0-9-] with "-"');
      } else seen.set(stem, g);
    }
  }

  /** A source in two static groups is ambiguous for app-to-app rules: warn (pairwise, so only for modest group counts). */
  checkOverlaps(statics: Group[]): void {
    if (statics.length > MAX_OVERLAP_CHECK) return;
    for (let i = 0; i < statics.length; i++) {
      for (let j = i + 1; j < statics.length; j++) {
        const a = statics[i];
        const b = statics[j];
        const common = a.set!.intersect(b.set!);
        if (common.isEmpty()) continue;
        const first = common.toCidrs()[0];
        const at = this.groups.get(a.name)!.keyLoc;
        this.diags.warn(this.groups.get(b.name)!.keyLoc,
          `static groups ${JSON.stringify(a.name)} (${at.file}:${at.line}:${at.col}) and ${JSON.stringify(b.name)} overlap (e.g. ${first}); a source in both belongs to both`,
          'disjoint group networks');
      }
    }
  }

  refGroup(name: string, loc: SourceLoc): boolean {
    if (this.groups.has(name)) return true;
    const near = suggest(name, this.groups.keys());
    this.diags.error(loc, `undefined group ${JSON.stringify(name)}${near ? ` (did you mean "${near}"?)` : ''}`,
      this.groups.size ? `one of the groups: ${[...this.groups.keys()].slice(0, 20).join(', ')}` : 'a group defined under groups: (none are defined)');
    return false;
  }

  /** Resolve every address and cross-reference; build the model. */
  build(src: SourceFile, r: Reader): Policy {
    this.checkStems();
    this.pool.parse(this.strict);
    const res = new Resolver(this.pool, this.networkDefs, (loc, msg, exp) => this.diags.error(loc, msg, exp));

    const networks = new Map<string, Network>();
    for (const [name, def] of this.networkDefs) {
      const set = res.network(name);
      if (!set) continue;
      if (set.isEmpty()) this.diags.warn(def.loc, `network ${JSON.stringify(name)} is empty after its exclusions`);
      networks.set(name, { name, set, loc: def.loc });
    }

    const securityGroups = new Map<string, SecurityGroup>();
    for (const asg of this.asgs.values()) {
      const rules: AsgRule[] = [];
      asg.rules.forEach((raw, index) => {
        const dest = this.destination(res, raw);
        if (!dest) return;
        // fields in the model's order; optional ones only when set
        const rule = { asg: asg.name, index, protocol: raw.protocol, destination: dest, destinationText: raw.destinationText } as AsgRule;
        if (raw.ports) rule.ports = raw.ports;
        if (raw.icmpType !== undefined) { rule.icmpType = raw.icmpType; rule.icmpCode = raw.icmpCode; }
        rule.log = raw.log;
        if (raw.description !== undefined) rule.description = raw.description;
        rule.loc = raw.loc;
        rules.push(rule);
      });
      securityGroups.set(asg.name, { name: asg.name, rules, loc: asg.loc });
    }

    const groups = new Map<string, Group>();
    for (const g of this.groups.values()) {
      if (g.kind === 'dynamic') { groups.set(g.name, { name: g.name, kind: 'dynamic', loc: g.loc }); continue; }
      const set = res.items(g.items!);
      if (!set) continue;
      if (set.isEmpty()) this.diags.warn(g.keyLoc, `group ${JSON.stringify(g.name)} has no addresses; it matches no traffic`);
      groups.set(g.name, { name: g.name, kind: 'static', set, loc: g.loc });
    }
    this.checkOverlaps([...groups.values()].filter((g) => g.kind === 'static'));

    const segments = new Map<string, Segment>();
    for (const s of this.segments.values()) {
      const cn = s.container && res.items(s.container);
      const allow = s.allow && res.items(s.allow);
      if (!cn || (s.allow && !allow)) continue;
      if (cn.isEmpty()) this.diags.error(s.containerLoc, 'container_network is empty', ENTRY_FORM);
      segments.set(s.name, {
        name: s.name, placementTags: s.placementTags, ...(s.cells ? { cells: s.cells } : {}), containerNetwork: cn,
        egress: s.egress, ...(allow ? { egressAllow: allow } : {}), loc: s.loc,
      });
    }

    const bindings: Binding[] = [];
    for (const b of this.bindings) {
      let ok = true;
      for (const sg of b.sgs) {
        if (this.asgs.has(sg.name)) continue;
        ok = false;
        const near = suggest(sg.name, this.asgs.keys());
        this.diags.error(sg.loc, `undefined security group ${JSON.stringify(sg.name)}${near ? ` (did you mean "${near}"?)` : ''}`,
          this.asgs.size ? `one of the security groups: ${[...this.asgs.keys()].join(', ')}` : 'a security group defined under security_groups: (none are defined)');
      }
      for (const g of b.groups ?? []) ok = this.refGroup(g.name, g.loc) && ok;
      if (ok) bindings.push({ securityGroups: b.sgs.map((s) => s.name), groups: b.groups ? b.groups.map((g) => g.name) : null, phases: b.phases, loc: b.loc });
    }
    for (const sp of this.spaceBindings) {
      if (this.groups.has(sp.guid)) {
        bindings.push({ securityGroups: [sp.asg], groups: [sp.guid], phases: [sp.phase], loc: sp.loc });
      } else {
        this.diags.warn(sp.loc, `space ${JSON.stringify(sp.guid)} is not a group of this policy; its ${sp.phase} binding of ${JSON.stringify(sp.asg)} is ignored`,
          'a group with the space GUID as its name to bind it');
      }
    }

    const rules: AppRule[] = [];
    for (const a of this.appRules) {
      const ok = this.refGroup(a.from, a.fromLoc) && this.refGroup(a.to, a.toLoc);
      if (!ok) continue;
      rules.push({
        from: a.from, to: a.to, protocol: a.protocol, ...(a.ports ? { ports: a.ports } : {}),
        ...(a.icmpType !== undefined ? { icmpType: a.icmpType, icmpCode: a.icmpCode } : {}), loc: a.loc,
      });
    }

    // the canonical JSON of {policy, files}: keys sorted
    const files = [...this.files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, c]) => `${JSON.stringify(name)}:${c}`);
    const h = createHash('sha256').update(`{"files":{${files.join(',')}},"policy":`);
    try {
      src.writeCanonical(MAX_ALIAS_COUNT, (chunk) => h.update(chunk));
    } catch (e) {
      aliasError(src, r, e);
      h.update('null');
    }
    const hash = h.update('}').digest('hex');
    return {
      file: this.file, hash, version: 1, mode: this.mode, defaults: this.defaults, networks, securityGroups, groups, segments,
      bindings, policies: { default: this.appDefault, rules }, warnings: this.diags.items.filter((d) => d.severity === 'warning').sort(byPosition([this.file])),
    };
  }

  /** An ASG rule's destination set; icmp takes IPv4 only, icmpv6 IPv6 only. */
  destination(res: Resolver, raw: RawRule): AddrSet | undefined {
    if (raw.literal) return raw.literal;
    const fam: Family | undefined = raw.protocol === 'icmp' ? 4 : raw.protocol === 'icmpv6' ? 6 : undefined;
    const sets: AddrSet[] = [];
    let ok = true;
    for (const it of raw.items) {
      let s = res.item(it);
      if (!s) { ok = false; continue; }
      if (fam) {
        const lit = res.familyOf(it);
        const wrong = fam === 4 ? 'IPv6' : 'IPv4';
        if (lit !== undefined && lit !== fam) {
          this.diags.error(it.loc, `${wrong} destination ${JSON.stringify(it.text)} in an ${raw.protocol} rule`,
            fam === 4 ? 'IPv4 destinations for icmp (use icmpv6 for IPv6)' : 'IPv6 destinations for icmpv6 (use icmp for IPv4)');
          ok = false;
          continue;
        }
        s = s.family(fam);
        if (lit === undefined && s.isEmpty()) {
          this.diags.error(it.loc, `network ${JSON.stringify(it.text)} has no IPv${fam} addresses for an ${raw.protocol} rule`,
            `a network with IPv${fam} addresses`);
          ok = false;
          continue;
        }
      }
      sets.push(s);
    }
    return ok ? unionAll(sets) : undefined;
  }
}

function byPosition(files: string[]): (a: Diagnostic, b: Diagnostic) => number {
  const rank = (f: string) => { const i = files.indexOf(f); return i < 0 ? files.length : i; };
  return (a, b) => rank(a.loc.file) - rank(b.loc.file) || a.loc.line - b.loc.line || a.loc.col - b.loc.col;
}

/**
 * Load and validate policy text. `file` names it in messages; CF JSON paths
 * resolve against `baseDir` (default: the file's directory).
 */
export async function loadPolicyText(text: string, file: string, baseDir: string = dirname(file), bytes?: Uint8Array): Promise<Policy> {
  const L = new Loader(file, baseDir);
  const fail = (): never => {
    const files = [file, ...[...new Set(L.diags.items.map((d) => d.loc.file))].filter((f) => f !== file)];
    throw new DiagnosticsError([...L.diags.items].sort(byPosition(files)));
  };
  const src = new SourceFile(file, text, L.diags, bytes);
  if (!src.ok) fail();
  const r = new Reader(src, L.diags);
  if (src.root == null) {
    r.error(null, '', 'empty policy', 'a mapping with at least version: 1');
    fail();
  }
  const root = r.map(src.root, '', 'a policy mapping (version, networks, security_groups, ...)');
  if (!root) fail();
  const top = r.fieldMap(root!, '', TOP_KEYS);
  const version = top.get('version');
  if (!version) r.error(root, 'version', 'missing version', 'version: 1');
  else r.int(version.value, 'version', 1, 1, '1 (the only policy format version)');
  const mode = top.get('mode');
  if (mode) L.mode = r.oneOf(mode.value, 'mode', ['tighten', 'enforce'] as const) ?? 'tighten';
  const strict = top.get('strict');
  if (strict) L.strict = r.bool(strict.value, 'strict') ?? true;
  L.pool.strict = L.strict;
  const sections: Array<[string, (r: Reader, f: Field) => void | Promise<void>]> = [
    ['defaults', (rr, f) => L.readDefaults(rr, f)],
    ['networks', (rr, f) => L.readNetworks(rr, f)],
    ['security_groups', (rr, f) => L.readSecurityGroups(rr, f)],
    ['groups', (rr, f) => L.readGroups(rr, f)],
    ['segments', (rr, f) => L.readSegments(rr, f)],
    ['bindings', (rr, f) => L.readBindings(rr, f)],
    ['policies', (rr, f) => L.readPolicies(rr, f)],
  ];
  for (const [key, read] of sections) {
    const f = top.get(key);
    if (f && !r.isNull(f.value)) await read(r, f);
  }
  const policy = L.build(src, r);
  if (L.diags.errorCount) fail();
  return policy;
}

/** the `destination` strings of every inline rule list of a security_groups mapping (unchecked: a prefetch) */
function inlineDestinations(m: MapNode): string[] {
  const out: string[] = [];
  for (const list of m.values) {
    if (!list || list.kind !== 'seq') continue;
    for (const rule of list.items) {
      if (!rule || rule.kind !== 'map') continue;
      for (let i = 0; i < rule.keys.length; i++) {
        const k = rule.keys[i], v = rule.values[i];
        if (k?.kind === 'scalar' && k.value === 'destination' && v?.kind === 'scalar' && typeof v.value === 'string') out.push(v.value);
      }
    }
  }
  return out;
}
