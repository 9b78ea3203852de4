//! One eBPF instruction (`struct bpf_insn`, include/uapi/linux/bpf.h).
//!
//! ```text
//!  byte 0     byte 1              bytes 2-3     bytes 4-7
//! +--------+--------+--------+---------------+--------------------+
//! | opcode | src:4  | dst:4  | off (i16)     | imm (i32)          |
//! +--------+--------+--------+---------------+--------------------+
//! ```
//! (little-endian: `dst` is the low nibble of byte 1). `ld_imm64` is the one
//! instruction that takes two slots; the second slot's `imm` carries the upper
//! 32 bits. The loader rewrites exactly two kinds of instruction: `ld_imm64`
//! (a map reference: `src` says what `imm` means) and `call` (a bpf-to-bpf
//! call: `imm` is the distance to the callee).

use std::mem::size_of;

/// Size of one instruction slot.
pub const INSN_SIZE: usize = 8;

/// The kernel's per-program instruction limit (`BPF_COMPLEXITY_LIMIT_INSNS`,
/// include/linux/bpf.h), which a program and the functions linked into it
/// must stay within.
pub const MAX_INSNS: usize = 1_000_000;

/// `BPF_LD | BPF_IMM | BPF_DW`: load a 64-bit immediate (two slots).
pub const LD_IMM64: u8 = 0x18;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
pub const MOV64_IMM: u8 = 0xb7;
/// `BPF_JMP | BPF_CALL`.
pub const CALL: u8 = 0x85;
/// `BPF_JMP | BPF_EXIT`.
pub const EXIT: u8 = 0x95;

/// `src_reg` of an `ld_imm64` whose `imm` is a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src_reg` of an `ld_imm64` whose `imm` is a map fd and whose second
/// slot's `imm` is an offset into the map's (single) value (global data, 5.2).
pub const PSEUDO_MAP_VALUE: u8 = 2;
/// `src_reg` of a `call` to another BPF function (rather than a helper).
pub const PSEUDO_CALL: u8 = 1;

/// A `struct bpf_insn`, laid out exactly as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const _: () = assert!(size_of::<Insn>() == INSN_SIZE);

impl Insn {
    /// Decodes one little-endian slot.
    pub fn from_bytes(b: &[u8; INSN_SIZE]) -> Insn {
        Insn {
            code: b[0],
            regs: b[1],
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Decodes a section's bytes; `None` if the length is not a multiple of 8.
    pub fn decode_all(bytes: &[u8]) -> Option<Vec<Insn>> {
        if bytes.len() % INSN_SIZE != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(INSN_SIZE)
                .map(|c| Insn::from_bytes(c.try_into().expect("chunks_exact yields 8 bytes")))
                .collect(),
        )
    }

    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let mut b = [0u8; INSN_SIZE];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    /// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
    pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
        Insn {
            code: MOV64_IMM,
            regs: dst & 0x0f,
            off: 0,
            imm,
        }
    }

    /// `call helper`: a kernel helper by its `BPF_FUNC_*` number.
    pub fn call_helper(helper: i32) -> Insn {
        Insn {
            code: CALL,
            regs: 0,
            off: 0,
            imm: helper,
        }
    }

    /// A bpf-to-bpf call (`src_reg` `BPF_PSEUDO_CALL`): `imm` is the
    /// callee's distance from the next instruction. clang writes -1 and a
    /// relocation naming the callee; [`crate::reloc::link`] fills it in.
    pub fn pseudo_call(imm: i32) -> Insn {
        Insn {
            code: CALL,
            regs: PSEUDO_CALL << 4,
            off: 0,
            imm,
        }
    }

    /// `BPF_JMP | BPF_EXIT`: return `r0`.
    pub fn exit() -> Insn {
        Insn {
            code: EXIT,
            ..Insn::default()
        }
    }

    /// `dst = imm` as the two slots of an `ld_imm64` (the second slot's
    /// `imm` is the upper half). A map reference in an object is
    /// `r1 = 0 ll` until the loader patches it.
    pub fn ld_imm64(dst: u8, imm: i64) -> [Insn; 2] {
        [
            Insn {
                code: LD_IMM64,
                regs: dst & 0x0f,
                off: 0,
                imm: imm as i32,
            },
            Insn {
                imm: (imm >> 32) as i32,
                ..Insn::default()
            },
        ]
    }

    /// `dst = map` as the two slots of an `ld_imm64` holding a map fd
    /// (`BPF_PSEUDO_MAP_FD`).
    pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        let [mut first, second] = Insn::ld_imm64(dst, 0);
        first.set_src(PSEUDO_MAP_FD);
        first.imm = fd;
        [first, second]
    }

    pub fn dst(self) -> u8 {
        self.regs & 0x0f
    }

    pub fn src(self) -> u8 {
        self.regs >> 4
    }

    pub fn set_src(&mut self, src: u8) {
        self.regs = (self.regs & 0x0f) | (src << 4);
    }

    pub fn is_ld_imm64(self) -> bool {
        self.code == LD_IMM64
    }

    /// A call to another BPF function (not to a kernel helper).
    pub fn is_pseudo_call(self) -> bool {
        self.code == CALL && self.src() == PSEUDO_CALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_fields() {
        // r1 = 0 ll, with src_reg 1 (BPF_PSEUDO_MAP_FD) and imm 7
        let bytes = [0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00];
        let insn = Insn::from_bytes(&bytes);
        assert!(insn.is_ld_imm64());
        assert_eq!((insn.dst(), insn.src(), insn.imm), (1, 1, 7));
        assert_eq!(insn.to_bytes(), bytes);

        let mut call = Insn::from_bytes(&[0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(call.is_pseudo_call());
        assert_eq!(call.imm, -1);
        call.set_src(0);
        assert!(!call.is_pseudo_call());
        assert!(Insn::decode_all(&[0; 12]).is_none());
    }

    #[test]
    fn constructors_encode_what_llvm_objdump_shows() {
        // r0 = 1; exit; call 71; r2 = map fd 5 (two slots)
        assert_eq!(
            Insn::mov64_imm(0, 1).to_bytes(),
            [0xb7, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(Insn::exit().to_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Insn::call_helper(71).to_bytes(),
            [0x85, 0, 0, 0, 71, 0, 0, 0]
        );
        let [lo, hi] = Insn::ld_map_fd(2, 5);
        assert_eq!(lo.to_bytes(), [0x18, 0x12, 0, 0, 5, 0, 0, 0]);
        assert_eq!(hi, Insn::default());
        // r1 = -2 ll; call -1 (to another function)
        let [lo, hi] = Insn::ld_imm64(1, -2);
        assert_eq!(
            (lo.to_bytes(), hi.to_bytes()),
            (
                [0x18, 1, 0, 0, 0xfe, 0xff, 0xff, 0xff],
                [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
            )
        );
        assert_eq!(
            Insn::pseudo_call(-1).to_bytes(),
            [0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
