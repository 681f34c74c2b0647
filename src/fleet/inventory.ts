/**
 * Fleet inventory: which cells `cellwall push` talks to and how.
 *
 * Two input forms (SPEC §4):
 *  - the cellwall YAML inventory (`ssh:` defaults + `cells:` list), validated
 *    like the policy: every error names file:line:col, the field and the
 *    expected form; unknown keys are errors;
 *  - the output of `bosh instances --json` ({"Tables":[{"Rows":[{"instance":
 *    "group/uuid","ips":"10.0.16.11",...}]}]}); instance groups are mapped to
 *    segments through the policy's `segments.<name>.cells.instance_group`.
 *
 * Every value that later reaches the ssh command line is checked here against
 * a strict character set (no leading '-', no spaces, no quotes) so it can never
 * be read as an option or split into several words.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { LineCounter, parseDocument, isMap, isSeq, isScalar, type Node, type Document } from 'yaml';
import { DiagnosticsError, type Diagnostic, type SourceLoc } from '../errors.js';

export interface SshSettings {
  user?: string;
  port?: number;
  identityFile?: string;
  knownHosts?: string;
  proxyJump?: string;
}

export interface Cell extends SshSettings {
  name: string;
  host: string;
  /** segment name as written in the inventory (YAML) or mapped from the instance group (bosh) */
  segment: string;
  /** the instance group, when read from `bosh instances --json` */
  instanceGroup?: string;
  loc: SourceLoc;
}

export interface Inventory {
  file: string;
  kind: 'yaml' | 'bosh';
  cells: Cell[];
  /** bosh rows not pushed to (errands without IPs, instance groups no segment names), with the reason */
  ignored: { instance: string; reason: string }[];
}

