/**
 * cellwall's fixed eBPF classifier (tc, direct action). The policy lives
 * entirely in its maps (see maps.ts); a policy change never changes this code.
 *
 *   1. IPv4 / IPv6 only (anything else: TC_ACT_OK);
 *   2. source address -> source class via LPM trie (cw_src4 / cw_src6);
 *      no match: not governed, TC_ACT_OK;
 *   3. destination address -> destination class via LPM trie (cw_dst4 /
 *      cw_dst6); no match: class 0;
 *   4. verdict via one LPM trie keyed by the bytes
 *        source class (2) . destination class (2) . protocol (1) . 0 (1) . port (2)
 *      where port is the tcp/udp destination port, or icmp type . code; the
 *      map holds prefixes over the port so port ranges cost few entries, and a
 *      32-bit prefix (both classes only) for every other protocol;
 *   5. verdict DENY: go to 6; no entry: TC_ACT_SHOT (fail closed); else TC_ACT_OK;
 *   6. the stateless program (buildObject()): reply exemption: when the
 *      REVERSED packet (destination as source, source port as destination
 *      port, echo reply as echo request) comes from a governed source and is
 *      explicitly ALLOWed, the packet may be a reply and passes; otherwise
 *      TC_ACT_SHOT.
 *      The conntrack program (buildObject({ conntrack: true })): only when the
 *      policy's `established` is accept (the verdict map's ESTABLISHED_KEY
 *      entry says ALLOW): tcp/udp packets are looked up in the kernel's
 *      connection table (kfunc bpf_skb_ct_lookup with the packet's tuple); an
 *      entry that has seen a reply, was expected (RELATED), or that the packet
 *      answers (reply direction) passes, anything else is TC_ACT_SHOT (the
 *      entry is always released, bpf_ct_release). The kfunc handles tcp and
 *      udp only: other protocols (icmp echo replies) keep the reply exemption.
 * Bounded, loop-free, 8 map lookups at most.
 */
import { Asm } from './asm.js';
import { BPF_F_NO_PREALLOC, BPF_MAP_TYPE_LPM_TRIE, writeElf, type KfuncDecl, type MapDef, type StructDecl } from './elf.js';

export const PROGRAM_SECTION = 'tc';
export const PROGRAM_NAME = 'cellwall';
export const MAP_NAMES = { src4: 'cw_src4', dst4: 'cw_dst4', src6: 'cw_src6', dst6: 'cw_dst6', verdict: 'cw_verdict' } as const;
/** capacity of every map (LPM tries without preallocation: only the entries present use memory) */
export const MAP_MAX_ENTRIES = 1 << 20;
/** key bytes: u32 prefix length then the data */
export const KEY_SIZE = { addr4: 8, addr6: 20, verdict: 12 } as const;
/** bits of the verdict key before the port: two classes, protocol, zero byte */
export const VERDICT_PORT_BIT = 48;

/** verdict map values */
export const VERDICT = { untouched: 0, deny: 1, allow: 2 } as const;
/**
 * The verdict-map key data (with prefix length 32) of the policy's
 * `established` setting: source class 0 (never a real source class),
 * destination class 0; value ALLOW when `defaults.established` is accept.
 * Only the conntrack program reads it.
 */
export const ESTABLISHED_KEY = Buffer.alloc(8);

/** the kernel functions the conntrack program calls (net/netfilter/nf_conntrack_bpf.c) */
export const CT_KFUNCS: KfuncDecl[] = [
  {
    name: 'bpf_skb_ct_lookup',
    params: [
      { name: 'skb_ctx', type: { ptrToStruct: '__sk_buff' } }, { name: 'bpf_tuple', type: { ptrToStruct: 'bpf_sock_tuple' } },
      { name: 'tuple__sz', type: 'u32' }, { name: 'opts', type: { ptrToStruct: 'bpf_ct_opts' } }, { name: 'opts__sz', type: 'u32' },
    ],
    ret: { ptrToStruct: 'nf_conn' },
  },
  { name: 'bpf_ct_release', params: [{ name: 'nfct', type: { ptrToStruct: 'nf_conn' } }], ret: 'void' },
];

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
const HELPER_MAP_LOOKUP = 1;

export function mapDefs(): MapDef[] {
  const lpm = (name: string, keySize: number): MapDef => ({
    name, type: BPF_MAP_TYPE_LPM_TRIE, keySize, valueSize: 4, maxEntries: MAP_MAX_ENTRIES, flags: BPF_F_NO_PREALLOC,
  });
  return [
    lpm(MAP_NAMES.src4, KEY_SIZE.addr4), lpm(MAP_NAMES.dst4, KEY_SIZE.addr4),
    lpm(MAP_NAMES.src6, KEY_SIZE.addr6), lpm(MAP_NAMES.dst6, KEY_SIZE.addr6),
    lpm(MAP_NAMES.verdict, KEY_SIZE.verdict),
  ];
}

