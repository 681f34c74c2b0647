/**
 * Loader and raw bindings of build/cellwall.wasm (assembly/). Loaded once,
 * synchronously, on first use. Every top-level operation starts with
 * reset(), which rewinds the WASM bump arena: memory stays bounded by the
 * largest single operation, however long the process runs.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';

export interface CoreExports {
  memory: WebAssembly.Memory;
  reset(): void;
  alloc(n: number): number;
  accBegin(): void;
  parseLines(buf: number, len: number, flags: number, line0: number): number;
  parseEntries(buf: number, len: number, flags: number): number;
  parseLists(buf: number, len: number, flags: number): number;
  normalize4(): number;
  normalize6(): number;
  op4(kind: number, a: number, na: number, b: number, nb: number, out: number): number;
  op6(kind: number, a: number, na: number, b: number, nb: number, out: number): number;
  renderSet(fam: number, p: number, n: number, flags: number): bigint;
  renderLines(fam: number, p: number, n: number, flags: number, pre: number, preLen: number, suf: number, sufLen: number): bigint;
  reduceSet(fam: number, p: number, n: number, percent: number, minEntries: bigint, flags: number): bigint;
  coverSet(fam: number, p: number, n: number, mode: number, flags: number): bigint;
  lookupFromRanges(fam: number, ranges: number, n: number): number;
  lookupFromSet(fam: number, p: number, n: number, base: number): number;
  lookupText(t4: number, n4: number, t6: number, n6: number, text: number, len: number, out: number): number;
  lookupU32(t4: number, n4: number, addrs: number, n: number, out: number): void;
  okCount(): number;
  errCount(): number;
  recPtr(): number;
  recLen(): number;
  outPtr(): number;
  outLen(): number;
  resPtr(): number;
  tablePtr(): number;
}

// error codes (assembly/parse.ts)
export const E = {
  EMPTY: 1, BAD_CHAR: 2, V4_TRAILING_DOT: 3, V4_LEADING_ZERO: 4, V4_OCTET_RANGE: 5, V4_FEW_OCTETS: 6,
  V4_MANY_OCTETS: 7, V4_EMPTY_OCTET: 8, V6_GROUP_LONG: 9, V6_EMPTY_GROUP: 10, V6_MULTI_DC: 11,
  V6_FEW_GROUPS: 12, V6_MANY_GROUPS: 13, V6_LEADING_COLON: 14, V6_TRAILING_COLON: 15, V6_V4_POSITION: 16,
  PREFIX_EMPTY: 17, PREFIX_LEADING_ZERO: 18, PREFIX_TOO_LONG: 19, HOST_BITS: 20, RANGE_REVERSED: 21,
  RANGE_MIXED: 22, RANGE_NOT_ALLOWED: 23, ADDRESS_NOT_ALLOWED: 24, CIDR_NOT_ALLOWED: 25,
} as const;

// parse flags
export const F_STRICT = 1;
export const F_RANGES = 2;
export const F_ADDRS = 4;
export const F_CIDRS = 8;
export const F_EXACT = 16;
// render flags / cover modes
export const F_BARE = 1;
export const MODE_COUNT = 1;

let core: CoreExports | undefined;

/** Directory holding package.json, walking up from this module (src/core under vitest, dist/src/core at run time). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cellwall: cannot locate package.json (needed to find build/cellwall.wasm)');
    dir = up;
  }
}

export function wasm(): CoreExports {
  if (core) return core;
  const file = join(packageRoot(), 'build', 'cellwall.wasm');
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    throw new Error(`cellwall: ${file} is missing; run \`npm run build\``);
  }
  // The hot loops run inside one long call each, which cannot tier up from V8's baseline
  // compiler while running: compile the (small) module with the optimising compiler up front.
  setFlagsFromString('--no-liftoff');
  const inst = new WebAssembly.Instance(new WebAssembly.Module(Uint8Array.from(bytes)), {});
  core = inst.exports as unknown as CoreExports;
  return core;
}

/** Copy bytes into a fresh arena block; returns its address. */
export function put(w: CoreExports, bytes: ArrayBufferView): number {
  const n = bytes.byteLength;
  const p = w.alloc(n);
  new Uint8Array(w.memory.buffer, p, n).set(new Uint8Array(bytes.buffer, bytes.byteOffset, n));
  return p;
}

/** Copy n bytes out of WASM memory. */
export function bytesAt(w: CoreExports, p: number, n: number): Uint8Array {
  return new Uint8Array(w.memory.buffer.slice(p, p + n));
}
