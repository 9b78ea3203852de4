//! ELF bytes to [`Object`]: the first stage of the pipeline.
//!
//! clang writes one ELF relocatable (`ET_REL`) per eBPF C file. This module
//! reads it with the `object` crate and answers four questions:
//!
//! 1. **Which programs?** Executable sections named `sockops`, `sk_msg` (or
//!    `sockops/anything`), one program per function symbol (`STT_FUNC`).
//!    Functions in `.text` are subprograms that programs may call.
//! 2. **Which maps?** The legacy `maps` section (an array of
//!    `struct bpf_map_def`, one symbol per map), the BTF-defined `.maps`
//!    section (described in `.BTF`, see [`crate::btf`]), and every global
//!    data section a program uses (`.rodata*`, `.data*`, `.bss`), each of
//!    which becomes a one-element array map.
//! 3. **Which instructions refer to which map?** The `.rel<section>`
//!    relocations: `R_BPF_64_64` on an `ld_imm64` names a map (or a global
//!    variable), `R_BPF_64_32` on a `call` names a function in `.text`.
//! 4. **License and version** from the `license` and `version` sections.
//!
//! Nothing here touches the kernel, and malformed input of any kind is an
//! error, never a panic (the fuzz target in `fuzz/` holds us to that).

use std::collections::HashMap;
use std::ffi::{CStr, CString};

use object::elf::SHF_EXECINSTR;
use object::{
    Architecture, BinaryFormat, Object as _, ObjectSection, ObjectSymbol, RelocationFlags,
    RelocationTarget, SectionFlags, SectionIndex, SymbolKind, SymbolSection,
};

use crate::btf::{Btf, Member, Type};
use crate::error::{
    ElfItem, Error, GlobalProblem, MapProblem, MapSectionProblem, NotBpf, RelocProblem, Result,
};
use crate::insn::{INSN_SIZE, Insn};
use crate::obj::{
    Global, MapOrigin, MapSpec, Object, ProgramSpec, RefKind, SectionInfo, SectionRole,
    program_kind,
};
use crate::reloc::{FnReloc, Function, link};
use crate::uapi::{BPF_F_RDONLY_PROG, MapType};

/// `R_BPF_64_64`: an `ld_imm64` loads the address of a map or variable.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: a `call` targets a function.
const R_BPF_64_32: u32 = 10;
/// `sizeof(struct bpf_map_def)` in libbpf <= 0.8: five u32 fields.
const MAP_DEF_SIZE: usize = 20;
/// Sanity bounds: larger values are garbage, not a map anyone meant.
const MAX_KEY_SIZE: u32 = 512;
const MAX_VALUE_SIZE: u32 = 1 << 20;
const MAX_ENTRIES: u32 = 1 << 24;
/// The map types rawload creates.
const MAP_TYPES: [MapType; 8] = [
    MapType::HASH,
    MapType::ARRAY,
    MapType::PERCPU_HASH,
    MapType::PERCPU_ARRAY,
    MapType::LRU_HASH,
    MapType::LRU_PERCPU_HASH,
    MapType::SOCKMAP,
    MapType::SOCKHASH,
];

/// Parses an eBPF ELF object.
pub fn parse(data: &[u8]) -> Result<Object> {
    let file = object::File::parse(data).map_err(|e| Error::NotBpfObject(NotBpf::Unreadable(e)))?;
    check_target(&file).map_err(Error::NotBpfObject)?;
    Reader::new(&file)?.read()
}

/// Refuses ELF files for another machine, byte order or word size, and
/// stripped ones.
fn check_target(file: &object::File<'_>) -> Result<(), NotBpf> {
    if file.format() != BinaryFormat::Elf {
        return Err(NotBpf::NotElf);
    }
    if file.architecture() != Architecture::Bpf {
        return Err(NotBpf::Machine(file.architecture()));
    }
    if !file.is_little_endian() {
        return Err(NotBpf::BigEndian);
    }
    if !file.is_64() {
        return Err(NotBpf::Elf32);
    }
    if file.symbol_table().is_none() {
        return Err(NotBpf::NoSymbolTable);
    }
    Ok(())
}

/// Function index by (section index, byte offset of its first instruction).
type Starts = HashMap<(usize, u64), usize>;

