// WASM entry: the address core. All data crosses the boundary in bulk
// buffers inside linear memory (see src/core/wasm.ts for the JS side).
import * as mem from './mem';
import * as parse from './parse';
import * as sets from './sets';
import * as render from './render';
import * as lookup from './lookup';

export { reset, alloc, accBegin } from './mem';
export { parseLines, parseEntries, parseLists } from './parse';
export { normalize4, normalize6, op4, op6 } from './sets';
export { renderSet, renderLines, reduceSet, coverSet } from './render';
export { lookupFromRanges, lookupFromSet, lookupText, lookupU32 } from './lookup';

export function okCount(): u32 { return parse.okCount; }
export function errCount(): u32 { return parse.errCount; }
export function recPtr(): usize { return mem.rp; }
export function recLen(): usize { return mem.rn; }
export function outPtr(): usize { return mem.op; }
export function outLen(): usize { return mem.on; }
export function resPtr(): usize { return sets.resPtr; }
export function tablePtr(): usize { return lookup.tablePtr; }
export function accCount4(): usize { return mem.v4n; }
export function accCount6(): usize { return mem.v6n; }
export function coverCount(): u64 { return render.coverCount; }
