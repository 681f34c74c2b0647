/**
 * A minimal relocatable ELF64 (little-endian, EM_BPF) writer for one program
 * section plus BTF-described maps, as libbpf 1.x (bpftool, iproute2 tc) loads
 * them: .strtab, the program section, .rel<section> (R_BPF_64_64 on the map
 * ld_imm64 instructions), license, .maps, .BTF, .symtab. No .BTF.ext.
 *
 * Each map is declared the way `__uint(type, ...)` etc. in C are: a VAR in the
 * `.maps` DATASEC whose type is a struct of pointers to int arrays whose
 * element count carries the value.
 *
 * Kernel functions (kfuncs) are declared the way clang emits `extern ...
 * __ksym` functions: an undefined global NOTYPE symbol, an R_BPF_64_32
 * relocation on each `call` instruction (src_reg BPF_PSEUDO_KFUNC_CALL), and
 * in .BTF an extern FUNC with its FUNC_PROTO listed in a `.ksyms` DATASEC.
 * libbpf resolves them against the kernel's BTF at load time (and checks the
 * prototypes are compatible: same arity, pointers to structs, integers).
 *
 * Reads of kernel struct fields carry CO-RE relocations (.BTF.ext core_relo,
 * BPF_CORE_FIELD_BYTE_OFFSET, as clang emits for `__builtin_preserve_access_index`):
 * the struct is declared in .BTF with the fields read at their offsets on the
 * kernel the program was written for, and libbpf rewrites each load's offset
 * for the kernel it loads on (by struct and field name).
 */

