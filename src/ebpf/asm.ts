/**
 * A tiny eBPF assembler: encodes the handful of instructions cellwall's fixed
 * classifier needs (see program.ts), resolves jump labels, and records the
 * ld_imm64 map loads that the ELF writer turns into R_BPF_64_64 relocations,
 * and the kfunc calls it turns into R_BPF_64_32 relocations.
 */

export type Reg = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10;
export type Size = 1 | 2 | 4 | 8;

const SZ: Record<Size, number> = { 4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18 };
const CLS_LD = 0x00, CLS_LDX = 0x01, CLS_ST = 0x02, CLS_STX = 0x03, CLS_JMP = 0x05, CLS_ALU64 = 0x07;
const MODE_IMM = 0x00, MODE_MEM = 0x60;
const SRC_K = 0x00, SRC_X = 0x08;
const PSEUDO_KFUNC_CALL = 2;
const ALU = { add: 0x00, sub: 0x10, mul: 0x20, or: 0x40, and: 0x50, lsh: 0x60, rsh: 0x70, mov: 0xb0 } as const;
const JMP = { ja: 0x00, jeq: 0x10, jgt: 0x20, jge: 0x30, jset: 0x40, jne: 0x50, call: 0x80, exit: 0x90 } as const;
export type AluOp = keyof typeof ALU;
export type JmpOp = Exclude<keyof typeof JMP, 'call' | 'exit' | 'ja'>;

interface Insn { code: number; dst: number; src: number; off: number; imm: number; label?: string }

export class Asm {
  private insns: Insn[] = [];
  private labels = new Map<string, number>();
  /** instruction index of each ld_imm64 that loads a map, with the map's name */
  readonly mapRefs: Array<{ insn: number; map: string }> = [];
  /** instruction index of each kfunc call, with the function's name */
  readonly kfuncRefs: Array<{ insn: number; name: string }> = [];
  /** instruction index of each kernel struct field read (CO-RE relocation) */
  readonly coreRelocs: Array<{ insn: number; struct: string; field: string }> = [];

  private push(code: number, dst: number, src: number, off: number, imm: number, label?: string): this {
    this.insns.push({ code, dst, src, off, imm, label });
    return this;
  }
  label(name: string): this {
    if (this.labels.has(name)) throw new Error(`asm: duplicate label ${name}`);
    this.labels.set(name, this.insns.length);
    return this;
  }
  alu(op: AluOp, dst: Reg, srcOrImm: Reg | { imm: number }): this {
    if (typeof srcOrImm === 'object') return this.push(CLS_ALU64 | ALU[op] | SRC_K, dst, 0, 0, srcOrImm.imm);
    return this.push(CLS_ALU64 | ALU[op] | SRC_X, dst, srcOrImm, 0, 0);
  }
  mov(dst: Reg, srcOrImm: Reg | { imm: number }): this { return this.alu('mov', dst, srcOrImm); }
  /** dst = *(size *)(src + off) */
  ldx(size: Size, dst: Reg, src: Reg, off: number): this { return this.push(CLS_LDX | MODE_MEM | SZ[size], dst, src, off, 0); }
  /** *(size *)(dst + off) = src */
  stx(size: Size, dst: Reg, off: number, src: Reg): this { return this.push(CLS_STX | MODE_MEM | SZ[size], dst, src, off, 0); }
  /** *(size *)(dst + off) = imm */
  st(size: Size, dst: Reg, off: number, imm: number): this { return this.push(CLS_ST | MODE_MEM | SZ[size], dst, 0, off, imm); }
  /** if (dst OP src|imm) goto label */
  jmp(op: JmpOp, dst: Reg, srcOrImm: Reg | { imm: number }, label: string): this {
    if (typeof srcOrImm === 'object') return this.push(CLS_JMP | JMP[op] | SRC_K, dst, 0, 0, srcOrImm.imm, label);
    return this.push(CLS_JMP | JMP[op] | SRC_X, dst, srcOrImm, 0, 0, label);
  }
  ja(label: string): this { return this.push(CLS_JMP | JMP.ja, 0, 0, 0, 0, label); }
  call(helper: number): this { return this.push(CLS_JMP | JMP.call, 0, 0, 0, helper); }
  /** the next instruction (an ldx) reads `struct.field` of a kernel object: the loader relocates its offset */
  core(struct: string, field: string): this {
    this.coreRelocs.push({ insn: this.insns.length, struct, field });
    return this;
  }
  /** call a kernel function (BPF_PSEUDO_KFUNC_CALL; the loader fills in its BTF id) */
  callKfunc(name: string): this {
    this.kfuncRefs.push({ insn: this.insns.length, name });
    return this.push(CLS_JMP | JMP.call, 0, PSEUDO_KFUNC_CALL, 0, -1);
  }
  exit(): this { return this.push(CLS_JMP | JMP.exit, 0, 0, 0, 0); }
  /** dst = &map (ld_imm64, relocated by the loader) */
  ldMap(dst: Reg, map: string): this {
    this.mapRefs.push({ insn: this.insns.length, map });
    this.push(CLS_LD | MODE_IMM | SZ[8], dst, 0, 0, 0);
    return this.push(0, 0, 0, 0, 0);
  }
  get length(): number { return this.insns.length; }

  /** the program text, 8 bytes per instruction slot, little-endian */
  bytes(): Buffer {
    const out = Buffer.alloc(this.insns.length * 8);
    this.insns.forEach((x, i) => {
      let off = x.off;
      if (x.label !== undefined) {
        const to = this.labels.get(x.label);
        if (to === undefined) throw new Error(`asm: unknown label ${x.label}`);
        off = to - i - 1;
        if (off < -32768 || off > 32767) throw new Error(`asm: jump to ${x.label} out of range`);
      }
      out[i * 8] = x.code;
      out[i * 8 + 1] = (x.src << 4) | x.dst;
      out.writeInt16LE(off, i * 8 + 2);
      out.writeInt32LE(x.imm | 0, i * 8 + 4);
    });
    return out;
  }
}
