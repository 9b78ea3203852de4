//! A small eBPF disassembler that prints what `llvm-objdump-14 -d` prints.
//!
//! The opcode byte of an [`Insn`] is three fields (the names are those of
//! include/uapi/linux/bpf_common.h and bpf.h):
//!
//! ```text
//!  bit   7 6 5 4    3      2 1 0
//!       +-------+--------+-------+
//!       |  op   | source | class |   BPF_ALU, BPF_ALU64, BPF_JMP, BPF_JMP32
//!       +-------+--------+-------+
//!       | mode  |  size  | class |   BPF_LD, BPF_LDX, BPF_ST, BPF_STX
//!       +-------+--------+-------+
//!        7 6 5   4 3      2 1 0
//! ```
//!
//! so `0x0f` is `BPF_ALU64 | BPF_X | BPF_ADD` (`r1 += r2`) and `0x61` is
//! `BPF_LDX | BPF_W | BPF_MEM` (`r1 = *(u32 *)(r2 + 0)`). The source bit says
//! where the second operand comes from: `BPF_K` (0) the `imm` field, `BPF_X`
//! (8) the `src` register. 32-bit ALU and JMP32 operands are written as `w`
//! registers, 64-bit ones as `r` registers.
//!
//! llvm-14 does not know a few instructions the kernel has had for long and
//! prints `<unknown>` for them: `BPF_MOD` (`r1 %= r2`), `BPF_JSET`
//! (`if r1 & r2 goto +1`), `BPF_ST` (`*(u32 *)(r1 + 0) = 4`) and the 32-bit
//! atomics other than add (a 32-bit fetch-add it misreads as a plain add).
//! We print these as later llvm versions do, with `r` registers for the
//! 32-bit atomics as llvm-14 has for the add. Like llvm-14, we do not know
//! the cpu v4 additions (`sdiv`, `movsx`, `ldsx`, `bswap`, `gotol`): those
//! with an opcode of their own are `<unknown>`, those that reuse an older
//! opcode through `off` print as the older instruction. Fields an
//! instruction does not use are not checked (llvm-14 calls an `exit` with a
//! register set `<unknown>`; we print `exit`), and an atomic with an
//! unknown `imm` is `<unknown>` (llvm-14 prints it as an add).

use std::fmt;

use crate::insn::{CALL, EXIT, Insn};

/// What llvm prints for bytes that are no instruction.
pub const UNKNOWN: &str = "<unknown>";

// Instruction classes: the low three bits of the opcode.
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_ST: u8 = 0x02;
const BPF_STX: u8 = 0x03;
const BPF_ALU: u8 = 0x04;
const BPF_JMP: u8 = 0x05;
const BPF_JMP32: u8 = 0x06;
const BPF_ALU64: u8 = 0x07;

/// Source bit of ALU and JMP opcodes: the `src` register, not `imm`.
/// For `BPF_END` the same bit selects `BPF_TO_BE` over `BPF_TO_LE`.
const BPF_X: u8 = 0x08;

/// ALU operations written `dst op= operand` (`BPF_MOV` is plain `=`).
const ALU_OPS: [(u8, &str); 12] = [
    (0x00, "+="),   // BPF_ADD
    (0x10, "-="),   // BPF_SUB
    (0x20, "*="),   // BPF_MUL
    (0x30, "/="),   // BPF_DIV
    (0x40, "|="),   // BPF_OR
    (0x50, "&="),   // BPF_AND
    (0x60, "<<="),  // BPF_LSH
    (0x70, ">>="),  // BPF_RSH
    (0x90, "%="),   // BPF_MOD
    (0xa0, "^="),   // BPF_XOR
    (0xb0, "="),    // BPF_MOV
    (0xc0, "s>>="), // BPF_ARSH
];
/// `dst = -dst`; only with `BPF_K`.
const BPF_NEG: u8 = 0x80;
/// Byte swap to little (`BPF_TO_LE`) or big (`BPF_TO_BE`) endian; `imm` is
/// the width: 16, 32 or 64.
const BPF_END: u8 = 0xd0;

/// Conditional jumps, written `if dst op operand goto +off`.
const JMP_OPS: [(u8, &str); 11] = [
    (0x10, "=="),  // BPF_JEQ
    (0x20, ">"),   // BPF_JGT
    (0x30, ">="),  // BPF_JGE
    (0x40, "&"),   // BPF_JSET
    (0x50, "!="),  // BPF_JNE
    (0x60, "s>"),  // BPF_JSGT
    (0x70, "s>="), // BPF_JSGE
    (0xa0, "<"),   // BPF_JLT
    (0xb0, "<="),  // BPF_JLE
    (0xc0, "s<"),  // BPF_JSLT
    (0xd0, "s<="), // BPF_JSLE
];
/// `BPF_JMP | BPF_JA`: `goto +off`.
const JA: u8 = 0x05;
/// `BPF_JMP | BPF_CALL | BPF_X`: llvm-14 takes the register (r0 to r11)
/// from `imm`.
const CALLX: u8 = 0x8d;