export interface MapDef {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** a kfunc parameter or return type: void, u32, or a pointer to a named struct */
export type KfuncType = 'void' | 'u32' | { ptrToStruct: string };

/** an extern kernel function the program calls */
export interface KfuncDecl {
  name: string;
  params: Array<{ name: string; type: KfuncType }>;
  ret: KfuncType;
}

export interface ElfProgram {
  /** section name, e.g. `tc` (libbpf derives the program type from it) */
  section: string;
  /** function symbol name */
  name: string;
  code: Buffer;
  /** ld_imm64 instruction indexes that load a map */
  mapRefs: Array<{ insn: number; map: string }>;
  maps: MapDef[];
  license: string;
  /** `call` instruction indexes that call a kfunc, with its name (declared in `kfuncs`) */
  kfuncRefs?: Array<{ insn: number; name: string }>;
  kfuncs?: KfuncDecl[];
  /** kernel structs (named in kfunc types) with the fields the program reads */
  structs?: StructDecl[];
  /** ldx instructions that read `struct.field` (the insn's offset is the declared one; libbpf adjusts it) */
  coreRelocs?: Array<{ insn: number; struct: string; field: string }>;
}

/** a kernel struct as the program sees it: its size and the (u64) fields it reads, at byte offsets */
export interface StructDecl { name: string; size: number; fields: Array<{ name: string; offset: number }> }

export const BPF_MAP_TYPE_HASH = 1;
export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_MAP_TYPE_LPM_TRIE = 11;
export const BPF_F_NO_PREALLOC = 1;

const EM_BPF = 247;
const R_BPF_64_64 = 1;
const R_BPF_64_32 = 10;
const MAP_FIELDS = ['type', 'key_size', 'value_size', 'max_entries', 'map_flags'] as const;
const MAP_STRUCT_SIZE = MAP_FIELDS.length * 8;

class StrTab {
  private parts: Buffer[] = [Buffer.from([0])];
  private size = 1;
  private seen = new Map<string, number>();
  add(s: string): number {
    const hit = this.seen.get(s);
    if (hit !== undefined) return hit;
    const off = this.size;
    const b = Buffer.from(`${s}\0`, 'utf8');
    this.parts.push(b);
    this.size += b.length;
    this.seen.set(s, off);
    return off;
  }
  bytes(): Buffer { return Buffer.concat(this.parts); }
}

function u32s(...v: number[]): Buffer {
  const b = Buffer.alloc(v.length * 4);
  v.forEach((x, i) => b.writeUInt32LE(x >>> 0, i * 4));
  return b;
}

const KIND = { INT: 1, PTR: 2, ARRAY: 3, STRUCT: 4, FUNC: 12, FUNC_PROTO: 13, VAR: 14, DATASEC: 15 } as const;
const BTF_FUNC_EXTERN = 2;
const BPF_CORE_FIELD_BYTE_OFFSET = 0;
const info = (kind: number, vlen = 0) => ((kind << 24) | vlen) >>> 0;

/**
 * .BTF for the maps: int, arrays for every number used, the map structs, a VAR
 * per map, the .maps DATASEC; then, for kfuncs, their FUNC_PROTOs, extern FUNCs
 * and the .ksyms DATASEC.
 */
export function mapsBtf(maps: MapDef[], kfuncs: KfuncDecl[] = [], structs: StructDecl[] = []): Buffer {
  return programBtf(maps, kfuncs, structs, []).btf;
}

/** .BTF (with `extra` strings appended for .BTF.ext), plus the string offsets and struct type ids .BTF.ext refers to */
function programBtf(maps: MapDef[], kfuncs: KfuncDecl[], structs: StructDecl[], extra: string[]): { btf: Buffer; str: (s: string) => number; structId: (name: string) => number } {
  const strs = new StrTab();
  const structIds = new Map<string, number>();
  const types: Buffer[] = [];
  const add = (b: Buffer) => { types.push(b); return types.length; };
  const INT = add(Buffer.concat([u32s(strs.add('int'), info(KIND.INT), 4), u32s((1 << 24) | 32)]));
  const ptrTo = new Map<number, number>();
  const ptr = (n: number): number => {
    let id = ptrTo.get(n);
    if (id === undefined) {
      const arr = add(Buffer.concat([u32s(0, info(KIND.ARRAY), 0), u32s(INT, INT, n)]));
      id = add(u32s(0, info(KIND.PTR), arr));
      ptrTo.set(n, id);
    }
    return id;
  };
  const vars: number[] = [];
  for (const m of maps) {
    const vals = [m.type, m.keySize, m.valueSize, m.maxEntries, m.flags];
    const members = MAP_FIELDS.map((f, i) => u32s(strs.add(f), ptr(vals[i]), i * 64));
    const st = add(Buffer.concat([u32s(0, info(KIND.STRUCT, MAP_FIELDS.length), MAP_STRUCT_SIZE), ...members]));
    vars.push(add(Buffer.concat([u32s(strs.add(m.name), info(KIND.VAR), st), u32s(1)])));
  }
  add(Buffer.concat([
    u32s(strs.add('.maps'), info(KIND.DATASEC, maps.length), maps.length * MAP_STRUCT_SIZE),
    ...vars.map((v, i) => u32s(v, i * MAP_STRUCT_SIZE, MAP_STRUCT_SIZE)),
  ]));
  if (kfuncs.length) {
    let U32 = 0, U64 = 0;
    const structPtr = new Map<string, number>();
    const typeId = (t: KfuncType): number => {
      if (t === 'void') return 0;
      if (t === 'u32') return U32 || (U32 = add(Buffer.concat([u32s(strs.add('unsigned int'), info(KIND.INT), 4), u32s(32)])));
      let id = structPtr.get(t.ptrToStruct);
      if (id === undefined) {
        // the struct's layout is the kernel's business: declared empty (enough for libbpf's prototype check),
        // or with the fields the program reads (CO-RE relocations match them by name)
        const decl = structs.find((x) => x.name === t.ptrToStruct);
        let st: number;
        if (!decl) st = add(u32s(strs.add(t.ptrToStruct), info(KIND.STRUCT, 0), 0));
        else {
          U64 ||= add(Buffer.concat([u32s(strs.add('long unsigned int'), info(KIND.INT), 8), u32s(64)]));
          const members = decl.fields.map((f) => u32s(strs.add(f.name), U64, f.offset * 8));
          st = add(Buffer.concat([u32s(strs.add(decl.name), info(KIND.STRUCT, members.length), decl.size), ...members]));
        }
        structIds.set(t.ptrToStruct, st);
        structPtr.set(t.ptrToStruct, (id = add(u32s(0, info(KIND.PTR), st))));
      }
      return id;
    };
    const funcs = kfuncs.map((k) => {
      const params = k.params.map((p) => u32s(strs.add(p.name), typeId(p.type)));
      const proto = add(Buffer.concat([u32s(0, info(KIND.FUNC_PROTO, params.length), typeId(k.ret)), ...params]));
      return add(u32s(strs.add(k.name), (info(KIND.FUNC) | BTF_FUNC_EXTERN) >>> 0, proto));
    });
    add(Buffer.concat([u32s(strs.add('.ksyms'), info(KIND.DATASEC, funcs.length), 0), ...funcs.map((f) => u32s(f, 0, 0))]));
  }
  for (const x of extra) strs.add(x);
  const t = Buffer.concat(types);
  const s = strs.bytes();
  const hdr = Buffer.alloc(24);
  hdr.writeUInt16LE(0xeb9f, 0);
  hdr[2] = 1; // version
  hdr[3] = 0; // flags
  hdr.writeUInt32LE(24, 4);
  hdr.writeUInt32LE(0, 8); // type_off
  hdr.writeUInt32LE(t.length, 12);
  hdr.writeUInt32LE(t.length, 16); // str_off
  hdr.writeUInt32LE(s.length, 20);
  const structId = (name: string) => {
    const id = structIds.get(name);
    if (id === undefined) throw new Error(`elf: struct ${name} is not declared in a kfunc type`);
    return id;
  };
  const str = (x: string) => {
    if (!extra.includes(x)) throw new Error(`elf: string ${x} is not in .BTF`);
    return strs.add(x);
  };
  return { btf: Buffer.concat([hdr, t, s]), str, structId };
}

/**
 * .BTF.ext with only CO-RE relocations (no func_info / line_info): header,
 * then record size, then for the program section its name (a .BTF string) and
 * records {insn byte offset, local struct type id, access string "0:<field index>", kind}.
 * The strings must already be in the .BTF string table (programBtf adds them first).
 */
function coreBtfExt(section: string, relocs: NonNullable<ElfProgram['coreRelocs']>, access: string[], str: (s: string) => number, structId: (n: string) => number): Buffer {
  const recs = relocs.map((r, i) => u32s(r.insn * 8, structId(r.struct), str(access[i]), BPF_CORE_FIELD_BYTE_OFFSET));
  const body = Buffer.concat([u32s(16, str(section), recs.length), ...recs]);
  const hdr = Buffer.alloc(32);
  hdr.writeUInt16LE(0xeb9f, 0);
  hdr[2] = 1;
  hdr.writeUInt32LE(32, 4);
  // func_info and line_info: offset 0, length 0; core_relo at 0
  hdr.writeUInt32LE(0, 24);
  hdr.writeUInt32LE(body.length, 28);
  return Buffer.concat([hdr, body]);
}

interface Section { name: string; type: number; flags: number; data: Buffer; link?: number; info?: number; align: number; entsize?: number }

const SHT_PROGBITS = 1, SHT_SYMTAB = 2, SHT_STRTAB = 3, SHT_REL = 9;
const SHF_WRITE = 1, SHF_ALLOC = 2, SHF_EXECINSTR = 4;
const STB_GLOBAL = 1, STT_NOTYPE = 0, STT_OBJECT = 1, STT_FUNC = 2;

export function writeElf(p: ElfProgram): Buffer {
  const strtab = new StrTab();
  // section indexes (0 is the null section)
  const SEC_STRTAB = 1, SEC_PROG = 2, SEC_REL = 3, SEC_LICENSE = 4, SEC_MAPS = 5, SEC_BTF = 6, SEC_SYMTAB = 7;
  const mapIndex = new Map(p.maps.map((m, i) => [m.name, i]));
  // symbols: null, then globals: program, license, maps
  const syms: Buffer[] = [Buffer.alloc(24)];
  const sym = (name: string, type: number, shndx: number, value: number, size: number) => {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(strtab.add(name), 0);
    b[4] = (STB_GLOBAL << 4) | type;
    b[5] = 0;
    b.writeUInt16LE(shndx, 6);
    b.writeBigUInt64LE(BigInt(value), 8);
    b.writeBigUInt64LE(BigInt(size), 16);
    syms.push(b);
    return syms.length - 1;
  };
  const license = Buffer.from(`${p.license}\0`);
  sym(p.name, STT_FUNC, SEC_PROG, 0, p.code.length);
  sym('_license', STT_OBJECT, SEC_LICENSE, 0, license.length);
  const mapSym = p.maps.map((m, i) => sym(m.name, STT_OBJECT, SEC_MAPS, i * MAP_STRUCT_SIZE, MAP_STRUCT_SIZE));
  // kfuncs: undefined global symbols, resolved by libbpf against the kernel's BTF
  const kfuncs = p.kfuncs ?? [];
  const kfuncSym = new Map(kfuncs.map((k) => [k.name, sym(k.name, STT_NOTYPE, 0, 0, 0)]));
  const relocs: Array<[number, number, number]> = p.mapRefs.map((r) => {
    const mi = mapIndex.get(r.map);
    if (mi === undefined) throw new Error(`elf: program refers to undeclared map ${r.map}`);
    return [r.insn, mapSym[mi], R_BPF_64_64];
  });
  for (const r of p.kfuncRefs ?? []) {
    const si = kfuncSym.get(r.name);
    if (si === undefined) throw new Error(`elf: program calls undeclared kfunc ${r.name}`);
    relocs.push([r.insn, si, R_BPF_64_32]);
  }
  relocs.sort((a, b) => a[0] - b[0]);
  const rels = Buffer.alloc(relocs.length * 16);
  relocs.forEach(([insn, s, type], i) => {
    rels.writeBigUInt64LE(BigInt(insn * 8), i * 16);
    rels.writeBigUInt64LE((BigInt(s) << 32n) | BigInt(type), i * 16 + 8);
  });
  const structs = p.structs ?? [];
  const relos = p.coreRelocs ?? [];
  // access strings "0:<field index>"; they and the section name go into .BTF's string table
  const access = relos.map((r) => {
    const fi = structs.find((x) => x.name === r.struct)?.fields.findIndex((f) => f.name === r.field) ?? -1;
    if (fi < 0) throw new Error(`elf: CO-RE relocation of undeclared field ${r.struct}.${r.field}`);
    return `0:${fi}`;
  });
  const built = programBtf(p.maps, kfuncs, structs, relos.length ? [p.section, ...access] : []);
  const ext = relos.length ? coreBtfExt(p.section, relos, access, built.str, built.structId) : undefined;
  const sections: Section[] = [
    { name: '.strtab', type: SHT_STRTAB, flags: 0, data: Buffer.alloc(0), align: 1 },
    { name: p.section, type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, data: p.code, align: 8 },
    { name: `.rel${p.section}`, type: SHT_REL, flags: 0, data: rels, link: SEC_SYMTAB, info: SEC_PROG, align: 8, entsize: 16 },
    { name: 'license', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, data: license, align: 1 },
    { name: '.maps', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, data: Buffer.alloc(p.maps.length * MAP_STRUCT_SIZE), align: 8 },
    { name: '.BTF', type: SHT_PROGBITS, flags: 0, data: built.btf, align: 4 },
    { name: '.symtab', type: SHT_SYMTAB, flags: 0, data: Buffer.concat(syms), link: SEC_STRTAB, info: 1, align: 8, entsize: 24 },
    ...(ext ? [{ name: '.BTF.ext', type: SHT_PROGBITS, flags: 0, data: ext, align: 4 }] : []),
  ];
  if (sections[SEC_SYMTAB - 1].name !== '.symtab' || sections[SEC_BTF - 1].name !== '.BTF') throw new Error('elf: section layout');
  const nameOff = sections.map((s) => strtab.add(s.name));
  sections[SEC_STRTAB - 1].data = strtab.bytes();

  // layout: header, section data, section header table
  const chunks: Buffer[] = [];
  let off = 64;
  const offsets: number[] = [];
  for (const s of sections) {
    const pad = (s.align - (off % s.align)) % s.align;
    if (pad) chunks.push(Buffer.alloc(pad));
    off += pad;
    offsets.push(off);
    chunks.push(s.data);
    off += s.data.length;
  }
  const shPad = (8 - (off % 8)) % 8;
  chunks.push(Buffer.alloc(shPad));
  const shoff = off + shPad;
  const shdrs = Buffer.alloc((sections.length + 1) * 64);
  sections.forEach((s, i) => {
    const b = (i + 1) * 64;
    shdrs.writeUInt32LE(nameOff[i], b);
    shdrs.writeUInt32LE(s.type, b + 4);
    shdrs.writeBigUInt64LE(BigInt(s.flags), b + 8);
    shdrs.writeBigUInt64LE(0n, b + 16); // addr
    shdrs.writeBigUInt64LE(BigInt(offsets[i]), b + 24);
    shdrs.writeBigUInt64LE(BigInt(s.data.length), b + 32);
    shdrs.writeUInt32LE(s.link ?? 0, b + 40);
    shdrs.writeUInt32LE(s.info ?? 0, b + 44);
    shdrs.writeBigUInt64LE(BigInt(s.align), b + 48);
    shdrs.writeBigUInt64LE(BigInt(s.entsize ?? 0), b + 56);
  });
  const eh = Buffer.alloc(64);
  eh.write('\x7fELF', 0, 'latin1');
  eh[4] = 2; // ELFCLASS64
  eh[5] = 1; // little-endian
  eh[6] = 1; // EV_CURRENT
  eh.writeUInt16LE(1, 16); // ET_REL
  eh.writeUInt16LE(EM_BPF, 18);
  eh.writeUInt32LE(1, 20);
  eh.writeBigUInt64LE(0n, 24); // entry
  eh.writeBigUInt64LE(0n, 32); // phoff
  eh.writeBigUInt64LE(BigInt(shoff), 40);
  eh.writeUInt32LE(0, 48);
  eh.writeUInt16LE(64, 52); // ehsize
  eh.writeUInt16LE(0, 54);
  eh.writeUInt16LE(0, 56);
  eh.writeUInt16LE(64, 58); // shentsize
  eh.writeUInt16LE(sections.length + 1, 60);
  eh.writeUInt16LE(SEC_STRTAB, 62); // shstrndx
  return Buffer.concat([eh, ...chunks, shdrs]);
}