/// Where each kind of section sits, by section index.
struct Reader<'a, 'd> {
    file: &'a object::File<'d>,
    sections: Vec<(SectionIndex, SectionInfo)>,
    exec: Vec<SectionIndex>,
    legacy_maps: Option<SectionIndex>,
    btf_maps: Option<SectionIndex>,
    maps: Vec<MapSpec>,
    /// Legacy maps by their offset in `maps`; BTF maps by name.
    legacy_by_offset: HashMap<u64, usize>,
    /// Data sections that already have a map.
    data_maps: HashMap<SectionIndex, usize>,
}

impl<'a, 'd> Reader<'a, 'd> {
    fn new(file: &'a object::File<'d>) -> Result<Self> {
        let mut reader = Reader {
            file,
            sections: Vec::new(),
            exec: Vec::new(),
            legacy_maps: None,
            btf_maps: None,
            maps: Vec::new(),
            legacy_by_offset: HashMap::new(),
            data_maps: HashMap::new(),
        };
        for s in file.sections() {
            let name = s.name().map_err(|source| Error::Elf {
                item: ElfItem::SectionName { index: s.index().0 },
                source,
            })?;
            let is_exec = matches!(s.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.contains(SHF_EXECINSTR));
            let role = section_role(name, is_exec)?;
            match role {
                SectionRole::Program | SectionRole::Subprograms => reader.exec.push(s.index()),
                SectionRole::LegacyMaps => reader.legacy_maps = Some(s.index()),
                SectionRole::BtfMaps => reader.btf_maps = Some(s.index()),
                _ => {}
            }
            let info = SectionInfo {
                name: name.to_string(),
                size: s.size(),
                role,
            };
            reader.sections.push((s.index(), info));
        }
        Ok(reader)
    }

    fn read(mut self) -> Result<Object> {
        let license = self.license()?;
        let kern_version = self.version()?;
        let btf = self.btf()?;
        self.read_legacy_maps()?;
        self.read_btf_maps(btf.as_ref())?;
        let mut functions = self.functions()?;
        self.read_relocations(&mut functions)?;
        Ok(Object {
            license,
            kern_version,
            maps: self.maps,
            programs: programs(&functions)?,
            sections: self.sections.into_iter().map(|(_, s)| s).collect(),
            btf,
        })
    }

    /// `.BTF`, if the object has it (clang -g writes it).
    fn btf(&self) -> Result<Option<Btf>> {
        let Some(section) = self.file.section_by_name(".BTF") else {
            return Ok(None);
        };
        Ok(Some(Btf::parse(bytes(&section)?)?))
    }

    fn section_name(&self, index: SectionIndex) -> &str {
        self.sections
            .iter()
            .find(|(i, _)| *i == index)
            .map_or("?", |(_, s)| s.name.as_str())
    }

    fn section(&self, index: SectionIndex) -> Result<object::Section<'d, 'a>> {
        self.file
            .section_by_index(index)
            .map_err(|source| Error::Elf {
                item: ElfItem::Section {
                    name: self.section_name(index).to_string(),
                },
                source,
            })
    }

