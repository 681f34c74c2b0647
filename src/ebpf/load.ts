/**
 * Loading the eBPF backend on a cell: load the fixed program with its maps
 * pinned in a bpffs directory cellwall owns, fill the maps, attach with tc.
 *
 * A policy change loads a NEW program instance with new maps under a new
 * generation directory, fills them completely, then swaps the tc filter to it
 * in one `tc filter replace` (atomic: every packet sees either the old maps or
 * the new ones, never a half-filled map). The old generation is then removed.
 *
 * Commands run through `exec` (argv, no shell), so callers decide where they
 * run (e.g. `ip netns exec NS` for tc).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bpftoolBatch, type MapContents, type MapEntry } from './maps.js';
import { KEY_SIZE, MAP_NAMES } from './program.js';

export type Exec = (argv: string[]) => Promise<string>;

export interface Generation {
  dir: string;
  prog: string;
  maps: string;
}

export function generation(root: string, name: string): Generation {
  const dir = join(root, name);
  return { dir, prog: join(dir, 'prog'), maps: join(dir, 'maps') };
}

/** load `object` and pin the program and its maps under the generation (inside a bpffs) */
export async function loadObject(exec: Exec, object: string, g: Generation): Promise<void> {
  await mkdir(g.dir, { recursive: true });
  await exec(['bpftool', 'prog', 'load', object, g.prog, 'type', 'classifier', 'pinmaps', g.maps]);
}

/** fill the pinned maps of a generation; `scratch` is a writable directory (not bpffs) for the batch file */
export async function fillMaps(exec: Exec, contents: MapContents, g: Generation, scratch: string): Promise<number> {
  const text = bpftoolBatch(contents, g.maps);
  const n = text.split('\n').length - 1;
  if (n === 0) return 0;
  await runBatch(exec, text, scratch);
  return n;
}

/** `bpftool batch file` of these '\n'-terminated lines, through a file in `scratch` (not bpffs) removed afterwards */
export async function runBatch(exec: Exec, text: string, scratch: string): Promise<void> {
  const file = join(scratch, `batch-${process.pid}-${Date.now()}.batch`);
  await writeFile(file, text);
  try { await exec(['bpftool', 'batch', 'file', file]); } finally { await rm(file, { force: true }); }
}

/**
 * BPF_MAP_UPDATE_BATCH from python3 (ctypes, no native addon): BPF_OBJ_GET on
 * each pinned map, then one bpf(2) call per 64k entries with the keys and
 * values as contiguous arrays (the kernel's generic batch update, which LPM
 * tries have). argv: MAPDIR then NAME KEYSIZE VALUESIZE KEYFILE VALUEFILE
 * per map. Prints "ok N" per map.
 */
const FILL_PY = `
import ctypes, os, platform, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {'x86_64': 321, 'aarch64': 280, 'armv7l': 386, 'ppc64le': 361, 's390x': 351, 'riscv64': 280}[platform.machine()]
def bpf(cmd, attr, what):
    r = libc.syscall(ctypes.c_long(NR), ctypes.c_long(cmd), attr, ctypes.c_long(len(attr)))
    if r < 0:
        e = ctypes.get_errno()
        sys.stderr.write('%s: %s\\n' % (what, os.strerror(e))); sys.exit(1)
    return r
mapdir = sys.argv[1]
a = sys.argv[2:]
for i in range(0, len(a), 5):
    name, ks, vs, kf, vf = a[i], int(a[i + 1]), int(a[i + 2]), a[i + 3], a[i + 4]
    path = ctypes.create_string_buffer(os.path.join(mapdir, name).encode())
    attr = ctypes.create_string_buffer(128)
    struct.pack_into('=Q', attr, 0, ctypes.addressof(path))
    fd = bpf(7, attr, 'BPF_OBJ_GET ' + name)
    keys = open(kf, 'rb').read(); vals = open(vf, 'rb').read()
    n = len(keys) // ks
    if n * ks != len(keys) or n * vs != len(vals):
        sys.stderr.write('%s: key/value files do not match the sizes\\n' % name); sys.exit(1)
    kb = ctypes.create_string_buffer(keys, max(1, len(keys))); vb = ctypes.create_string_buffer(vals, max(1, len(vals)))
    done = 0
    while done < n:
        c = min(65536, n - done)
        attr = ctypes.create_string_buffer(128)
        struct.pack_into('=QQQQIIQQ', attr, 0, 0, 0, ctypes.addressof(kb) + done * ks, ctypes.addressof(vb) + done * vs, c, fd, 0, 0)
        bpf(26, attr, 'BPF_MAP_UPDATE_BATCH ' + name)
        done += c
    os.close(fd)
    print('ok', name, n)
`;

