// Bump arena over linear memory. JS calls reset() at the start of every
// top-level operation, so a long-running process never grows past the
// largest single operation. No managed objects are used anywhere in the
// core (runtime "stub" is never asked to allocate).

let top: usize = 0;

export function reset(): void {
  top = (__heap_base + 15) & ~<usize>15;
}

export function alloc(n: usize): usize {
  if (top == 0) reset();
  const p = top;
  const nt = (p + n + 15) & ~<usize>15;
  const need = <i32>((nt + 0xffff) >>> 16);
  const have = memory.size();
  if (need > have) {
    // grow by half again at least (each grow is a call into the engine; a bump
    // arena growing page by page made thousands of them), else just enough
    let want = have + (have >> 1);
    if (want < have + 256) want = have + 256;
    if (want < need) want = need;
    if (memory.grow(want - have) < 0 && memory.grow(need - have) < 0) unreachable();
  }
  top = nt;
  return p;
}

/** Grow a buffer of `cap` bytes at p to at least `want` bytes; extends in place when it is the last allocation. */
export function regrow(p: usize, used: usize, cap: usize, want: usize): usize {
  let nc = cap << 1;
  if (nc < want) nc = want;
  if (nc < 256) nc = 256;
  if (p != 0 && ((p + cap + 15) & ~<usize>15) == top) {
    alloc(nc - cap);
    capOut = nc;
    return p;
  }
  const q = alloc(nc);
  if (used) memory.copy(q, p, used);
  capOut = nc;
  return q;
}
/** capacity chosen by the last regrow() */
export let capOut: usize = 0;

// --- growable byte vectors used by the parser and renderers -------------
// v4 accumulator: u64 records (start << 32 | end)
export let v4p: usize = 0; export let v4n: usize = 0; export let v4cap: usize = 0;
// v6 accumulator: 4 x u64 records (shi, slo, ehi, elo)
export let v6p: usize = 0; export let v6n: usize = 0; export let v6cap: usize = 0;
// error records (lines mode) / entry records (entries mode)
export let rp: usize = 0; export let rn: usize = 0; export let rcap: usize = 0;
// text output
export let op: usize = 0; export let on: usize = 0; export let ocap: usize = 0;

export function accBegin(): void {
  v4p = 0; v4n = 0; v4cap = 0;
  v6p = 0; v6n = 0; v6cap = 0;
  rp = 0; rn = 0; rcap = 0;
  op = 0; on = 0; ocap = 0;
}

/** empty the address accumulators, keeping their room (one list after another in parseLists) */
export function accClear(): void {
  v4n = 0; v6n = 0;
}

// @ts-ignore: decorator
@inline export function push4(s: u32, e: u32): void {
  const b = v4n << 3;
  if (b + 8 > v4cap) { v4p = regrow(v4p, b, v4cap, b + 8); v4cap = capOut; }
  store<u64>(v4p + b, (<u64>s << 32) | <u64>e);
  v4n++;
}

export function push6(shi: u64, slo: u64, ehi: u64, elo: u64): void {
  const b = v6n << 5;
  if (b + 32 > v6cap) { v6p = regrow(v6p, b, v6cap, b + 32); v6cap = capOut; }
  const q = v6p + b;
  store<u64>(q, shi); store<u64>(q, slo, 8); store<u64>(q, ehi, 16); store<u64>(q, elo, 24);
  v6n++;
}

/** reserve `n` bytes at the end of the record vector, return the pointer */
export function recReserve(n: usize): usize {
  if (rn + n > rcap) { rp = regrow(rp, rn, rcap, rn + n); rcap = capOut; }
  const q = rp + rn;
  rn += n;
  return q;
}

/** make room for n more bytes of text output, return write pointer */
export function outReserve(n: usize): usize {
  if (on + n > ocap) { op = regrow(op, on, ocap, on + n); ocap = capOut; }
  return op + on;
}

// @ts-ignore: decorator
@inline export function outAdvance(n: usize): void { on += n; }
// @ts-ignore: decorator
@inline export function outLen(): usize { return on; }