// stack layout (offsets from r10)
const ADDR_KEY = -24; // u32 prefixlen, then 4 or 16 address bytes
const V_KEY = -40; // u32 prefixlen, then the 8 data bytes
/** u16: the port of the reversed packet (reply exemption); for tcp/udp the source port */
const REV_PORT = -44;
/** conntrack program: the context pointer (u64), the ESTABLISHED_KEY lookup key, the bpf_sock_tuple, the bpf_ct_opts */
const CTX = -56, CFG_KEY = -72, TUPLE = -112, OPTS = -128;
/**
 * bpf_ct_opts as every kernel with the kfuncs takes it (NF_BPF_CT_OPTS_OLD_SZ, 12 bytes: netns_id s32,
 * error s32, l4proto u8, dir u8, reserved[2]; newer kernels also take 16 bytes with zone fields, older
 * ones only 12)
 */
const OPTS_SIZE = 12, OPTS_L4PROTO = 8, OPTS_DIR = 9;
const BPF_F_CURRENT_NETNS = -1;
/**
 * struct nf_conn: `unsigned long status` at its offset on the kernel this was written for (6.18); the load
 * carries a CO-RE relocation, so libbpf puts the offset of the kernel it loads on. IPS_EXPECTED | IPS_SEEN_REPLY.
 */
const NF_CONN_STATUS = 128, NF_CONN_SIZE = 248, IPS_EXPECTED_OR_SEEN_REPLY = 0x3;
export const CT_STRUCTS: StructDecl[] = [{ name: 'nf_conn', size: NF_CONN_SIZE, fields: [{ name: 'status', offset: NF_CONN_STATUS }] }];
const V_SRC = V_KEY + 4, V_DST = V_KEY + 6, V_PROTO = V_KEY + 8, V_ZERO = V_KEY + 9, V_PORT = V_KEY + 10;
// __sk_buff
const SKB_DATA = 76, SKB_DATA_END = 80;
const ETH_HLEN = 14;
const V4_SRC = ETH_HLEN + 12, V4_DST = ETH_HLEN + 16, V6_SRC = ETH_HLEN + 8, V6_DST = ETH_HLEN + 24;

export interface ProgramOptions {
  /** established/related via the kernel's conntrack (kfuncs; needs kernel BTF and nf_conntrack) instead of the reply exemption */
  conntrack?: boolean;
}

