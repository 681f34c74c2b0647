// Stable LSD radix sort of fixed-size records of u64 words. All digit
// histograms are built in one pass; a digit where every record falls in the
// same bucket is skipped (geoip v6 starts share most of their bytes).
import { alloc } from './mem';

const MAXP = 17;
const hist = memory.data(MAXP * 256 * 4);
export const passWord = memory.data(MAXP); // word index of each pass (least significant pass first)
export const passShift = memory.data(MAXP); // bit shift of each pass

/** Sorts n records of R words at src; returns the pointer holding the sorted data (src or a scratch copy). */
export function radixSort(src: usize, n: usize, R: usize, np: i32): usize {
  if (n < 2) return src;
  memory.fill(hist, 0, <usize>(np * 256 * 4));
  const rb = R << 3;
  const end = src + n * rb;
  for (let q = src; q < end; q += rb) {
    for (let p = 0; p < np; p++) {
      const w = <usize>load<u8>(passWord + p);
      const sh = <u64>load<u8>(passShift + p);
      const d = <usize>((load<u64>(q + (w << 3)) >> sh) & 0xff);
      const h = hist + ((<usize>p << 8) + d) * 4;
      store<u32>(h, load<u32>(h) + 1);
    }
  }
  let cur = src;
  let tmp: usize = 0;
  for (let p = 0; p < np; p++) {
    const hp = hist + (<usize>p << 10);
    // skip a digit that is the same for every record
    let trivial = false;
    for (let d = 0; d < 256; d++) {
      const c = <usize>load<u32>(hp + (d << 2));
      if (c == n) { trivial = true; break; }
      if (c != 0) break;
    }
    if (trivial) continue;
    let sum: u32 = 0;
    for (let d = 0; d < 256; d++) {
      const c = load<u32>(hp + (d << 2));
      store<u32>(hp + (d << 2), sum);
      sum += c;
    }
    if (tmp == 0) tmp = alloc(n * rb);
    const dst = cur == src ? tmp : src;
    const w = <usize>load<u8>(passWord + p);
    const sh = <u64>load<u8>(passShift + p);
    const cend = cur + n * rb;
    if (R == 1) {
      for (let q = cur; q < cend; q += 8) {
        const v = load<u64>(q);
        const h = hp + (<usize>((v >> sh) & 0xff) << 2);
        const pos = load<u32>(h);
        store<u32>(h, pos + 1);
        store<u64>(dst + (<usize>pos << 3), v);
      }
    } else {
      for (let q = cur; q < cend; q += rb) {
        const h = hp + (<usize>((load<u64>(q + (w << 3)) >> sh) & 0xff) << 2);
        const pos = load<u32>(h);
        store<u32>(h, pos + 1);
        const d = dst + <usize>pos * rb;
        for (let x: usize = 0; x < rb; x += 8) store<u64>(d + x, load<u64>(q + x));
      }
    }
    cur = dst;
  }
  return cur;
}

/** set the passes: bytes [b0, b1) of word w, appended after `at` passes; returns new count */
export function setPasses(at: i32, w: u8, b0: i32, b1: i32): i32 {
  for (let b = b0; b < b1; b++) {
    store<u8>(passWord + at, w);
    store<u8>(passShift + at, <u8>(b << 3));
    at++;
  }
  return at;
}
