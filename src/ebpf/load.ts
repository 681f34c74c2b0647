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
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bpftoolBatch, type MapContents } from './maps.js';

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
  const file = join(scratch, `maps-${process.pid}-${Date.now()}.batch`);
  await writeFile(file, text);
  await exec(['bpftool', 'batch', 'file', file]);
  return n;
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
}

/**
 * Install a policy: load a new generation (program + empty maps), fill its
 * maps, swap every device's filter to it (`tc filter replace`, atomic per
 * device), then unpin older generations (the kernel frees a program and its
 * maps when neither a pin nor a filter holds them any more). Returns the
 * generation now attached.
 */
export async function install(o: InstallOptions): Promise<Generation> {
  const { createHash } = await import('node:crypto');
  const { readdir, rm } = await import('node:fs/promises');
  const h = createHash('sha256');
  for (const [n, es] of Object.entries(o.contents.maps)) { h.update(n); for (const e of es) h.update(e.key).update(e.value); }
  const name = o.name ?? `g-${h.digest('hex').slice(0, 16)}`;
  const g = generation(o.root, name);
  await rm(g.dir, { recursive: true, force: true });
  await loadObject(o.bpftool, o.object, g);
  await fillMaps(o.bpftool, o.contents, g, o.scratch);
  for (const dev of o.devs) await attach(o.tc, dev, g.prog, 'ingress');
  for (const old of await readdir(o.root)) if (old !== name) await rm(join(o.root, old), { recursive: true, force: true });
  return g;
}
