/** Offsets of the fields of struct user_regs_struct (NT_PRSTATUS, 216 bytes), and a view by name. */
export const REG = Object.freeze({
  r15: 0,
  r14: 8,
  r13: 16,
  r12: 24,
  rbp: 32,
  rbx: 40,
  r11: 48,
  r10: 56,
  r9: 64,
  r8: 72,
  rax: 80,
  rcx: 88,
  rdx: 96,
  rsi: 104,
  rdi: 112,
  orig_rax: 120,
  rip: 128,
  cs: 136,
  eflags: 144,
  rsp: 152,
  ss: 160,
  fs_base: 168,
  gs_base: 176,
  ds: 184,
  es: 192,
  fs: 200,
  gs: 208,
});
export type RegName = keyof typeof REG;

/** A decoded view of a GPR buffer: read and write registers by name as signed/unsigned bigints. */
export class Regs {
  constructor(readonly buf: Buffer) {}
  get(r: RegName): bigint {
    return this.buf.readBigUInt64LE(REG[r]);
  }
  signed(r: RegName): bigint {
    return this.buf.readBigInt64LE(REG[r]);
  }
  set(r: RegName, v: bigint | number): this {
    this.buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)), REG[r]);
    return this;
  }
  clone(): Regs {
    return new Regs(Buffer.from(this.buf));
  }
  toJSON(): Record<string, string> {
    const o: Record<string, string> = {};
    for (const k of Object.keys(REG) as RegName[]) o[k] = '0x' + this.get(k).toString(16);
    return o;
  }
}