/**
 * The interpreter for the batch fill: $CELLWALL_PYTHON, else the system's
 * /usr/bin/python3 (a version manager's `python3` shim on PATH can cost more
 * start-up time than the fill itself), else `python3` from PATH. Run with
 * -I -S: isolated, no site packages (ctypes is in the standard library).
 */
export function python(): string {
  if (process.env.CELLWALL_PYTHON) return process.env.CELLWALL_PYTHON;
  return existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
}

/**
 * Fill the pinned maps of a generation with BPF_MAP_UPDATE_BATCH (python3
 * ctypes; about 10x faster than bpftool lines). `exec` runs python3 (any
 * namespace). Throws when python3 is missing or a syscall fails.
 */
export async function fillMapsSyscall(exec: Exec, contents: MapContents, g: Generation, scratch: string): Promise<number> {
  const args: string[] = [];
  const files: string[] = [];
  let n = 0;
  const tag = `${process.pid}-${Date.now()}`;
  for (const [name, es] of Object.entries(contents.maps)) {
    if (es.length === 0) continue;
    const kf = join(scratch, `fill-${tag}-${name}.keys`), vf = join(scratch, `fill-${tag}-${name}.values`);
    await writeFile(kf, Buffer.concat(es.map((e) => e.key)));
    await writeFile(vf, Buffer.concat(es.map((e) => e.value)));
    files.push(kf, vf);
    args.push(name, String(es[0].key.length), String(es[0].value.length), kf, vf);
    n += es.length;
  }
  try {
    if (n > 0) await exec([python(), '-I', '-S', '-c', FILL_PY, g.maps, ...args]);
  } finally {
    for (const f of files) await rm(f, { force: true });
  }
  return n;
}

export type FillMethod = 'syscall' | 'bpftool';

/**
 * Fill with BPF_MAP_UPDATE_BATCH (python3) when it works, else with one
 * `bpftool batch file` (`prefer: 'bpftool'` skips the first). Updates are
 * idempotent (BPF_ANY), so a partial first attempt is safely completed by the
 * fallback. Returns the method used and, when it fell back, why.
 */
export async function fill(exec: Exec, contents: MapContents, g: Generation, scratch: string, prefer: FillMethod = 'syscall'): Promise<{ method: FillMethod; entries: number; fallback?: string }> {
  if (prefer === 'syscall') {
    try {
      return { method: 'syscall', entries: await fillMapsSyscall(exec, contents, g, scratch) };
    } catch (e) {
      const why = (e instanceof Error ? e.message : String(e)).split('\n').filter(Boolean).slice(-1)[0] ?? 'failed';
      return { method: 'bpftool', entries: await fillMaps(exec, contents, g, scratch), fallback: `BPF_MAP_UPDATE_BATCH via python3 failed (${why}); filled with bpftool batch` };
    }
  }
  return { method: 'bpftool', entries: await fillMaps(exec, contents, g, scratch) };
}

const KEY_BYTES: Record<string, number> = {
  [MAP_NAMES.src4]: KEY_SIZE.addr4, [MAP_NAMES.dst4]: KEY_SIZE.addr4, [MAP_NAMES.src6]: KEY_SIZE.addr6, [MAP_NAMES.dst6]: KEY_SIZE.addr6, [MAP_NAMES.verdict]: KEY_SIZE.verdict,
};

