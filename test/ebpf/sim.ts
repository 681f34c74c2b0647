/**
 * What the classifier (src/ebpf/program.ts) computes, in TypeScript over the
 * map contents: longest-prefix matches, then the verdict. For tests without a
 * kernel; the kernel tests check the real program against the same maps.
 */
import { isIPv6 } from 'node:net';
import type { Packet } from '../../src/compile/evaluate.js';
import { PROTO_NUM, type MapContents, type MapEntry } from '../../src/ebpf/maps.js';
import { MAP_NAMES, TC_ACT_OK, TC_ACT_SHOT } from '../../src/ebpf/program.js';
import { frame } from './packet.js';

function lpm(entries: MapEntry[], data: Buffer): MapEntry | undefined {
  let best: MapEntry | undefined;
  let bestLen = -1;
  for (const e of entries) {
    const len = e.key.readUInt32LE(0);
    if (len <= bestLen) continue;
    let ok = true;
    for (let bit = 0; bit < len && ok; bit++) {
      const byte = bit >> 3, mask = 0x80 >> (bit & 7);
      if ((e.key[4 + byte] & mask) !== (data[byte] & mask)) ok = false;
    }
    if (ok) { best = e; bestLen = len; }
  }
  return best;
}

export function simulate(c: MapContents, p: Packet, protoNum?: number): number {
  const f = frame(p, protoNum);
  const six = isIPv6(p.src);
  const proto = protoNum ?? PROTO_NUM[p.proto];
  const [sOff, dOff, n, l4] = six ? [22, 38, 16, 54] : [26, 30, 4, 34];
  const sc = lpm(c.maps[six ? MAP_NAMES.src6 : MAP_NAMES.src4], f.subarray(sOff, sOff + n));
  if (!sc) return TC_ACT_OK;
  const dc = lpm(c.maps[six ? MAP_NAMES.dst6 : MAP_NAMES.dst4], f.subarray(dOff, dOff + n));
  const key = Buffer.alloc(8);
  sc.value.copy(key, 0, 0, 2);
  if (dc) dc.value.copy(key, 2, 0, 2);
  key[4] = proto;
  if (proto === 6 || proto === 17) f.copy(key, 6, l4 + 2, l4 + 4);
  else if (proto === 1 || proto === 58) f.copy(key, 6, l4, l4 + 2);
  const v = lpm(c.maps[MAP_NAMES.verdict], key);
  return v && v.value.readUInt32LE(0) === 0 ? TC_ACT_OK : TC_ACT_SHOT;
}