    fn section_data(&self, index: SectionIndex) -> Result<&'d [u8]> {
        bytes(&self.section(index)?)
    }

    fn license(&self) -> Result<CString> {
        let Some(s) = self.file.section_by_name("license") else {
            return Ok(CString::default());
        };
        let license =
            CStr::from_bytes_until_nul(bytes(&s)?).map_err(|_| Error::LicenseNotTerminated)?;
        Ok(license.to_owned())
    }

    fn version(&self) -> Result<u32> {
        let Some(s) = self.file.section_by_name("version") else {
            return Ok(0);
        };
        let data = bytes(&s)?;
        let bytes: [u8; 4] = data
            .try_into()
            .map_err(|_| Error::VersionSize { size: data.len() })?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// Legacy `maps`: one `struct bpf_map_def` per symbol.
    fn read_legacy_maps(&mut self) -> Result<()> {
        let Some(sec) = self.legacy_maps else {
            return Ok(());
        };
        let data = self.section_data(sec)?;
        let symbols: Vec<_> = self
            .file
            .symbols()
            .filter(|s| {
                s.section() == SymbolSection::Section(sec) && s.kind() != SymbolKind::Section
            })
            .collect();
        if symbols.is_empty() {
            return Err(Error::MapSection(MapSectionProblem::NoLegacySymbols));
        }
        // clang < 9 left st_size at 0; then all definitions have the same
        // size (libbpf <= 0.8 and samples/bpf/bpf_load.c divide the section).
        let maps = symbols.len();
        let equal_share = || match data.len() % maps {
            0 => Ok(data.len() / maps),
            _ => Err(Error::MapSection(MapSectionProblem::Indivisible {
                size: data.len(),
                maps,
            })),
        };
        for sym in symbols {
            let name = symbol_name(&sym)?;
            if sym.is_local() {
                return Err(invalid_map(&name, MapProblem::Static));
            }
            let size = match sym.size() {
                0 => equal_share()?,
                size => size as usize,
            };
            let spec =
                legacy_map(&name, data, sym.address(), size).map_err(|p| invalid_map(&name, p))?;
            self.legacy_by_offset.insert(sym.address(), self.maps.len());
            self.maps.push(spec);
        }
        Ok(())
    }

    /// BTF-defined `.maps`: read each map's attributes from its BTF type.
    fn read_btf_maps(&mut self, btf: Option<&Btf>) -> Result<()> {
        let Some(sec) = self.btf_maps else {
            return Ok(());
        };
        let btf = btf.ok_or(Error::MapSection(MapSectionProblem::NoBtf))?;
        let vars = btf
            .datasec(".maps")
            .ok_or(Error::MapSection(MapSectionProblem::NotInBtf))?;
        for var in vars {
            let Type::Var { name, target } = btf.get(var.type_id)? else {
                return Err(Error::MapSection(MapSectionProblem::NotAVariable {
                    type_id: var.type_id,
                }));
            };
            let has_symbol = self.file.symbols().any(|s| {
                s.section() == SymbolSection::Section(sec) && s.name().is_ok_and(|n| n == name)
            });
            if !has_symbol {
                return Err(invalid_map(name, MapProblem::NoSymbol));
            }
            let spec = btf_map(btf, name, *target).map_err(|p| invalid_map(name, p))?;
            self.maps.push(spec);
        }
        Ok(())
    }

    /// Every function of every instruction section.
    fn functions(&self) -> Result<Vec<Function>> {
        let mut functions = Vec::new();
        for &sec in &self.exec {
            let section = self.section_name(sec).to_string();
            let data = self.section_data(sec)?;
            let mut bounds: Vec<(String, u64, u64)> = self
                .file
                .symbols()
                .filter(|s| {
                    s.kind() == SymbolKind::Text && s.section() == SymbolSection::Section(sec)
                })
                .map(|s| Ok((symbol_name(&s)?, s.address(), s.size())))
                .collect::<Result<_>>()?;
            // Objects from very old clang have no function symbols: the
            // whole section is one program, named after it.
            if bounds.is_empty() && program_kind(&section).is_some() && !data.is_empty() {
                bounds.push((section.replace('/', "_"), 0, data.len() as u64));
            }
            for (name, offset, size) in bounds {
                let insns = offset
                    .checked_add(size)
                    .and_then(|end| data.get(offset as usize..end as usize))
                    .filter(|b| !b.is_empty() && offset as usize % INSN_SIZE == 0)
                    .and_then(Insn::decode_all)
                    .ok_or_else(|| Error::FunctionBounds {
                        function: name.clone(),
                        section: section.clone(),
                        offset,
                        size,
                    })?;
                functions.push(Function {
                    name,
                    section: section.clone(),
                    section_index: sec.0,
                    offset,
                    insns,
                    relocs: Vec::new(),
                });
            }
        }
        Ok(functions)
    }

    /// Records every relocation as a symbolic [`FnReloc`] on its function,
    /// then the calls that need none.
    fn read_relocations(&mut self, functions: &mut [Function]) -> Result<()> {
        let starts: Starts = functions
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.section_index, f.offset), i))
            .collect();
        for &sec in &self.exec.clone() {
            let section = self.section(sec)?;
            for (offset, rel) in section.relocations() {
                let site = Site {
                    section: self.section_name(sec).to_string(),
                    offset,
                    symbol: None,
                };
                let (f, reloc) = self.relocation(functions, &starts, sec, site, &rel)?;
                functions[f].relocs.push(reloc);
            }
        }
        for func in functions.iter_mut() {
            let calls = local_calls(func, &starts)?;
            func.relocs.extend(calls);
        }
        Ok(())
    }

    /// One relocation of section `sec`: the function it is in, and the map
    /// reference or call it records there.
    fn relocation(
        &mut self,
        functions: &[Function],
        starts: &Starts,
        sec: SectionIndex,
        mut site: Site,
        rel: &object::Relocation,
    ) -> Result<(usize, FnReloc)> {
        let RelocationFlags::Elf { r_type } = rel.flags() else {
            return Err(site.error(RelocProblem::NotElf));
        };
        let RelocationTarget::Symbol(sym_index) = rel.target() else {
            return Err(site.error(RelocProblem::NoSymbol));
        };
        let sym = self
            .file
            .symbol_by_index(sym_index)
            .map_err(|_| site.error(RelocProblem::MissingSymbol { index: sym_index.0 }))?;
        let sym_name = symbol_name(&sym).unwrap_or_default();
        site.symbol = Some(sym_name.clone()).filter(|n| !n.is_empty());
        let (f, i) = instruction_at(functions, sec, site.offset).map_err(|p| site.error(p))?;
        let insn = functions[f].insns[i];
        let reloc = match r_type.0 {
            R_BPF_64_64 if insn.is_ld_imm64() && i + 1 < functions[f].insns.len() => {
                let (map, kind) = self.map_target(&sym, &sym_name, insn.imm, &site)?;
                FnReloc::Map {
                    insn: i,
                    map,
                    kind,
                    symbol: sym_name,
                }
            }
            R_BPF_64_64 => return Err(site.error(RelocProblem::NotLdImm64 { code: insn.code })),
            R_BPF_64_32 if insn.is_pseudo_call() => FnReloc::Call {
                insn: i,
                callee: self
                    .callee(&sym, insn.imm, starts)
                    .map_err(|p| site.error(p))?,
            },
            R_BPF_64_32 => return Err(site.error(RelocProblem::NotCall { code: insn.code })),
            r_type => return Err(site.error(RelocProblem::UnsupportedType { r_type })),
        };
        Ok((f, reloc))
    }

    /// The function an `R_BPF_64_32` calls. As in libbpf, the callee starts
    /// at slot `st_value / 8 + imm + 1` of the symbol's section (`imm` is -1
    /// for a function symbol, the offset for a section symbol).
    fn callee(
        &self,
        sym: &object::Symbol<'d, 'a>,
        imm: i32,
        starts: &Starts,
    ) -> Result<usize, RelocProblem> {
        let SymbolSection::Section(target_sec) = sym.section() else {
            return Err(RelocProblem::CallExtern);
        };
        let offset = call_target(sym.address() as i64 / INSN_SIZE as i64, imm)
            .ok_or(RelocProblem::CallBeforeSection)?;
        starts
            .get(&(target_sec.0, offset))
            .copied()
            .ok_or_else(|| RelocProblem::CallTarget {
                target: self.section_name(target_sec).to_string(),
                offset,
            })
    }

    /// Resolves the symbol of an `R_BPF_64_64` to a map and reference kind.
    fn map_target(
        &mut self,
        sym: &object::Symbol<'d, 'a>,
        name: &str,
        imm: i32,
        site: &Site,
    ) -> Result<(usize, RefKind)> {
        let SymbolSection::Section(sec) = sym.section() else {
            return Err(site.error(RelocProblem::Extern));
        };
        // Wrapping: a nonsense address yields an offset no map or variable
        // has, which is refused below.
        let offset = (sym.address() as i64).wrapping_add(i64::from(imm));
        if Some(sec) == self.legacy_maps {
            let offset = offset as u64;
            let map = self.legacy_by_offset.get(&offset).copied();
            let map = map.ok_or_else(|| site.error(RelocProblem::NoLegacyMap { offset }))?;
            return Ok((map, RefKind::Map));
        }
        if Some(sec) == self.btf_maps {
            let map = self
                .maps
                .iter()
                .position(|m| m.origin == MapOrigin::Btf && m.name == name)
                .ok_or_else(|| site.error(RelocProblem::NotInBtf))?;
            return Ok((map, RefKind::Map));
        }
        let target = self.section_name(sec).to_string();
        if !is_data_section(&target) {
            return Err(site.error(RelocProblem::NotData { target }));
        }
        let size = self.section(sec)?.size();
        if offset < 0 || offset as u64 >= size {
            return Err(site.error(RelocProblem::OutsideData {
                target,
                offset,
                size,
            }));
        }
        let map = self.data_map(sec, &target)?;
        Ok((
            map,
            RefKind::Value {
                offset: offset as u32,
            },
        ))
    }

    /// The array map for a global-data section, created on first use.
    fn data_map(&mut self, sec: SectionIndex, name: &str) -> Result<usize> {
        if let Some(&i) = self.data_maps.get(&sec) {
            return Ok(i);
        }
        let section = self.section(sec)?;
        let size = section.size();
        if size == 0 || size > u64::from(MAX_VALUE_SIZE) {
            return Err(Error::DataSection {
                section: name.to_string(),
                size,
                max: MAX_VALUE_SIZE,
            });
        }
        // .bss is SHT_NOBITS: no bytes in the file, zeros in the map.
        let mut init = bytes(&section)?.to_vec();
        init.resize(size as usize, 0);
        let spec = MapSpec {
            name: name.to_string(),
            map_type: MapType::ARRAY,
            key_size: 4,
            value_size: size as u32,
            max_entries: 1,
            // Programs may not write .rodata; with the map frozen, the
            // verifier also knows its bytes (and prunes dead branches).
            flags: if name.starts_with(".rodata") {
                BPF_F_RDONLY_PROG
            } else {
                0
            },
            origin: MapOrigin::Data {
                section: name.to_string(),
                init,
            },
            globals: self.globals(sec, name, size)?,
        };
        self.maps.push(spec);
        self.data_maps.insert(sec, self.maps.len() - 1);
        Ok(self.maps.len() - 1)
    }

    /// The named variables of a data section (`STT_OBJECT` symbols).
    fn globals(&self, sec: SectionIndex, section: &str, size: u64) -> Result<Vec<Global>> {
        let mut globals = Vec::new();
        for s in self.file.symbols() {
            if s.section() != SymbolSection::Section(sec)
                || s.kind() != SymbolKind::Data
                || s.size() == 0
            {
                continue;
            }
            let name = symbol_name(&s)?;
            let (offset, len) = (s.address(), s.size());
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(Error::Global {
                    name,
                    problem: GlobalProblem::OutsideSection {
                        section: section.to_string(),
                    },
                });
            }
            globals.push(Global {
                name,
                offset: offset as usize,
                size: len as usize,
            });
        }
        Ok(globals)
    }
}