export function classifier(opts: ProgramOptions = {}): Asm {
  const a = new Asm();
  const lookup = (map: string, keyOff: number) => {
    a.ldMap(1, map).mov(2, 10).alu('add', 2, { imm: keyOff }).call(HELPER_MAP_LOOKUP);
  };
  /** copy `words` u32 from packet (r7 + from) to the stack at `to` */
  const copy = (from: number, to: number, words: number) => {
    for (let i = 0; i < words; i++) a.ldx(4, 3, 7, from + i * 4).stx(4, 10, to + i * 4, 3);
  };
  /** src class into the verdict key (not governed: pass), then the dst class */
  const classify = (srcMap: string, dstMap: string, srcOff: number, dstOff: number, words: number, bits: number, tag: string, ungoverned = 'pass') => {
    a.st(4, 10, ADDR_KEY, bits);
    copy(srcOff, ADDR_KEY + 4, words);
    lookup(srcMap, ADDR_KEY);
    a.jmp('jeq', 0, { imm: 0 }, ungoverned);
    a.ldx(2, 3, 0, 0).stx(2, 10, V_SRC, 3);
    copy(dstOff, ADDR_KEY + 4, words);
    lookup(dstMap, ADDR_KEY);
    a.mov(3, { imm: 0 }).jmp('jeq', 0, { imm: 0 }, `dc${tag}`).ldx(2, 3, 0, 0);
    a.label(`dc${tag}`).stx(2, 10, V_DST, 3);
  };

  if (opts.conntrack) a.stx(8, 10, CTX, 1);
  a.mov(6, 1).ldx(4, 7, 6, SKB_DATA).ldx(4, 8, 6, SKB_DATA_END);
  a.mov(2, 7).alu('add', 2, { imm: ETH_HLEN }).jmp('jgt', 2, 8, 'pass');
  a.ldx(2, 3, 7, 12); // h_proto, network order read as little-endian
  a.jmp('jeq', 3, { imm: 0x0008 }, 'v4');
  a.jmp('jne', 3, { imm: 0xdd86 }, 'pass');
  // IPv6: fixed 40-byte header, next header taken as the protocol; r6 = family from here on
  a.mov(2, 7).alu('add', 2, { imm: ETH_HLEN + 40 }).jmp('jgt', 2, 8, 'pass');
  a.mov(6, { imm: 6 }).ldx(1, 9, 7, ETH_HLEN + 6);
  classify(MAP_NAMES.src6, MAP_NAMES.dst6, V6_SRC, V6_DST, 4, 128, '6');
  a.mov(4, { imm: ETH_HLEN + 40 }).ja('l4');
  // IPv4
  a.label('v4');
  a.mov(2, 7).alu('add', 2, { imm: ETH_HLEN + 20 }).jmp('jgt', 2, 8, 'pass');
  a.mov(6, { imm: 4 }).ldx(1, 9, 7, ETH_HLEN + 9);
  classify(MAP_NAMES.src4, MAP_NAMES.dst4, V4_SRC, V4_DST, 1, 32, '4');
  // a non-first fragment carries no ports
  a.ldx(2, 3, 7, ETH_HLEN + 6).alu('and', 3, { imm: 0xff1f }).jmp('jne', 3, { imm: 0 }, 'noport');
  a.ldx(1, 4, 7, ETH_HLEN).alu('and', 4, { imm: 0x0f }).alu('lsh', 4, { imm: 2 }).alu('add', 4, { imm: ETH_HLEN });
  // r4: offset of the L4 header, r9: protocol; r3 gets the port, REV_PORT the reversed packet's
  a.label('l4');
  a.mov(5, 7).alu('add', 5, 4).mov(2, 5).alu('add', 2, { imm: 4 }).jmp('jgt', 2, 8, 'noport');
  a.jmp('jeq', 9, { imm: 6 }, 'ports').jmp('jeq', 9, { imm: 17 }, 'ports');
  a.jmp('jeq', 9, { imm: 1 }, 'icmp').jmp('jeq', 9, { imm: 58 }, 'icmp');
  a.label('noport').mov(3, { imm: 0 }).stx(2, 10, REV_PORT, 3).ja('key');
  a.label('ports').ldx(2, 3, 5, 2).ldx(2, 4, 5, 0).stx(2, 10, REV_PORT, 4).ja('key');
  // icmp: bytes type, code (read little-endian: type is the low byte); echo reply reverses to echo request
  a.label('icmp').ldx(2, 3, 5, 0).mov(4, 3).alu('and', 4, { imm: 0xff }).mov(2, 3).alu('and', 2, { imm: 0xff00 });
  a.jmp('jne', 4, { imm: 0 }, 'icmp129').mov(4, { imm: 8 }).ja('icmprev');
  a.label('icmp129').jmp('jne', 4, { imm: 129 }, 'icmprev').mov(4, { imm: 128 });
  a.label('icmprev').alu('or', 4, 2).stx(2, 10, REV_PORT, 4);
  a.label('key').stx(2, 10, V_PORT, 3).stx(1, 10, V_PROTO, 9).st(1, 10, V_ZERO, 0).st(4, 10, V_KEY, VERDICT_PORT_BIT + 16);
  lookup(MAP_NAMES.verdict, V_KEY);
  a.jmp('jeq', 0, { imm: 0 }, 'drop');
  a.ldx(4, 3, 0, 0).jmp('jne', 3, { imm: VERDICT.deny }, 'pass');
  if (opts.conntrack) conntrack(a, lookup, copy);
  // reply exemption: classify the reversed packet (same stack keys), look its verdict up
  a.jmp('jeq', 6, { imm: 6 }, 'rev6');
  classify(MAP_NAMES.src4, MAP_NAMES.dst4, V4_DST, V4_SRC, 1, 32, 'r4', 'drop');
  a.ja('revport');
  a.label('rev6');
  classify(MAP_NAMES.src6, MAP_NAMES.dst6, V6_DST, V6_SRC, 4, 128, 'r6', 'drop');
  a.label('revport').ldx(2, 3, 10, REV_PORT).stx(2, 10, V_PORT, 3);
  lookup(MAP_NAMES.verdict, V_KEY);
  a.jmp('jeq', 0, { imm: 0 }, 'drop');
  a.ldx(4, 3, 0, 0).jmp('jeq', 3, { imm: VERDICT.allow }, 'pass');
  a.label('drop').mov(0, { imm: TC_ACT_SHOT }).exit();
  a.label('pass').mov(0, { imm: TC_ACT_OK }).exit();
  return a;
}