/** read a generation's maps back (`bpftool map dump -j` on each pinned map, or only `names`); entries sorted by key */
export async function readMaps(exec: Exec, g: Generation, names: string[] = Object.keys(KEY_BYTES)): Promise<MapContents> {
  const maps: Record<string, MapEntry[]> = {};
  for (const name of names) {
    const out = await exec(['bpftool', '-j', 'map', 'dump', 'pinned', join(g.maps, name)]);
    const items = JSON.parse(out) as Array<{ key: string[]; value: string[] }>;
    const bytes = (xs: string[]) => Buffer.from(xs.map((x) => parseInt(x, 16)));
    maps[name] = sortEntries(items.map((it) => ({ key: bytes(it.key), value: bytes(it.value) })));
  }
  return { maps, stats: { srcClasses: 0, dstClasses: 0, verdicts: maps[MAP_NAMES.verdict]?.length ?? 0, evaluations: 0 } };
}

function sortEntries(es: MapEntry[]): MapEntry[] {
  return [...es].sort((a, b) => Buffer.compare(a.key, b.key));
}

/**
 * Canonical hash of map contents: per map (by name), entries sorted by key.
 * Equal for compiled contents and what the kernel reads back (LPM iteration
 * order differs from insertion order). Empty maps count the same as absent ones.
 */
export function contentsHash(c: MapContents): string {
  const h = createHash('sha256');
  for (const name of Object.keys(c.maps).sort()) {
    const es = c.maps[name];
    if (es.length === 0) continue;
    h.update(`${name}\0${es.length}\0`);
    for (const e of sortEntries(es)) h.update(e.key).update(e.value);
  }
  return h.digest('hex');
}

/**
 * The same policy with source classes that have identical verdict rows merged
 * into one, and source class ids numbered by their rows (not by their
 * prefixes): e.g. every dynamic member with the same home class, phase and
 * groups shares one class. Same verdicts for every packet (a class only
 * selects rows), fewer rows, and adding a prefix to an existing class leaves
 * every id as it was: so a member whose class exists can be added to the
 * live maps with one LPM insert and the result still hashes like a full
 * rebuild. Destination classes are kept as they are.
 */
export function canonicalContents(c: MapContents): MapContents {
  const srcMaps = [MAP_NAMES.src4, MAP_NAMES.src6];
  const rows = new Map<number, MapEntry[]>();
  for (const e of c.maps[MAP_NAMES.verdict] ?? []) {
    const id = e.key.readUInt16BE(4);
    let l = rows.get(id);
    if (!l) rows.set(id, (l = []));
    l.push(e);
  }
  const used = new Set<number>();
  for (const n of srcMaps) for (const e of c.maps[n] ?? []) used.add(e.value.readUInt16BE(0));
  // a class's signature: its rows without the source class bytes, sorted
  const sigOf = new Map<number, string>();
  for (const id of [...used, ...rows.keys()]) {
    if (sigOf.has(id)) continue;
    const parts = (rows.get(id) ?? []).map((e) => {
      const k = Buffer.from(e.key);
      k.writeUInt16BE(0, 4);
      return `${k.toString('hex')}=${e.value.toString('hex')}`;
    }).sort();
    sigOf.set(id, parts.join(','));
  }
  const sigs = [...new Set([...used].map((id) => sigOf.get(id)!))].sort();
  const newId = new Map(sigs.map((s, i) => [s, i + 1]));
  const remap = (id: number): number => newId.get(sigOf.get(id)!)!;
  const maps: Record<string, MapEntry[]> = { ...c.maps };
  for (const n of srcMaps) {
    if (!c.maps[n]) continue;
    maps[n] = c.maps[n].map((e) => {
      const v = Buffer.from(e.value);
      v.writeUInt16BE(remap(e.value.readUInt16BE(0)), 0);
      return { key: e.key, value: v };
    });
  }
  // one set of rows per merged class; source class 0 is never a class (its row is the policy's `established`
  // setting, ESTABLISHED_KEY) and stays as it is; rows of other classes no prefix selects are dropped (unreachable)
  const verdictIn: MapEntry[] = (rows.get(0) ?? []).map((e) => ({ key: e.key, value: e.value }));
  used.delete(0);
  const from = new Map<number, number>();
  for (const id of [...rows.keys()].sort((a, b) => a - b)) if (used.has(id) && !from.has(remap(id))) from.set(remap(id), id);
  const verdict: MapEntry[] = verdictIn;
  for (const [to, id] of [...from].sort((a, b) => a[0] - b[0])) {
    for (const e of rows.get(id)!) {
      const k = Buffer.from(e.key);
      k.writeUInt16BE(to, 4);
      verdict.push({ key: k, value: e.value });
    }
  }
  if (c.maps[MAP_NAMES.verdict]) maps[MAP_NAMES.verdict] = verdict;
  return { maps, stats: { ...c.stats, srcClasses: newId.size, verdicts: verdict.length } };
}