/// What a section is for, from its name and whether it holds instructions.
fn section_role(name: &str, is_exec: bool) -> Result<SectionRole> {
    if is_exec {
        return match name {
            ".text" => Ok(SectionRole::Subprograms),
            _ if program_kind(name).is_some() => Ok(SectionRole::Program),
            _ => Err(Error::UnsupportedSection {
                section: name.to_string(),
            }),
        };
    }
    Ok(match name {
        "license" => SectionRole::License,
        "version" => SectionRole::Version,
        "maps" => SectionRole::LegacyMaps,
        ".maps" => SectionRole::BtfMaps,
        ".BTF" => SectionRole::Btf,
        ".symtab" | ".strtab" => SectionRole::Symbols,
        // Relocations of BTF and debug info are for debuggers.
        n if n.starts_with(".rel.BTF") || n.starts_with(".rel.debug") => SectionRole::Ignored,
        n if n.starts_with(".rel") => SectionRole::Relocations,
        n if is_data_section(n) => SectionRole::GlobalData,
        _ => SectionRole::Ignored,
    })
}

/// One program per function of a program section, each linked with the
/// functions it calls.
fn programs(functions: &[Function]) -> Result<Vec<ProgramSpec>> {
    let mut programs = Vec::new();
    for (i, f) in functions.iter().enumerate() {
        let Some(kind) = program_kind(&f.section) else {
            continue; // a .text subprogram
        };
        let (insns, map_refs, layout) = link(functions, i)?;
        programs.push(ProgramSpec {
            name: f.name.clone(),
            section: f.section.clone(),
            kind,
            insns,
            map_refs,
            layout,
        });
    }
    if programs.is_empty() {
        return Err(Error::NoPrograms);
    }
    Ok(programs)
}

