//! The object model: what an eBPF ELF object asks the kernel for, before any
//! kernel object exists.
//!
//! [`crate::elf`] builds an [`Object`] from ELF bytes; nothing here holds a
//! file descriptor, so the whole model can be built and tested without root.
//! Map references inside programs stay symbolic ([`MapRef`]): an instruction
//! index and a map index. They become file descriptors only when
//! [`crate::reloc::apply`] patches a copy of the instructions at load time.

use std::ffi::CString;

use crate::btf::Btf;
use crate::error::{Error, GlobalProblem, Result};
use crate::insn::Insn;
use crate::uapi::{AttachType, MapType, ProgType};

/// A parsed eBPF object.
#[derive(Debug, Clone)]
pub struct Object {
    /// The `license` section; GPL-only helpers need a GPL-compatible one.
    pub license: CString,
    /// The `version` section (`kern_version`; ignored by kernels since 5.0).
    pub kern_version: u32,
    pub maps: Vec<MapSpec>,
    pub programs: Vec<ProgramSpec>,
    /// Every section, with what the loader made of it (for `explain`).
    pub sections: Vec<SectionInfo>,
    /// `.BTF`, read on the host only (never loaded into the kernel).
    pub btf: Option<Btf>,
}

/// One ELF section and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionInfo {
    pub name: String,
    pub size: u64,
    pub role: SectionRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionRole {
    /// Instructions of one or more programs (`sockops`, `sk_msg`, ...).
    Program,
    /// `.text`: functions that programs call.
    Subprograms,
    /// Legacy `maps`: an array of `struct bpf_map_def`.
    LegacyMaps,
    /// `.maps`: BTF-defined maps (described in `.BTF`).
    BtfMaps,
    /// `.rodata*`, `.data*`, `.bss`: global variables, one array map each.
    GlobalData,
    License,
    Version,
    /// `.BTF`: type information, read on the host only.
    Btf,
    /// `.symtab` and its strings: names and places of programs, maps and
    /// variables.
    Symbols,
    /// Relocations of an instruction section (`.rel<section>`).
    Relocations,
    /// Everything else (`.BTF.ext`, debug info and its relocations).
    Ignored,
}

impl SectionRole {
    pub fn describe(self) -> &'static str {
        match self {
            SectionRole::Program => "program instructions",
            SectionRole::Subprograms => "functions called by programs (bpf-to-bpf calls)",
            SectionRole::LegacyMaps => "legacy map definitions (struct bpf_map_def)",
            SectionRole::BtfMaps => "BTF-defined maps",
            SectionRole::GlobalData => "global data, becomes an array map",
            SectionRole::License => "license string passed to BPF_PROG_LOAD",
            SectionRole::Version => "kernel version (kern_version)",
            SectionRole::Btf => "type information (read here, never loaded)",
            SectionRole::Symbols => "symbols: where each program, map and variable is",
            SectionRole::Relocations => {
                "relocations: which instructions refer to maps and functions"
            }
            SectionRole::Ignored => "not needed for loading",
        }
    }
}

/// Where a map definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOrigin {
    /// The legacy `maps` section.
    Legacy,
    /// The BTF-defined `.maps` section.
    Btf,
    /// A global-data section; holds its initial bytes.
    Data { section: String, init: Vec<u8> },
}

/// A map to create with `BPF_MAP_CREATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub origin: MapOrigin,
    /// Named variables inside a data map (symbol, offset, size).
    pub globals: Vec<Global>,
}

/// A global variable in a data section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// How an `ld_imm64` refers to a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// `BPF_PSEUDO_MAP_FD`: the map itself (for helpers taking a map).
    Map,
    /// `BPF_PSEUDO_MAP_VALUE`: an address `offset` bytes into the map's
    /// single value (a global variable).
    Value { offset: u32 },
}

/// A symbolic map reference: patch `insns[insn]` with `maps[map]`'s fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRef {
    pub insn: usize,
    pub map: usize,
    pub kind: RefKind,
    /// The ELF symbol the relocation named (for `explain`).
    pub symbol: String,
}

/// A linked function inside a program's instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub name: String,
    pub start: usize,
    pub len: usize,
}

/// What kind of program a section holds, from its name (libbpf's SEC_DEF
/// table, reduced to the three types rawload loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgKind {
    pub section: &'static str,
    pub prog_type: ProgType,
    pub expected_attach_type: AttachType,
}