/**
 * The deny path of the conntrack program (registers: r6 family, r7 packet
 * start, r9 protocol; the ports are on the stack): established/related tcp
 * and udp pass, other tcp/udp is dropped, other protocols fall through to the
 * reply exemption that follows.
 */
function conntrack(a: Asm, lookup: (map: string, keyOff: number) => void, copy: (from: number, to: number, words: number) => void): void {
  // defaults.established: accept?
  a.st(4, 10, CFG_KEY, 32).st(4, 10, CFG_KEY + 4, 0).st(4, 10, CFG_KEY + 8, 0);
  lookup(MAP_NAMES.verdict, CFG_KEY);
  a.jmp('jeq', 0, { imm: 0 }, 'drop');
  a.ldx(4, 3, 0, 0).jmp('jne', 3, { imm: VERDICT.allow }, 'drop');
  a.jmp('jeq', 9, { imm: 6 }, 'ct').jmp('jeq', 9, { imm: 17 }, 'ct').ja('ctdone');
  a.label('ct');
  a.st(4, 10, OPTS, BPF_F_CURRENT_NETNS).st(4, 10, OPTS + 4, 0).st(4, 10, OPTS + 8, 0);
  a.stx(1, 10, OPTS + OPTS_L4PROTO, 9);
  // bpf_sock_tuple: saddr, daddr, sport, dport (network order, as in the packet)
  a.jmp('jeq', 6, { imm: 6 }, 'ct6');
  copy(V4_SRC, TUPLE, 1);
  copy(V4_DST, TUPLE + 4, 1);
  a.ldx(2, 3, 10, REV_PORT).stx(2, 10, TUPLE + 8, 3).ldx(2, 3, 10, V_PORT).stx(2, 10, TUPLE + 10, 3);
  a.mov(3, { imm: 12 }).ja('ctcall');
  a.label('ct6');
  copy(V6_SRC, TUPLE, 4);
  copy(V6_DST, TUPLE + 16, 4);
  a.ldx(2, 3, 10, REV_PORT).stx(2, 10, TUPLE + 32, 3).ldx(2, 3, 10, V_PORT).stx(2, 10, TUPLE + 34, 3);
  a.mov(3, { imm: 36 });
  a.label('ctcall');
  a.ldx(8, 1, 10, CTX).mov(2, 10).alu('add', 2, { imm: TUPLE }).mov(4, 10).alu('add', 4, { imm: OPTS }).mov(5, { imm: OPTS_SIZE });
  a.callKfunc('bpf_skb_ct_lookup');
  a.jmp('jeq', 0, { imm: 0 }, 'drop');
  // established or related: the packet answers the entry (reply direction), or the entry has seen a reply / was expected
  a.core('nf_conn', 'status').ldx(8, 7, 0, NF_CONN_STATUS).alu('and', 7, { imm: IPS_EXPECTED_OR_SEEN_REPLY });
  a.ldx(1, 8, 10, OPTS + OPTS_DIR).alu('or', 7, 8);
  a.mov(1, 0).callKfunc('bpf_ct_release');
  a.jmp('jne', 7, { imm: 0 }, 'pass').ja('drop');
  a.label('ctdone');
}

/**
 * The relocatable object `cellwall.bpf.o`: by default the stateless program
 * (reply exemption); `{ conntrack: true }`: the program that asks the kernel's
 * conntrack (needs kfunc support; load it first and fall back to the default).
 */
export function buildObject(opts: ProgramOptions = {}): Buffer {
  return objectFor(opts);
}

/**
 * The objects a loader should try, in order: the conntrack program, then the
 * stateless one for kernels where libbpf or the verifier refuse the kfuncs
 * (no kernel BTF, nf_conntrack without BPF support, kernel < 6.0); say which
 * one was loaded. Both read the same maps.
 */
export function objectsToTry(): Array<{ variant: 'conntrack' | 'stateless'; object: Buffer }> {
  return [{ variant: 'conntrack', object: buildObject({ conntrack: true }) }, { variant: 'stateless', object: buildObject() }];
}

function objectFor(opts: ProgramOptions): Buffer {
  const a = classifier(opts);
  return writeElf({
    section: PROGRAM_SECTION, name: PROGRAM_NAME, code: a.bytes(), mapRefs: a.mapRefs, maps: mapDefs(), license: 'GPL',
    ...(opts.conntrack ? { kfuncRefs: a.kfuncRefs, kfuncs: CT_KFUNCS, structs: CT_STRUCTS, coreRelocs: a.coreRelocs } : {}),
  });
}