const HOST_RE = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$/;
const USER_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
/** [user@]host[:port], comma separated (ssh -J syntax) */
const JUMP_RE = /^(?:(?:[A-Za-z_][A-Za-z0-9_.-]*@)?(?:[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?)(?:,(?:[A-Za-z_][A-Za-z0-9_.-]*@)?(?:[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?)*$/;
/** file paths that go into `-o Key="path"`: anything printable except quotes and backslashes */
const PATH_RE = /^[^"\\\x00-\x1f\x7f]+$/;

const SSH_KEYS = ['user', 'port', 'identity_file', 'known_hosts', 'proxy_jump'] as const;
const CELL_KEYS = ['name', 'host', 'segment', ...SSH_KEYS] as const;

class Ctx {
  readonly diags: Diagnostic[] = [];
  constructor(readonly file: string, readonly lc: LineCounter) {}
  loc(node: Node | null | undefined, path: string): SourceLoc {
    const off = node?.range?.[0] ?? 0;
    const p = this.lc.linePos(off);
    return { file: this.file, line: p.line, col: p.col, path };
  }
  error(node: Node | null | undefined, path: string, message: string, expected?: string): void {
    this.diags.push({ severity: 'error', loc: this.loc(node, path), message, expected });
  }
}

export function expandHome(p: string): string {
  return p === '~' ? homedir() : p.startsWith('~/') ? homedir() + p.slice(1) : p;
}

/** Read an inventory file (YAML inventory or `bosh instances --json` output). */
export function loadInventory(file: string): Inventory {
  const text = readFileSync(file, 'utf8');
  return parseInventory(text, file);
}

export function parseInventory(text: string, file: string): Inventory {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, keepSourceTokens: false, uniqueKeys: true });
  const ctx = new Ctx(file, lc);
  for (const e of doc.errors) {
    const p = lc.linePos(e.pos[0]);
    ctx.diags.push({ severity: 'error', loc: { file, line: p.line, col: p.col, path: '' },
      message: e.message.split('\n')[0], expected: 'a YAML inventory or `bosh instances --json` output' });
  }
  if (ctx.diags.length) throw new DiagnosticsError(ctx.diags);
  const root = doc.contents;
  if (isMap(root) && root.has('Tables')) return parseBosh(doc, ctx);
  return parseYamlInventory(doc, ctx);
}

function parseYamlInventory(doc: Document, ctx: Ctx): Inventory {
  const root = doc.contents;
  if (!isMap(root)) {
    ctx.error(root, '', 'the inventory is not a mapping', 'a mapping with `cells:` (and optional `ssh:`)');
    throw new DiagnosticsError(ctx.diags);
  }
  let defaults: SshSettings = {};
  let cellsNode: Node | null = null;
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    const value = pair.value as Node | null;
    if (key === 'ssh') defaults = readSsh(ctx, value, 'ssh', SSH_KEYS);
    else if (key === 'cells') cellsNode = value;
    else ctx.error(pair.key as Node, key, `unknown key "${key}"`, 'one of: ssh, cells');
  }
  const cells: Cell[] = [];
  if (!cellsNode) ctx.error(root, 'cells', 'missing', 'a list of cells: - { name, host, segment }');
  else if (!isSeq(cellsNode)) ctx.error(cellsNode, 'cells', 'not a list', 'a list of cells: - { name, host, segment }');
  else {
    const seen = new Map<string, string>();
    cellsNode.items.forEach((item, i) => {
      const path = `cells[${i}]`;
      const node = item as Node;
      if (!isMap(node)) {
        ctx.error(node, path, 'not a mapping', '{ name, host, segment, [port, user, identity_file, known_hosts, proxy_jump] }');
        return;
      }
      const own = readSsh(ctx, node, path, CELL_KEYS);
      const name = readString(ctx, node, 'name', path, /^[^\x00-\x1f\x7f]+$/, 'a non-empty name without control characters');
      const host = readString(ctx, node, 'host', path, HOST_RE, 'a host name or IP address (letters, digits, ".", "-", ":"; not starting with "-")');
      const segment = readString(ctx, node, 'segment', path, /^[^\x00-\x1f\x7f]+$/, 'a segment name from the policy');
      if (name === undefined || host === undefined || segment === undefined) return;
      const dup = seen.get(name);
      if (dup) { ctx.error(node.get('name', true) as Node, `${path}.name`, `duplicate cell name "${name}" (first at ${dup})`, 'unique cell names'); return; }
      const loc = ctx.loc(node, path);
      seen.set(name, `${loc.line}:${loc.col}`);
      cells.push({ ...defaults, ...stripUndefined(own), name, host, segment, loc });
    });
  }
  if (ctx.diags.length) throw new DiagnosticsError(ctx.diags);
  return { file: ctx.file, kind: 'yaml', cells, ignored: [] };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function readString(ctx: Ctx, map: Node, key: string, path: string, re: RegExp, expected: string, required = true): string | undefined {
  if (!isMap(map)) return undefined;
  const node = map.get(key, true) as Node | undefined;
  const p = `${path}.${key}`;
  if (node === undefined) {
    if (required) ctx.error(map, p, 'missing', expected);
    return undefined;
  }
  if (!isScalar(node) || (typeof node.value !== 'string' && typeof node.value !== 'number')) {
    ctx.error(node, p, 'not a string', expected);
    return undefined;
  }
  const v = String(node.value);
  if (!re.test(v)) {
    ctx.error(node, p, `invalid value ${JSON.stringify(v)}`, expected);
    return undefined;
  }
  return v;
}

function readSsh(ctx: Ctx, node: Node | null, path: string, allowed: readonly string[]): SshSettings {
  const out: SshSettings = {};
  if (!node) return out;
  if (!isMap(node)) {
    ctx.error(node, path, 'not a mapping', `a mapping with keys: ${allowed.join(', ')}`);
    return out;
  }
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '';
    if (!allowed.includes(key)) ctx.error(pair.key as Node, `${path}.${key}`, `unknown key "${key}"`, `one of: ${allowed.join(', ')}`);
  }
  out.user = readString(ctx, node, 'user', path, USER_RE, 'a user name (letters, digits, "_", ".", "-")', false);
  const port = node.get('port', true) as Node | undefined;
  if (port !== undefined) {
    const v = isScalar(port) ? port.value : undefined;
    if (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535) out.port = v;
    else ctx.error(port, `${path}.port`, `invalid port ${JSON.stringify(isScalar(port) ? port.value : '(not a number)')}`, 'an integer 1..65535');
  }
  const id = readString(ctx, node, 'identity_file', path, PATH_RE, 'a file path without quotes, backslashes or control characters', false);
  if (id !== undefined) out.identityFile = expandHome(id);
  const kh = readString(ctx, node, 'known_hosts', path, PATH_RE, 'a file path without quotes, backslashes or control characters', false);
  if (kh !== undefined) out.knownHosts = expandHome(kh);
  out.proxyJump = readString(ctx, node, 'proxy_jump', path, JUMP_RE, '[user@]host[:port], comma separated for several hops', false);
  return out;
}

/**
 * `bosh instances --json`: rows whose instance group a segment names (through
 * `cells.instance_group`) become cells named after the instance ("group/uuid");
 * the first IP is the host. Other rows are listed as ignored.
 */
function parseBosh(doc: Document, ctx: Ctx): Inventory {
  const cells: Cell[] = [];
  const ignored: Inventory['ignored'] = [];
  const tables = (doc.contents as Node & { get(k: string, keep: true): Node }).get('Tables', true);
  if (!isSeq(tables)) {
    ctx.error(tables, 'Tables', 'not a list', 'the output of `bosh instances --json`');
    throw new DiagnosticsError(ctx.diags);
  }
  tables.items.forEach((t, ti) => {
    const rows = isMap(t) ? (t.get('Rows', true) as Node | undefined) : undefined;
    if (!isSeq(rows)) {
      ctx.error(t as Node, `Tables[${ti}].Rows`, 'missing or not a list', 'the output of `bosh instances --json`');
      return;
    }
    rows.items.forEach((r, ri) => {
      const path = `Tables[${ti}].Rows[${ri}]`;
      const row = r as Node;
      if (!isMap(row)) { ctx.error(row, path, 'not a mapping', 'a row with instance and ips'); return; }
      const instance = readString(ctx, row, 'instance', path, /^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/, 'an instance "group/id"');
      if (instance === undefined) return;
      const ipsNode = row.get('ips', true) as Node | undefined;
      const ips = isScalar(ipsNode) ? String(ipsNode.value ?? '').split(/[\s,]+/).filter(Boolean) : [];
      if (ips.length === 0) { ignored.push({ instance, reason: 'no IP (errand or stopped VM)' }); return; }
      if (!HOST_RE.test(ips[0])) { ctx.error(ipsNode, `${path}.ips`, `invalid IP ${JSON.stringify(ips[0])}`, 'an IP address'); return; }
      const group = instance.split('/')[0];
      cells.push({ name: instance, host: ips[0], segment: '', instanceGroup: group, loc: ctx.loc(row, path) });
    });
  });
  if (ctx.diags.length) throw new DiagnosticsError(ctx.diags);
  return { file: ctx.file, kind: 'bosh', cells, ignored };
}

/**
 * Check cell segments against the policy's segments; map bosh instance groups
 * (instanceGroups: instance group -> segment name). Returns the cells that are
 * pushed to; bosh rows of unmapped groups move to `ignored`.
 */
export function resolveSegments(inv: Inventory, segments: string[], instanceGroups: Map<string, string>, where = "the policy's segments"): Inventory {
  const diags: Diagnostic[] = [];
  const known = new Set(segments);
  const cells: Cell[] = [];
  const ignored = [...inv.ignored];
  for (const c of inv.cells) {
    if (inv.kind === 'bosh') {
      const seg = c.instanceGroup ? instanceGroups.get(c.instanceGroup) : undefined;
      if (seg === undefined) ignored.push({ instance: c.name, reason: `instance group "${c.instanceGroup}" is not named by any segment's cells.instance_group` });
      else cells.push({ ...c, segment: seg });
    } else if (!known.has(c.segment)) {
      diags.push({ severity: 'error', loc: { ...c.loc, path: `${c.loc.path}.segment` },
        message: `unknown segment ${JSON.stringify(c.segment)}`, expected: `one of ${where}: ${segments.join(', ') || '(none)'}` });
    } else cells.push(c);
  }
  if (diags.length) throw new DiagnosticsError(diags);
  return { ...inv, cells, ignored };
}

/** Fill settings the inventory leaves open from command-line defaults. */
export function withDefaults(inv: Inventory, d: SshSettings): Inventory {
  return { ...inv, cells: inv.cells.map((c) => ({ ...stripUndefined(d), ...stripUndefined(c) }) as Cell) };
}