pub const PROGRAM_KINDS: &[ProgKind] = &[
    ProgKind {
        section: "sockops",
        prog_type: ProgType::SOCK_OPS,
        expected_attach_type: AttachType::CGROUP_SOCK_OPS,
    },
    ProgKind {
        section: "sk_msg",
        prog_type: ProgType::SK_MSG,
        expected_attach_type: AttachType::SK_MSG_VERDICT,
    },
    ProgKind {
        section: "sk_skb",
        prog_type: ProgType::SK_SKB,
        expected_attach_type: AttachType::SK_SKB_STREAM_VERDICT,
    },
];

/// Matches `sockops`, `sk_msg` and the legacy `name/suffix` forms.
pub fn program_kind(section: &str) -> Option<ProgKind> {
    let base = section.split_once('/').map_or(section, |(base, _)| base);
    PROGRAM_KINDS.iter().copied().find(|k| k.section == base)
}

/// A program ready to be relocated and loaded.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// The function's symbol name.
    pub name: String,
    pub section: String,
    pub kind: ProgKind,
    /// The program's own instructions followed by every function it calls,
    /// with call offsets already fixed. Map references are still unpatched.
    pub insns: Vec<Insn>,
    pub map_refs: Vec<MapRef>,
    /// Where each linked function sits in `insns` (the program first).
    pub layout: Vec<Placement>,
}

impl Object {
    /// The one program of the given type; an object for rawload has exactly
    /// one sock_ops and one sk_msg program.
    pub fn program(&self, prog_type: ProgType) -> Result<&ProgramSpec> {
        self.optional_program(prog_type)?
            .ok_or(Error::MissingProgram {
                prog_type,
                section: section_for(prog_type),
            })
    }

    /// The program of the given type if there is one (at most one).
    pub fn optional_program(&self, prog_type: ProgType) -> Result<Option<&ProgramSpec>> {
        let mut found = self
            .programs
            .iter()
            .filter(|p| p.kind.prog_type == prog_type);
        let first = found.next();
        if let (Some(first), Some(second)) = (first, found.next()) {
            return Err(Error::DuplicateProgram {
                prog_type,
                first: first.name.clone(),
                second: second.name.clone(),
            });
        }
        Ok(first)
    }

    /// Every global variable of every data section.
    pub fn globals(&self) -> impl Iterator<Item = &Global> {
        self.maps.iter().flat_map(|m| m.globals.iter())
    }

    /// A global variable's current initial bytes.
    pub fn global_bytes(&self, name: &str) -> Option<&[u8]> {
        let (map, var) = self.global(name)?;
        match &self.maps[map].origin {
            MapOrigin::Data { init, .. } => init.get(var.offset..var.offset + var.size),
            _ => None,
        }
    }

    /// Index of the map named `name`.
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }

    /// Finds a global variable by symbol name: (map index, variable).
    pub fn global(&self, name: &str) -> Option<(usize, &Global)> {
        self.maps
            .iter()
            .enumerate()
            .find_map(|(i, m)| m.globals.iter().find(|g| g.name == name).map(|g| (i, g)))
    }

    /// Sets a global variable's initial value (before the data map is
    /// created), as libbpf skeletons do with `skel->rodata->x = ...`.
    pub fn set_global(&mut self, name: &str, value: &[u8]) -> Result<()> {
        let error = |problem| Error::Global {
            name: name.to_string(),
            problem,
        };
        let (map, var) = self
            .global(name)
            .map(|(i, g)| (i, g.clone()))
            .ok_or_else(|| error(GlobalProblem::NotFound))?;
        if var.size != value.len() {
            return Err(error(GlobalProblem::Size {
                size: var.size,
                given: value.len(),
            }));
        }
        let MapOrigin::Data { section, init } = &mut self.maps[map].origin else {
            return Err(error(GlobalProblem::NotData));
        };
        let slot = init
            .get_mut(var.offset..var.offset + var.size)
            .ok_or_else(|| {
                error(GlobalProblem::OutsideSection {
                    section: section.clone(),
                })
            })?;
        slot.copy_from_slice(value);
        Ok(())
    }
}

fn section_for(prog_type: ProgType) -> &'static str {
    PROGRAM_KINDS
        .iter()
        .find(|k| k.prog_type == prog_type)
        .map_or("?", |k| k.section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names() {
        assert_eq!(
            program_kind("sockops").unwrap().prog_type,
            ProgType::SOCK_OPS
        );
        assert_eq!(
            program_kind("sk_msg/bypass").unwrap().prog_type,
            ProgType::SK_MSG
        );
        assert!(program_kind("sockops_x").is_none());
        assert!(program_kind("kprobe/tcp_sendmsg").is_none());
    }
}