// Modes of the load and store classes: the high three bits.
const BPF_IMM: u8 = 0x00;
const BPF_ABS: u8 = 0x20;
const BPF_IND: u8 = 0x40;
const BPF_MEM: u8 = 0x60;
const BPF_ATOMIC: u8 = 0xc0;

/// Atomic read-modify-write operations, selected by `imm`:
/// `lock *(u64 *)(r1 + 0) += r2`, or with `BPF_FETCH`, which also returns
/// the old value, `r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)`.
const ATOMIC_OPS: [(i32, &str, &str); 4] = [
    (0x00, "+=", "add"), // BPF_ADD
    (0x40, "|=", "or"),  // BPF_OR
    (0x50, "&=", "and"), // BPF_AND
    (0xa0, "^=", "xor"), // BPF_XOR
];
const BPF_FETCH: i32 = 0x01;
/// `BPF_XCHG` (0xe0 | `BPF_FETCH`): swap `src` with memory.
const BPF_XCHG: i32 = 0xe1;
/// `BPF_CMPXCHG` (0xf0 | `BPF_FETCH`): store `src` if memory equals `r0`;
/// `r0` gets the old value.
const BPF_CMPXCHG: i32 = 0xf1;

/// Number of slots the instruction takes: 2 for `ld_imm64`, else 1. llvm
/// prints no line for the second slot.
pub fn insn_len(insn: Insn) -> usize {
    if insn.is_ld_imm64() { 2 } else { 1 }
}

/// The text llvm-objdump-14 prints for the instruction starting at `index`
/// (jump targets as `goto +8`, without llvm's ` <LBB0_4>` label).
pub fn insn_text(insns: &[Insn], index: usize) -> String {
    let insn = insns[index];
    let text = match class(insn) {
        BPF_ALU | BPF_ALU64 => alu(insn),
        BPF_JMP | BPF_JMP32 => jmp(insn),
        BPF_LD => ld(insn, insns.get(index + 1)),
        BPF_LDX if mode(insn) == BPF_MEM => Some(format!(
            "r{} = *({} *)({})",
            insn.dst(),
            size(insn),
            mem(insn.src(), insn.off)
        )),
        BPF_ST if mode(insn) == BPF_MEM => Some(format!(
            "*({} *)({}) = {}",
            size(insn),
            mem(insn.dst(), insn.off),
            insn.imm
        )),
        BPF_STX => stx(insn),
        _ => None,
    };
    text.unwrap_or_else(|| UNKNOWN.to_string())
}

/// One line of a listing: where an instruction starts, its bytes, its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The slot index (llvm's first column).
    pub index: usize,
    /// 8 bytes, or 16 for `ld_imm64`.
    pub bytes: Vec<u8>,
    pub text: String,
}

/// Formats the line as llvm-objdump does: `  index:\tbytes\ttext`.
impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.bytes.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "{:>8}:\t{}\t{}", self.index, hex.join(" "), self.text)
    }
}

/// Lists every instruction of a program. A trailing `ld_imm64` without its
/// second slot gets one slot and `<unknown>`.
pub fn disassemble(insns: &[Insn]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut index = 0;
    while index < insns.len() {
        let len = insn_len(insns[index]).min(insns.len() - index);
        lines.push(Line {
            index,
            bytes: insns[index..index + len]
                .iter()
                .flat_map(|i| i.to_bytes())
                .collect(),
            text: insn_text(insns, index),
        });
        index += len;
    }
    lines
}

fn alu(insn: Insn) -> Option<String> {
    let reg = if class(insn) == BPF_ALU64 { 'r' } else { 'w' };
    let dst = format!("{reg}{}", insn.dst());
    match insn.code & 0xf0 {
        BPF_NEG if insn.code & BPF_X == 0 => Some(format!("{dst} = -{dst}")),
        // Only in BPF_ALU, and written with r registers.
        BPF_END if class(insn) == BPF_ALU && matches!(insn.imm, 16 | 32 | 64) => {
            let order = if insn.code & BPF_X != 0 { "be" } else { "le" };
            Some(format!("r{0} = {order}{1} r{0}", insn.dst(), insn.imm))
        }
        op => {
            let (_, sym) = ALU_OPS.iter().find(|(o, _)| *o == op)?;
            Some(format!("{dst} {sym} {}", operand(insn, reg)))
        }
    }
}