/// Where a relocation is, for its errors: `section+offset`, and the symbol
/// it names once that is known.
struct Site {
    section: String,
    offset: u64,
    symbol: Option<String>,
}

impl Site {
    fn error(&self, problem: RelocProblem) -> Error {
        Error::Relocation {
            section: self.section.clone(),
            offset: self.offset,
            symbol: self.symbol.clone(),
            problem,
        }
    }
}

/// The function holding byte `offset` of section `sec`, and the index of
/// the instruction there.
fn instruction_at(
    functions: &[Function],
    sec: SectionIndex,
    offset: u64,
) -> Result<(usize, usize), RelocProblem> {
    let f = functions
        .iter()
        .position(|f| {
            f.section_index == sec.0 && offset >= f.offset && offset < f.offset + f.byte_len()
        })
        .ok_or(RelocProblem::OutsideFunctions)?;
    let within = offset - functions[f].offset;
    if within % INSN_SIZE as u64 != 0 {
        return Err(RelocProblem::Misaligned);
    }
    Ok((f, (within / INSN_SIZE as u64) as usize))
}

/// Calls between functions of the same section need no relocation: the
/// offset is already pc-relative. They become [`FnReloc::Call`]s like the
/// relocated ones, so that linking treats every call alike.
fn local_calls(func: &Function, starts: &Starts) -> Result<Vec<FnReloc>> {
    let relocated: Vec<usize> = func
        .relocs
        .iter()
        .filter_map(|r| match r {
            FnReloc::Call { insn, .. } => Some(*insn),
            FnReloc::Map { .. } => None,
        })
        .collect();
    let first_slot = func.offset as i64 / INSN_SIZE as i64;
    let mut calls = Vec::new();
    for (i, insn) in func.insns.iter().enumerate() {
        if !insn.is_pseudo_call() || relocated.contains(&i) {
            continue;
        }
        let callee = call_target(first_slot + i as i64, insn.imm)
            .and_then(|t| starts.get(&(func.section_index, t)))
            .ok_or_else(|| Error::Call {
                function: func.name.clone(),
                insn: i,
            })?;
        calls.push(FnReloc::Call {
            insn: i,
            callee: *callee,
        });
    }
    Ok(calls)
}

