/**
 * What the classifier (src/ebpf/program.ts) computes, in TypeScript over the
 * map contents: longest-prefix matches, the verdict, the reply exemption, and
 * for the conntrack program the established short-circuit (`ct`: what the
 * kernel's connection table says about the packet). For tests without a
 * kernel; the kernel tests run the real program on the same maps.
 * expectedAction() is the documented meaning in terms of evaluatePlan.
 */
import { isIPv6 } from 'node:net';
import { evaluatePlan, type Membership, type Packet } from '../../src/compile/evaluate.js';
import type { Plan } from '../../src/compile/plan.js';
import { PROTO_NUM, type MapContents, type MapEntry } from '../../src/ebpf/maps.js';
import { ESTABLISHED_KEY, MAP_NAMES, TC_ACT_OK, TC_ACT_SHOT, VERDICT } from '../../src/ebpf/program.js';
import { frame, SPORT } from './packet.js';

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

/** verdict map value for (src, dst, proto, port bytes), or undefined when the source is not governed / no entry */
function verdictOf(c: MapContents, six: boolean, src: Buffer, dst: Buffer, proto: number, port: Buffer): number | undefined {
  const sc = lpm(c.maps[six ? MAP_NAMES.src6 : MAP_NAMES.src4], src);
  if (!sc) return undefined;
  const dc = lpm(c.maps[six ? MAP_NAMES.dst6 : MAP_NAMES.dst4], dst);
  const key = Buffer.alloc(8);
  sc.value.copy(key, 0, 0, 2);
  if (dc) dc.value.copy(key, 2, 0, 2);
  key[4] = proto;
  port.copy(key, 6);
  const v = lpm(c.maps[MAP_NAMES.verdict], key);
  return v ? v.value.readUInt32LE(0) : -1;
}

/** which program runs, and (conntrack program) whether the kernel's conntrack holds the packet as ESTABLISHED/RELATED */
export interface ProgramRun { conntrack?: boolean; established?: boolean; /** tcp/udp source port of the frame (default packet.ts SPORT) */ sport?: number }

export function simulate(c: MapContents, p: Packet, protoNum?: number, run: ProgramRun = {}): number {
  const f = frame(p, protoNum, run.sport);
  const six = isIPv6(p.src);
  const proto = protoNum ?? PROTO_NUM[p.proto];
  const [sOff, dOff, n, l4] = six ? [22, 38, 16, 54] : [26, 30, 4, 34];
  const src = f.subarray(sOff, sOff + n), dst = f.subarray(dOff, dOff + n);
  let port = Buffer.alloc(2), rev = Buffer.alloc(2);
  if (proto === 6 || proto === 17) { port = f.subarray(l4 + 2, l4 + 4); rev = f.subarray(l4, l4 + 2); }
  else if (proto === 1 || proto === 58) {
    port = f.subarray(l4, l4 + 2);
    rev = Buffer.from(port);
    if (rev[0] === 0) rev[0] = 8;
    else if (rev[0] === 129) rev[0] = 128;
  }
  const v = verdictOf(c, six, src, dst, proto, port);
  if (v === undefined) return TC_ACT_OK;
  if (v === -1) return TC_ACT_SHOT;
  if (v !== VERDICT.deny) return TC_ACT_OK;
  if (run.conntrack) {
    const cfg = lpm(c.maps[MAP_NAMES.verdict], ESTABLISHED_KEY);
    if (!cfg || cfg.key.readUInt32LE(0) !== 32 || cfg.value.readUInt32LE(0) !== VERDICT.allow) return TC_ACT_SHOT;
    if (proto === 6 || proto === 17) return run.established ? TC_ACT_OK : TC_ACT_SHOT;
  }
  return verdictOf(c, six, dst, src, proto, rev) === VERDICT.allow ? TC_ACT_OK : TC_ACT_SHOT;
}

/** the packet a reply to `p` answers (for the reply exemption): addresses swapped, source port as destination port */
export function reversed(p: Packet): Packet {
  const r: Packet = { src: p.dst, dst: p.src, proto: p.proto };
  if (p.proto === 'tcp' || p.proto === 'udp') r.port = SPORT;
  if (p.proto === 'icmp' || p.proto === 'icmpv6') {
    const t = p.type ?? (p.proto === 'icmp' ? 8 : 128);
    r.type = t === 0 ? 8 : t === 129 ? 128 : t;
    r.code = p.code ?? 0;
  }
  return r;
}

/**
 * TC_ACT_* the classifier must return. Stateless program: drop what evaluatePlan
 * denies, unless the reversed packet is explicitly allowed. Conntrack program:
 * evaluatePlan with the packet's conntrack state (`established`) decides tcp
 * and udp exactly; other protocols keep the reply exemption, only when the
 * policy lets established traffic through.
 */
export function expectedAction(plan: Plan, p: Packet, members?: Membership, run: ProgramRun = {}): number {
  if (!run.conntrack) {
    if (evaluatePlan(plan, p, members).verdict !== 'deny') return TC_ACT_OK;
    return evaluatePlan(plan, reversed(p)).verdict === 'allow' ? TC_ACT_OK : TC_ACT_SHOT;
  }
  const tcpUdp = p.proto === 'tcp' || p.proto === 'udp';
  if (evaluatePlan(plan, { ...p, established: tcpUdp && !!run.established }, members).verdict !== 'deny') return TC_ACT_OK;
  if (tcpUdp || evaluatePlan(plan, { ...p, established: true }, members).verdict === 'deny') return TC_ACT_SHOT;
  return evaluatePlan(plan, reversed(p)).verdict === 'allow' ? TC_ACT_OK : TC_ACT_SHOT;
}
