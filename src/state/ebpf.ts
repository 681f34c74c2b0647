/**
 * Live state of the eBPF backend on a cell: the bpffs directory cellwall owns
 * (one directory per program generation, see src/ebpf/load.ts), the
 * container-facing devices (chosen by name globs) and the program id our tc
 * filter runs on each of them; plus what the state dir records about it
 * (STATE/ebpf/: the applied input and the dynamic members).
 */
import { statfs, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CellwallError } from '../errors.js';
import { attachedProgId, generation, pinnedProgId, type Exec, type Generation } from '../ebpf/load.js';
import type { MapMember } from '../ebpf/maps.js';
import { readJson, writeAtomic } from '../apply/statedir.js';
import { runOk } from './exec.js';

/** where generations are pinned on a cell unless --bpffs says otherwise */
export const DEFAULT_BPFFS_ROOT = '/sys/fs/bpf/cellwall';
/**
 * container-facing devices unless --devices says otherwise: silk-cni's
 * host-side veths on Diego cells (`s-` + the container's address in hex);
 * matches nothing on other hosts, so nothing is attached by accident.
 */
export const DEFAULT_DEVICES = ['s-*'];
/** statfs magic of a bpf filesystem */
const BPF_FS_MAGIC = 0xcafe4a11;

/** runs a tool in this process's namespace (argv, no shell) */
export const hostExec: Exec = (argv) => runOk(argv[0], argv.slice(1));

/** `--devices` value: comma-separated globs (`*`, `?`), e.g. `s-*,veth*` */
export function parseDeviceGlobs(text: string): string[] {
  const globs = text.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = globs.find((g) => !/^[A-Za-z0-9_.:@*?-]+$/.test(g));
  if (globs.length === 0 || bad !== undefined) {
    throw new CellwallError(`--devices: expected comma-separated interface names or globs (* and ?), e.g. "s-*" or "veth*,eth1", got "${text}"`);
  }
  return globs;
}

export function globMatch(glob: string, name: string): boolean {
  const re = new RegExp('^' + glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
  return re.test(name);
}

/** names of this namespace's devices matching any glob (never `lo`), sorted */
export async function matchDevices(exec: Exec, globs: string[]): Promise<string[]> {
  const links = JSON.parse(await exec(['ip', '-j', 'link', 'show'])) as Array<{ ifname: string }>;
  return links.map((l) => l.ifname).filter((n) => n !== 'lo' && globs.some((g) => globMatch(g, n))).sort();
}

/** the root must be (or be created) on a bpf filesystem: pins elsewhere fail late and confusingly */
export async function checkBpffs(root: string): Promise<void> {
  const { mkdir } = await import('node:fs/promises');
  try {
    await mkdir(root, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new CellwallError(`--bpffs ${root}: cannot create it (${(e as NodeJS.ErrnoException).code ?? e}); expected a directory on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)`);
  }
  const s = await statfs(root);
  if (s.type !== BPF_FS_MAGIC) {
    throw new CellwallError(`--bpffs ${root}: not on a bpf filesystem (statfs type 0x${s.type.toString(16)}); mount one (mount -t bpf bpf DIR) or choose a directory under /sys/fs/bpf`);
  }
}

export interface LiveGeneration { name: string; gen: Generation; progId: number | null }
export interface EbpfLive {
  /** matching devices and the program id of our filter on each (null: none) */
  devices: Array<{ dev: string; progId: number | null }>;
  /** generation directories under the root (`g-*`) */
  generations: LiveGeneration[];
}

export async function listGenerations(exec: Exec, root: string): Promise<LiveGeneration[]> {
  let names: string[];
  try { names = (await readdir(root)).filter((n) => n.startsWith('g-')).sort(); } catch { return []; }
  const out: LiveGeneration[] = [];
  for (const name of names) {
    const gen = generation(root, name);
    const progId = await stat(gen.prog).then(() => pinnedProgId(exec, gen.prog), () => null).catch(() => null);
    out.push({ name, gen, progId });
  }
  return out;
}

export async function readLiveEbpf(exec: Exec, root: string, globs: string[]): Promise<EbpfLive> {
  const devs = await matchDevices(exec, globs);
  const devices = [];
  for (const dev of devs) devices.push({ dev, progId: await attachedProgId(exec, dev) });
  return { devices, generations: await listGenerations(exec, root) };
}

/* ---- STATE/ebpf: the applied input (for `members` rebuilds and diff --live) and the dynamic members ---- */

export const ebpfStateDir = (stateDir: string): string => join(stateDir, 'ebpf');
const membersPath = (stateDir: string): string => join(ebpfStateDir(stateDir), 'members.json');
const appliedPath = (stateDir: string): string => join(ebpfStateDir(stateDir), 'applied.json');

/** what the last successful eBPF apply applied: the payload texts the plan is rebuilt from, and the object */
export interface AppliedInput {
  source: string;
  policyHash: string | null;
  segment: string | null;
  ipset: string; v4: string; v6: string;
  /** the program objects in order of preference, base64 */
  objects: Array<{ variant: string; object: string }>;
}

export async function readMembers(stateDir: string): Promise<MapMember[]> {
  return (await readJson<{ members: MapMember[] }>(membersPath(stateDir)))?.members ?? [];
}

export async function writeMembers(stateDir: string, members: MapMember[]): Promise<void> {
  const sorted = [...members].sort((a, b) => (a.addr < b.addr ? -1 : a.addr > b.addr ? 1 : 0));
  await writeAtomic(membersPath(stateDir), JSON.stringify({ members: sorted }, null, 1) + '\n');
}

export async function readApplied(stateDir: string): Promise<AppliedInput | null> {
  return await readJson<AppliedInput>(appliedPath(stateDir));
}

export async function writeApplied(stateDir: string, a: AppliedInput): Promise<void> {
  await writeAtomic(appliedPath(stateDir), JSON.stringify(a) + '\n');
}