fn jmp(insn: Insn) -> Option<String> {
    match insn.code {
        JA => return Some(format!("goto {:+}", insn.off)),
        // A helper number, or for a pseudo call (src 1) the callee's
        // distance from the next slot: -1 in an object, where a relocation
        // names the callee.
        CALL => return Some(format!("call {}", insn.imm)),
        CALLX if (0..=11).contains(&insn.imm) => return Some(format!("callx r{}", insn.imm)),
        EXIT => return Some("exit".to_string()),
        _ => {}
    }
    let reg = if class(insn) == BPF_JMP { 'r' } else { 'w' };
    let (_, sym) = JMP_OPS.iter().find(|(o, _)| *o == insn.code & 0xf0)?;
    Some(format!(
        "if {reg}{} {sym} {} goto {:+}",
        insn.dst(),
        operand(insn, reg),
        insn.off
    ))
}

/// `BPF_LD`: `ld_imm64` (`BPF_IMM | BPF_DW`) and the legacy packet loads
/// `BPF_ABS` and `BPF_IND`, which always load into `r0`.
fn ld(insn: Insn, next: Option<&Insn>) -> Option<String> {
    match mode(insn) {
        BPF_IMM if insn.is_ld_imm64() => {
            let next = next?;
            if insn.src() == 0 {
                // The second slot's imm is the upper half.
                let value = (i64::from(next.imm) << 32) | i64::from(insn.imm as u32);
                Some(format!("r{} = {value} ll", insn.dst()))
            } else {
                // A map reference (src says what imm is): llvm-14 prints
                // src and imm, with a tab after the mnemonic.
                Some(format!(
                    "ld_pseudo\tr{}, {}, {}",
                    insn.dst(),
                    insn.src(),
                    insn.imm as u32
                ))
            }
        }
        BPF_ABS if size(insn) != "u64" => {
            Some(format!("r0 = *({} *)skb[{}]", size(insn), insn.imm))
        }
        BPF_IND if size(insn) != "u64" => {
            Some(format!("r0 = *({} *)skb[r{}]", size(insn), insn.src()))
        }
        _ => None,
    }
}

fn stx(insn: Insn) -> Option<String> {
    let (size, addr, src) = (size(insn), mem(insn.dst(), insn.off), insn.src());
    match mode(insn) {
        BPF_MEM => Some(format!("*({size} *)({addr}) = r{src}")),
        BPF_ATOMIC if matches!(size, "u32" | "u64") => {
            let bits = if size == "u64" { "_64" } else { "32_32" };
            match insn.imm {
                BPF_XCHG => Some(format!("r{src} = xchg{bits}({addr}, r{src})")),
                BPF_CMPXCHG => Some(format!("r0 = cmpxchg{bits}({addr}, r0, r{src})")),
                imm => {
                    let (_, sym, name) =
                        ATOMIC_OPS.iter().find(|(o, ..)| *o == imm & !BPF_FETCH)?;
                    Some(if imm & BPF_FETCH != 0 {
                        format!("r{src} = atomic_fetch_{name}(({size} *)({addr}), r{src})")
                    } else {
                        format!("lock *({size} *)({addr}) {sym} r{src}")
                    })
                }
            }
        }
        _ => None,
    }
}

/// The second operand of an ALU or JMP instruction, per its source bit.
fn operand(insn: Insn, reg: char) -> String {
    if insn.code & BPF_X != 0 {
        format!("{reg}{}", insn.src())
    } else {
        insn.imm.to_string()
    }
}

/// `BPF_LD` ... `BPF_ALU64`.
fn class(insn: Insn) -> u8 {
    insn.code & 0x07
}

/// `BPF_IMM` ... `BPF_ATOMIC`, for the load and store classes.
fn mode(insn: Insn) -> u8 {
    insn.code & 0xe0
}

/// The C type of a load or store: `BPF_W`, `BPF_H`, `BPF_B`, `BPF_DW`.
fn size(insn: Insn) -> &'static str {
    match insn.code & 0x18 {
        0x00 => "u32",
        0x08 => "u16",
        0x10 => "u8",
        _ => "u64",
    }
}