/// The byte offset in its section where a call at `slot` with `imm` lands:
/// `imm` counts slots from the one after the call.
fn call_target(slot: i64, imm: i32) -> Option<u64> {
    slot.checked_add(1 + i64::from(imm))
        .filter(|t| *t >= 0)
        .and_then(|t| (t as u64).checked_mul(INSN_SIZE as u64))
}

/// A section's bytes (none for `.bss`, which is `SHT_NOBITS`).
fn bytes<'d>(section: &object::Section<'d, '_>) -> Result<&'d [u8]> {
    section.data().map_err(|source| Error::Elf {
        item: ElfItem::Section {
            name: section.name().unwrap_or("?").to_string(),
        },
        source,
    })
}

fn symbol_name(sym: &object::Symbol<'_, '_>) -> Result<String> {
    sym.name().map(str::to_string).map_err(|source| Error::Elf {
        item: ElfItem::SymbolName {
            index: sym.index().0,
        },
        source,
    })
}

fn is_data_section(name: &str) -> bool {
    [".rodata", ".data", ".bss"].iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn invalid_map(map: &str, problem: MapProblem) -> Error {
    Error::InvalidMap {
        map: map.to_string(),
        problem,
    }
}

/// One `struct bpf_map_def` of `maps`: `size` bytes at `start`.
fn legacy_map(name: &str, maps: &[u8], start: u64, size: usize) -> Result<MapSpec, MapProblem> {
    let def = (start as usize)
        .checked_add(size)
        .and_then(|end| maps.get(start as usize..end))
        .ok_or(MapProblem::OutsideSection)?;
    if def.len() < MAP_DEF_SIZE {
        return Err(MapProblem::DefinitionSize {
            size: def.len(),
            needs: MAP_DEF_SIZE,
        });
    }
    if def[MAP_DEF_SIZE..].iter().any(|&b| b != 0) {
        return Err(MapProblem::UnsupportedFields);
    }
    let field =
        |i: usize| u32::from_le_bytes([def[i * 4], def[i * 4 + 1], def[i * 4 + 2], def[i * 4 + 3]]);
    let spec = MapSpec {
        name: name.to_string(),
        map_type: MapType(field(0)),
        key_size: field(1),
        value_size: field(2),
        max_entries: field(3),
        flags: field(4),
        origin: MapOrigin::Legacy,
        globals: Vec::new(),
    };
    validate_map(&spec)?;
    Ok(spec)
}

/// Reads one BTF-defined map: a struct whose member types encode the
/// attributes (`__uint(x, N)` = pointer to `int[N]`, `__type(k, T)` = `T *`).
fn btf_map(btf: &Btf, name: &str, var_type: u32) -> Result<MapSpec, MapProblem> {
    let Type::Struct { members, .. } = btf.get(btf.skip_mods(var_type)?)? else {
        return Err(MapProblem::NotAStruct);
    };
    let uint = |m: &Member| -> Result<u32, MapProblem> {
        let not_uint = || MapProblem::NotUint {
            attr: m.name.clone(),
        };
        let Type::Ptr { target } = btf.get(btf.skip_mods(m.type_id)?)? else {
            return Err(not_uint());
        };
        match btf.get(btf.skip_mods(*target)?)? {
            Type::Array { nelems, .. } => Ok(*nelems),
            _ => Err(not_uint()),
        }
    };
    let pointee_size = |m: &Member| -> Result<u32, MapProblem> {
        let attr = m.name.clone();
        let Type::Ptr { target } = btf.get(btf.skip_mods(m.type_id)?)? else {
            return Err(MapProblem::NotType { attr });
        };
        let size = btf.resolve_size(*target)?;
        u32::try_from(size).map_err(|_| MapProblem::TypeTooLarge { attr, size })
    };
    let (mut map_type, mut max_entries, mut flags) = (None, None, 0);
    let (mut key, mut value, mut key_size, mut value_size) = (None, None, None, None);
    for m in members {
        match m.name.as_str() {
            "type" => map_type = Some(uint(m)?),
            "max_entries" => max_entries = Some(uint(m)?),
            "map_flags" => flags = uint(m)?,
            "key" => key = Some(pointee_size(m)?),
            "value" => value = Some(pointee_size(m)?),
            "key_size" => key_size = Some(uint(m)?),
            "value_size" => value_size = Some(uint(m)?),
            "numa_node" | "pinning" if uint(m)? == 0 => {}
            _ => {
                return Err(MapProblem::UnsupportedAttribute {
                    attr: m.name.clone(),
                });
            }
        }
    }
    let spec = MapSpec {
        name: name.to_string(),
        map_type: MapType(map_type.ok_or(MapProblem::MissingAttribute { attr: "type" })?),
        key_size: key_or_value_size(key, key_size, "key")?,
        value_size: key_or_value_size(value, value_size, "value")?,
        max_entries: max_entries.ok_or(MapProblem::MissingAttribute {
            attr: "max_entries",
        })?,
        flags,
        origin: MapOrigin::Btf,
        globals: Vec::new(),
    };
    validate_map(&spec)?;
    Ok(spec)
}

/// A key or value size, from `__type(what, T)` or `__uint(what_size, N)`;
/// with both, they must agree.
fn key_or_value_size(
    from_type: Option<u32>,
    explicit: Option<u32>,
    what: &'static str,
) -> Result<u32, MapProblem> {
    match (from_type, explicit) {
        (Some(a), Some(b)) if a != b => Err(MapProblem::ConflictingSizes {
            what,
            from_type: a,
            explicit: b,
        }),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(MapProblem::MissingSize { what }),
    }
}

/// Refuses definitions no kernel would accept, so garbage never reaches
/// `BPF_MAP_CREATE`.
fn validate_map(m: &MapSpec) -> Result<(), MapProblem> {
    if !MAP_TYPES.contains(&m.map_type) {
        return Err(MapProblem::UnknownType(m.map_type));
    }
    if !(1..=MAX_KEY_SIZE).contains(&m.key_size) {
        return Err(MapProblem::KeySize {
            size: m.key_size,
            max: MAX_KEY_SIZE,
        });
    }
    if !(1..=MAX_VALUE_SIZE).contains(&m.value_size) {
        return Err(MapProblem::ValueSize {
            size: m.value_size,
            max: MAX_VALUE_SIZE,
        });
    }
    if !(1..=MAX_ENTRIES).contains(&m.max_entries) {
        return Err(MapProblem::MaxEntries {
            entries: m.max_entries,
            max: MAX_ENTRIES,
        });
    }
    if matches!(m.map_type, MapType::ARRAY | MapType::PERCPU_ARRAY) && m.key_size != 4 {
        return Err(MapProblem::ArrayKeySize(m.key_size));
    }
    if m.map_type.is_socket_map() && !matches!(m.value_size, 4 | 8) {
        return Err(MapProblem::SocketValueSize(m.value_size));
    }
    Ok(())
}
