/** Crafted Ethernet frames for `bpftool prog run ... data_in` (checksums are not checked by the classifier). */
import { isIPv6 } from 'node:net';
import type { Packet } from '../../src/compile/evaluate.js';

const PROTO = { tcp: 6, udp: 17, icmp: 1, icmpv6: 58 } as const;
/** the source port of every crafted tcp/udp frame */
export const SPORT = 40000;

function v4bytes(a: string): number[] { return a.split('.').map(Number); }
function v6bytes(a: string): number[] {
  const [head, tail] = a.includes('::') ? a.split('::') : [a, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  return groups.flatMap((g) => { const n = parseInt(g, 16); return [n >> 8, n & 0xff]; });
}

/** an Ethernet frame for the packet; `protoNum` overrides the protocol number (other protocols) */
export function frame(p: Packet, protoNum?: number, sport = SPORT): Buffer {
  const six = isIPv6(p.src);
  const proto = protoNum ?? PROTO[p.proto];
  let l4: number[];
  if (proto === 6) l4 = [sport >> 8, sport & 0xff, (p.port ?? 0) >> 8, (p.port ?? 0) & 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
  else if (proto === 17) l4 = [sport >> 8, sport & 0xff, (p.port ?? 0) >> 8, (p.port ?? 0) & 0xff, 0, 8, 0, 0];
  else if (proto === 1 || proto === 58) l4 = [p.type ?? (proto === 1 ? 8 : 128), p.code ?? 0, 0, 0, 0, 1, 0, 1];
  else l4 = [0, 0, 0, 0, 0, 0, 0, 0];
  const eth = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, ...(six ? [0x86, 0xdd] : [0x08, 0x00])];
  let ip: number[];
  if (six) ip = [0x60, 0, 0, 0, l4.length >> 8, l4.length & 0xff, proto, 64, ...v6bytes(p.src), ...v6bytes(p.dst)];
  else {
    const len = 20 + l4.length;
    ip = [0x45, 0, len >> 8, len & 0xff, 0, 1, 0x40, 0, 64, proto, 0, 0, ...v4bytes(p.src), ...v4bytes(p.dst)];
  }
  return Buffer.from([...eth, ...ip, ...l4]);
}