/// A memory operand: `r1 + 8`, `r10 - 4`.
fn mem(reg: u8, off: i16) -> String {
    if off < 0 {
        format!("r{reg} - {}", off.unsigned_abs())
    } else {
        format!("r{reg} + {off}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        let insns = Insn::decode_all(bytes).unwrap();
        insn_text(&insns, 0)
    }

    #[test]
    fn prints_what_llvm_objdump_14_prints() {
        // Each expectation is llvm-objdump-14's output for these bytes.
        let cases: [(&[u8], &str); 20] = [
            (&[0x0f, 0x21, 0, 0, 0, 0, 0, 0], "r1 += r2"),
            (&[0x04, 0x21, 3, 0, 0xfc, 0xff, 0xff, 0xff], "w1 += -4"),
            (&[0xc7, 0x21, 0, 0, 4, 0, 0, 0], "r1 s>>= 4"),
            (&[0x87, 0x01, 0, 0, 0, 0, 0, 0], "r1 = -r1"),
            (&[0xdc, 0x01, 0, 0, 16, 0, 0, 0], "r1 = be16 r1"),
            (&[0xd4, 0x01, 0, 0, 64, 0, 0, 0], "r1 = le64 r1"),
            (&[0x05, 0x00, 0xfd, 0xff, 0, 0, 0, 0], "goto -3"),
            (
                &[0xd6, 0x21, 0xff, 0x7f, 5, 0, 0, 0],
                "if w1 s<= 5 goto +32767",
            ),
            (&[0x2d, 0x21, 3, 0, 0, 0, 0, 0], "if r1 > r2 goto +3"),
            (&[0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff], "call -1"),
            (&[0x95, 0, 0, 0, 0, 0, 0, 0], "exit"),
            (
                &[0x61, 0x21, 0x00, 0x80, 0, 0, 0, 0],
                "r1 = *(u32 *)(r2 - 32768)",
            ),
            (&[0x73, 0x21, 3, 0, 0, 0, 0, 0], "*(u8 *)(r1 + 3) = r2"),
            (&[0x48, 0x21, 0, 0, 0, 0, 0, 0], "r0 = *(u16 *)skb[r2]"),
            (
                &[0xdb, 0x21, 3, 0, 0, 0, 0, 0],
                "lock *(u64 *)(r1 + 3) += r2",
            ),
            (
                &[0xdb, 0x21, 3, 0, 0xa1, 0, 0, 0],
                "r2 = atomic_fetch_xor((u64 *)(r1 + 3), r2)",
            ),
            (
                &[0xdb, 0x21, 3, 0, 0xf1, 0, 0, 0],
                "r0 = cmpxchg_64(r1 + 3, r0, r2)",
            ),
            (
                &[
                    0x18, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
                ],
                "r1 = -1 ll",
            ),
            (
                &[0x18, 0x11, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "ld_pseudo\tr1, 1, 5",
            ),
            (&[0x00, 0x21, 3, 0, 4, 0, 0, 0], "<unknown>"),
        ];
        for (bytes, want) in cases {
            assert_eq!(text(bytes), want, "bytes {bytes:02x?}");
        }
    }

    #[test]
    fn prints_what_llvm_14_does_not_know_as_later_llvm_does() {
        assert_eq!(text(&[0x9f, 0x21, 0, 0, 0, 0, 0, 0]), "r1 %= r2");
        assert_eq!(text(&[0x45, 0x01, 1, 0, 1, 0, 0, 0]), "if r1 & 1 goto +1");
        assert_eq!(
            text(&[0x62, 0x01, 0, 0, 4, 0, 0, 0]),
            "*(u32 *)(r1 + 0) = 4"
        );
        assert_eq!(
            text(&[0xc3, 0x21, 0, 0, 0xe1, 0, 0, 0]),
            "r2 = xchg32_32(r1 + 0, r2)"
        );
    }

    #[test]
    fn listing_skips_the_second_slot_of_ld_imm64() {
        let insns = Insn::decode_all(&[
            0x18, 0x01, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // r1 = 7 ll
            0x95, 0, 0, 0, 0, 0, 0, 0, // exit
            0x18, 0x01, 0, 0, 7, 0, 0, 0, // ld_imm64 without its second slot
        ])
        .unwrap();
        let lines = disassemble(&insns);
        let texts: Vec<(usize, &str)> = lines.iter().map(|l| (l.index, l.text.as_str())).collect();
        assert_eq!(texts, [(0, "r1 = 7 ll"), (2, "exit"), (3, "<unknown>")]);
        assert_eq!(
            lines[0].to_string(),
            "       0:\t18 01 00 00 07 00 00 00 00 00 00 00 00 00 00 00\tr1 = 7 ll"
        );
        assert_eq!(lines[2].bytes.len(), 8);
    }
}