/** id of the program pinned at `prog` (bpftool -j prog show pinned) */
export async function pinnedProgId(exec: Exec, prog: string): Promise<number> {
  const j = JSON.parse(await exec(['bpftool', '-j', 'prog', 'show', 'pinned', prog])) as { id: number };
  return j.id;
}

/** id of the program of our filter (pref 1, handle 1) on the device's tc hook, or null */
export async function attachedProgId(exec: Exec, dev: string, hook: 'ingress' | 'egress' = 'ingress'): Promise<number | null> {
  const out = await exec(['tc', '-j', 'filter', 'show', 'dev', dev, hook]);
  const fs = JSON.parse(out.trim() || '[]') as Array<{ pref?: number; kind?: string; options?: { handle?: string; prog?: { id?: number } } }>;
  const f = fs.find((x) => x.pref === 1 && x.kind === 'bpf' && x.options?.handle === '0x1' && x.options.prog?.id !== undefined);
  return f?.options?.prog?.id ?? null;
}

/** remove our filter only (other filters and the clsact qdisc stay) */
export async function unattach(exec: Exec, dev: string, hook: 'ingress' | 'egress' = 'ingress'): Promise<void> {
  await exec(['tc', 'filter', 'del', 'dev', dev, hook, 'pref', '1', 'handle', '1', 'bpf']);
}

/**
 * Attach (or atomically swap to) the program pinned at `prog` on `dev`, on the
 * given hook of its clsact qdisc. `tc` must run in the device's namespace
 * (the caller's `exec`). Direct action: TC_ACT_SHOT drops, TC_ACT_OK passes.
 */
export async function attach(exec: Exec, dev: string, prog: string, hook: 'ingress' | 'egress' = 'ingress'): Promise<void> {
  const qd = await exec(['tc', 'qdisc', 'show', 'dev', dev]);
  if (!/qdisc clsact/.test(qd)) await exec(['tc', 'qdisc', 'add', 'dev', dev, 'clsact']);
  await exec(['tc', 'filter', 'replace', 'dev', dev, hook, 'pref', '1', 'handle', '1', 'bpf', 'da', 'pinned', prog]);
}

export async function detach(exec: Exec, dev: string): Promise<void> {
  await exec(['tc', 'qdisc', 'del', 'dev', dev, 'clsact']);
}

export interface InstallOptions {
  /** bpffs directory cellwall owns (e.g. /sys/fs/bpf/cellwall on a cell) */
  root: string;
  /** the compiled object (`cellwall.bpf.o`) */
  object: string;
  contents: MapContents;
  /** container-facing devices; the program runs on their tc ingress */
  devs: string[];
  /** runs bpftool (any namespace) */
  bpftool: Exec;
  /** runs tc in the devices' namespace */
  tc: Exec;
  /** writable scratch directory (not bpffs) */
  scratch: string;
  /** generation name; default: a content hash of the maps */
  name?: string;
  /** fill path (default syscall, falling back to bpftool) */
  fill?: FillMethod;
}

/**
 * Install a policy: load a new generation (program + empty maps), fill its
 * maps, swap every device's filter to it (`tc filter replace`, atomic per
 * device), then unpin older generations (the kernel frees a program and its
 * maps when neither a pin nor a filter holds them any more). Returns the
 * generation now attached.
 */
export async function install(o: InstallOptions): Promise<Generation> {
  const { readdir } = await import('node:fs/promises');
  const name = o.name ?? `g-${contentsHash(o.contents).slice(0, 16)}`;
  const g = generation(o.root, name);
  await rm(g.dir, { recursive: true, force: true });
  await loadObject(o.bpftool, o.object, g);
  await fill(o.bpftool, o.contents, g, o.scratch, o.fill);
  for (const dev of o.devs) await attach(o.tc, dev, g.prog, 'ingress');
  for (const old of await readdir(o.root)) if (old !== name) await rm(join(o.root, old), { recursive: true, force: true });
  return g;
}
