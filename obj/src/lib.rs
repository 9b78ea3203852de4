//! rawload-obj: an eBPF ELF object, read into an object model.
//!
//! The first stage of rawload's pipeline, and all of it pure: bytes in,
//! [`obj::Object`] out, no file descriptors, no kernel, no `unsafe`. Map
//! references inside programs stay symbolic until the loader (the
//! `rawload-loader` crate) patches them with file descriptors.
//!
//! ```text
//! ELF bytes --elf (btf for .maps)--> obj::Object --reloc::link--> programs with their calls
//!                                                  --reloc::apply(fds)--> instructions to load
//! ```
//!
//! | module     | holds |
//! |------------|-------|
//! | [`elf`]    | ELF object -> [`obj::Object`] (sections, maps, programs, relocations) |
//! | [`error`]  | why an object is refused: [`Error`], one variant per failure |
//! | [`btf`]    | the BTF reader behind `.maps` and kernel fields |
//! | [`obj`]    | the object model: map and program specs with symbolic map references |
//! | [`combine`] | several objects as one set: maps shared by name, references renumbered |
//! | [`insn`]   | one eBPF instruction |
//! | [`reloc`]  | linking bpf-to-bpf calls; patching map fds into `ld_imm64` |
//! | [`disasm`] | instructions as text, as `llvm-objdump -d` prints them |
//! | [`kfield`] | where a kernel struct field sits, from a kernel's BTF (rawload's CO-RE) |
//! | [`uapi`]   | the UAPI numbers (program, map and attach types) as types |
#![forbid(unsafe_code)]

pub mod btf;
pub mod combine;
pub mod disasm;
pub mod elf;
pub mod error;
pub mod insn;
pub mod kfield;
pub mod obj;
pub mod reloc;
pub mod uapi;

pub use error::{Error, Result};
