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
use std::ffi::CString;

use anyhow::{Context, Result, anyhow, bail, ensure};
use object::elf::SHF_EXECINSTR;
use object::{
    Architecture, BinaryFormat, Object as _, ObjectSection, ObjectSymbol, RelocationFlags,
    RelocationTarget, SectionFlags, SectionIndex, SymbolKind, SymbolSection,
};

use crate::btf::{Btf, Type};
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

/// Parses an eBPF ELF object.
pub fn parse(data: &[u8]) -> Result<Object> {
    let file = object::File::parse(data).map_err(|e| anyhow!("not a readable ELF object: {e}"))?;
    ensure!(file.format() == BinaryFormat::Elf, "not an ELF file");
    ensure!(
        file.architecture() == Architecture::Bpf,
        "the ELF machine is {:?}, not BPF (EM_BPF, 247): compile with clang -target bpf",
        file.architecture()
    );
    ensure!(
        file.is_little_endian(),
        "the object is big-endian eBPF; this host loads little-endian programs (clang -target bpfel)"
    );
    ensure!(
        file.is_64(),
        "the object is 32-bit ELF; eBPF objects are ELF64"
    );
    ensure!(
        file.symbol_table().is_some(),
        "the object has no symbol table (stripped?): rawload finds programs and maps by their symbols"
    );
    Reader::new(&file)?.read()
}

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
        let mut sections = Vec::new();
        let mut exec = Vec::new();
        let (mut legacy_maps, mut btf_maps) = (None, None);
        for s in file.sections() {
            let name = s
                .name()
                .map_err(|e| anyhow!("section #{} has an unreadable name: {e}", s.index().0))?;
            let is_exec = matches!(s.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.contains(SHF_EXECINSTR));
            let role = if is_exec {
                exec.push(s.index());
                if name == ".text" {
                    SectionRole::Subprograms
                } else if program_kind(name).is_some() {
                    SectionRole::Program
                } else {
                    bail!(
                        "program section '{name}' is not supported: rawload loads sockops and sk_msg programs"
                    );
                }
            } else {
                match name {
                    "license" => SectionRole::License,
                    "version" => SectionRole::Version,
                    "maps" => {
                        legacy_maps = Some(s.index());
                        SectionRole::LegacyMaps
                    }
                    ".maps" => {
                        btf_maps = Some(s.index());
                        SectionRole::BtfMaps
                    }
                    ".BTF" => SectionRole::Btf,
                    ".symtab" | ".strtab" => SectionRole::Symbols,
                    // Relocations of BTF and debug info are for debuggers.
                    n if n.starts_with(".rel.BTF") || n.starts_with(".rel.debug") => {
                        SectionRole::Ignored
                    }
                    n if n.starts_with(".rel") => SectionRole::Relocations,
                    n if is_data_section(n) => SectionRole::GlobalData,
                    _ => SectionRole::Ignored,
                }
            };
            sections.push((
                s.index(),
                SectionInfo {
                    name: name.to_string(),
                    size: s.size(),
                    role,
                },
            ));
        }
        Ok(Reader {
            file,
            sections,
            exec,
            legacy_maps,
            btf_maps,
            maps: Vec::new(),
            legacy_by_offset: HashMap::new(),
            data_maps: HashMap::new(),
        })
    }

    fn read(mut self) -> Result<Object> {
        let license = self.license()?;
        let kern_version = self.version()?;
        let btf = self.btf()?;
        self.read_legacy_maps()?;
        self.read_btf_maps(btf.as_ref())?;
        let mut functions = self.functions()?;
        self.read_relocations(&mut functions)?;

        let mut programs = Vec::new();
        for (i, f) in functions.iter().enumerate() {
            let Some(kind) = program_kind(&f.section) else {
                continue; // a .text subprogram
            };
            let (insns, map_refs, layout) =
                link(&functions, i).with_context(|| format!("linking program '{}'", f.name))?;
            programs.push(ProgramSpec {
                name: f.name.clone(),
                section: f.section.clone(),
                kind,
                insns,
                map_refs,
                layout,
            });
        }
        ensure!(
            !programs.is_empty(),
            "the object contains no sockops or sk_msg program"
        );
        Ok(Object {
            license,
            kern_version,
            maps: self.maps,
            programs,
            sections: self.sections.into_iter().map(|(_, s)| s).collect(),
            btf,
        })
    }

    /// `.BTF`, if the object has it (clang -g writes it).
    fn btf(&self) -> Result<Option<Btf>> {
        let Some(section) = self.section_named(".BTF") else {
            return Ok(None);
        };
        let data = section.data().map_err(|e| anyhow!(".BTF: {e}"))?;
        Ok(Some(Btf::parse(data).context("reading .BTF")?))
    }

    fn section_named(&self, name: &str) -> Option<object::Section<'d, 'a>> {
        self.file.section_by_name(name)
    }

    fn section_name(&self, index: SectionIndex) -> &str {
        self.sections
            .iter()
            .find(|(i, _)| *i == index)
            .map_or("?", |(_, s)| s.name.as_str())
    }

    fn section_data(&self, index: SectionIndex) -> Result<&'d [u8]> {
        let s = self
            .file
            .section_by_index(index)
            .map_err(|e| anyhow!("section #{}: {e}", index.0))?;
        s.data()
            .map_err(|e| anyhow!("section '{}' cannot be read: {e}", self.section_name(index)))
    }

    fn license(&self) -> Result<CString> {
        let Some(s) = self.section_named("license") else {
            return Ok(CString::default());
        };
        let data = s.data().map_err(|e| anyhow!("license section: {e}"))?;
        let end = data
            .iter()
            .position(|&b| b == 0)
            .context("the license section is not NUL-terminated")?;
        Ok(CString::new(&data[..end]).expect("no NUL before the first NUL"))
    }

    fn version(&self) -> Result<u32> {
        let Some(s) = self.section_named("version") else {
            return Ok(0);
        };
        let data = s.data().map_err(|e| anyhow!("version section: {e}"))?;
        let bytes: [u8; 4] = data
            .try_into()
            .map_err(|_| anyhow!("the version section is {} bytes, expected 4", data.len()))?;
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
        ensure!(!symbols.is_empty(), "the maps section has no map symbols");
        // clang < 9 left st_size at 0; then all definitions have the same
        // size (libbpf <= 0.8 and samples/bpf/bpf_load.c divide the section).
        let n_maps = symbols.len();
        for sym in symbols {
            let name = symbol_name(&sym)?;
            ensure!(
                !sym.is_local(),
                "map '{name}' is static; map definitions must be global"
            );
            let size = if sym.size() > 0 {
                sym.size() as usize
            } else {
                ensure!(
                    data.len() % n_maps == 0,
                    "the maps section ({} bytes) does not divide into {n_maps} equal definitions",
                    data.len()
                );
                data.len() / n_maps
            };
            let start = sym.address() as usize;
            let def = start
                .checked_add(size)
                .and_then(|end| data.get(start..end))
                .with_context(|| format!("map '{name}' lies outside the maps section"))?;
            ensure!(
                def.len() >= MAP_DEF_SIZE,
                "map '{name}' definition is {} bytes; struct bpf_map_def needs {MAP_DEF_SIZE}",
                def.len()
            );
            ensure!(
                def[MAP_DEF_SIZE..].iter().all(|&b| b == 0),
                "map '{name}' sets fields after map_flags (id, pinning, inner map, numa node) that rawload does not support"
            );
            let field = |i: usize| {
                u32::from_le_bytes([def[i * 4], def[i * 4 + 1], def[i * 4 + 2], def[i * 4 + 3]])
            };
            let spec = MapSpec {
                name: name.clone(),
                map_type: MapType(field(0)),
                key_size: field(1),
                value_size: field(2),
                max_entries: field(3),
                flags: field(4),
                origin: MapOrigin::Legacy,
                globals: Vec::new(),
            };
            validate_map(&spec)?;
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
        let btf =
            btf.context("the object has a .maps section but no .BTF: compile with clang -g")?;
        let vars = btf
            .datasec(".maps")
            .context(".BTF does not describe the .maps section")?;
        for var in vars {
            let Type::Var { name, target } = btf.get(var.type_id)? else {
                bail!("a .maps entry (BTF type {}) is not a variable", var.type_id);
            };
            let symbol_ok = self.file.symbols().any(|s| {
                s.section() == SymbolSection::Section(sec) && s.name().is_ok_and(|n| n == name)
            });
            ensure!(
                symbol_ok,
                "map '{name}' is in .BTF but has no symbol in .maps"
            );
            let spec = btf_map(btf, name, *target).with_context(|| format!("map '{name}'"))?;
            validate_map(&spec)?;
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
                    .with_context(|| {
                        format!("function '{name}' ({section}+{offset:#x}, {size} bytes) is not whole instructions inside its section")
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

    /// Records every relocation as a symbolic [`FnReloc`] on its function.
    fn read_relocations(&mut self, functions: &mut [Function]) -> Result<()> {
        let starts: HashMap<(usize, u64), usize> = functions
            .iter()
            .enumerate()
            .map(|(i, f)| ((f.section_index, f.offset), i))
            .collect();
        for &sec in &self.exec.clone() {
            let section = self
                .file
                .section_by_index(sec)
                .map_err(|e| anyhow!("section #{}: {e}", sec.0))?;
            let sec_name = self.section_name(sec).to_string();
            for (offset, rel) in section.relocations() {
                let at = || format!("relocation at {sec_name}+{offset:#x}");
                let f = functions
                    .iter()
                    .position(|f| {
                        f.section_index == sec.0
                            && offset >= f.offset
                            && offset < f.offset + f.byte_len()
                    })
                    .with_context(|| format!("{} is outside every function", at()))?;
                ensure!(
                    (offset - functions[f].offset) % INSN_SIZE as u64 == 0,
                    "{} is not on an instruction boundary",
                    at()
                );
                let i = ((offset - functions[f].offset) / INSN_SIZE as u64) as usize;
                let insn = functions[f].insns[i];
                let RelocationFlags::Elf { r_type } = rel.flags() else {
                    bail!("{} is not an ELF relocation", at());
                };
                let RelocationTarget::Symbol(sym_index) = rel.target() else {
                    bail!("{} has no symbol", at());
                };
                let sym = self.file.symbol_by_index(sym_index).map_err(|_| {
                    anyhow!(
                        "{} refers to symbol #{}, which does not exist",
                        at(),
                        sym_index.0
                    )
                })?;
                let sym_name = symbol_name(&sym).unwrap_or_default();
                let reloc = match r_type.0 {
                    R_BPF_64_64 => {
                        ensure!(
                            insn.is_ld_imm64() && i + 1 < functions[f].insns.len(),
                            "{} is on instruction {:#04x}, not on an ld_imm64",
                            at(),
                            insn.code
                        );
                        let (map, kind) = self
                            .map_target(&sym, &sym_name, insn.imm)
                            .with_context(|| format!("{} (symbol '{sym_name}')", at()))?;
                        FnReloc::Map {
                            insn: i,
                            map,
                            kind,
                            symbol: sym_name,
                        }
                    }
                    R_BPF_64_32 => {
                        ensure!(
                            insn.is_pseudo_call(),
                            "{} is on instruction {:#04x}, not on a bpf-to-bpf call",
                            at(),
                            insn.code
                        );
                        let SymbolSection::Section(target_sec) = sym.section() else {
                            bail!(
                                "{} calls '{sym_name}', which is not defined in this object",
                                at()
                            );
                        };
                        // libbpf: callee = st_value / 8 + imm + 1 (imm is -1
                        // for a function symbol, the offset for a section one).
                        let target = (sym.address() as i64 / INSN_SIZE as i64)
                            .checked_add(insn.imm as i64 + 1)
                            .filter(|t| *t >= 0)
                            .map(|t| t as u64 * INSN_SIZE as u64)
                            .with_context(|| format!("{} calls before its section", at()))?;
                        let callee = *starts.get(&(target_sec.0, target)).with_context(|| {
                            format!(
                                "{} calls {}+{target:#x}, which is not the start of a function",
                                at(),
                                self.section_name(target_sec)
                            )
                        })?;
                        FnReloc::Call { insn: i, callee }
                    }
                    other => bail!("{} has type {other}, which rawload does not handle", at()),
                };
                functions[f].relocs.push(reloc);
            }
        }
        // Calls between functions of the same section need no relocation:
        // the offset is already pc-relative.
        for func in functions.iter_mut() {
            let relocated: Vec<usize> = func
                .relocs
                .iter()
                .filter_map(|r| match r {
                    FnReloc::Call { insn, .. } => Some(*insn),
                    FnReloc::Map { .. } => None,
                })
                .collect();
            let mut local_calls = Vec::new();
            for (i, insn) in func.insns.iter().enumerate() {
                if !insn.is_pseudo_call() || relocated.contains(&i) {
                    continue;
                }
                let target = (func.offset as i64 / INSN_SIZE as i64 + i as i64 + 1)
                    .checked_add(insn.imm as i64)
                    .filter(|t| *t >= 0)
                    .map(|t| t as u64 * INSN_SIZE as u64);
                let callee = target
                    .and_then(|t| starts.get(&(func.section_index, t)))
                    .with_context(|| {
                        format!(
                            "'{}' instruction {i} calls an address that is not a function",
                            func.name
                        )
                    })?;
                local_calls.push(FnReloc::Call {
                    insn: i,
                    callee: *callee,
                });
            }
            func.relocs.extend(local_calls);
        }
        Ok(())
    }

    /// Resolves the symbol of an `R_BPF_64_64` to a map and reference kind.
    fn map_target(
        &mut self,
        sym: &object::Symbol<'d, 'a>,
        name: &str,
        imm: i32,
    ) -> Result<(usize, RefKind)> {
        let SymbolSection::Section(sec) = sym.section() else {
            bail!("the symbol is not defined in this object (extern variables are not supported)");
        };
        if Some(sec) == self.legacy_maps {
            let offset = (sym.address() as i64 + imm as i64) as u64;
            let map = *self
                .legacy_by_offset
                .get(&offset)
                .with_context(|| format!("no map definition starts at maps+{offset:#x}"))?;
            return Ok((map, RefKind::Map));
        }
        if Some(sec) == self.btf_maps {
            let map = self
                .maps
                .iter()
                .position(|m| m.origin == MapOrigin::Btf && m.name == name)
                .with_context(|| format!("'{name}' is in .maps but .BTF does not describe it"))?;
            return Ok((map, RefKind::Map));
        }
        let section = self.section_name(sec).to_string();
        ensure!(
            is_data_section(&section),
            "it points into section '{section}', which holds neither maps nor global data"
        );
        let data_len = self.file.section_by_index(sec).map_or(0, |s| s.size());
        let offset = sym.address() as i64 + imm as i64;
        ensure!(
            offset >= 0 && (offset as u64) < data_len,
            "offset {offset} is outside '{section}' ({data_len} bytes)"
        );
        let map = self.data_map(sec, &section)?;
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
        let section = self
            .file
            .section_by_index(sec)
            .map_err(|e| anyhow!("section '{name}': {e}"))?;
        let size = section.size();
        ensure!(
            size > 0 && size <= MAX_VALUE_SIZE as u64,
            "global data section '{name}' is {size} bytes"
        );
        // .bss is SHT_NOBITS: no bytes in the file, zeros in the map.
        let mut init = section
            .data()
            .map_err(|e| anyhow!("section '{name}': {e}"))?
            .to_vec();
        init.resize(size as usize, 0);
        let mut globals = Vec::new();
        for s in self.file.symbols() {
            if s.section() != SymbolSection::Section(sec)
                || s.kind() != SymbolKind::Data
                || s.size() == 0
            {
                continue;
            }
            let (offset, len) = (s.address(), s.size());
            ensure!(
                offset.checked_add(len).is_some_and(|end| end <= size),
                "variable '{}' lies outside '{name}'",
                symbol_name(&s)?
            );
            globals.push(Global {
                name: symbol_name(&s)?,
                offset: offset as usize,
                size: len as usize,
            });
        }
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
            globals,
        };
        self.maps.push(spec);
        self.data_maps.insert(sec, self.maps.len() - 1);
        Ok(self.maps.len() - 1)
    }
}

fn symbol_name(sym: &object::Symbol<'_, '_>) -> Result<String> {
    sym.name()
        .map(str::to_string)
        .map_err(|e| anyhow!("symbol #{} has an unreadable name: {e}", sym.index().0))
}

fn is_data_section(name: &str) -> bool {
    [".rodata", ".data", ".bss"].iter().any(|p| {
        name == *p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Reads one BTF-defined map: a struct whose member types encode the
/// attributes (`__uint(x, N)` = pointer to `int[N]`, `__type(k, T)` = `T *`).
fn btf_map(btf: &Btf, name: &str, var_type: u32) -> Result<MapSpec> {
    let Type::Struct { members, .. } = btf.get(btf.skip_mods(var_type)?)? else {
        bail!("its BTF type is not a struct");
    };
    let uint = |type_id: u32| -> Result<u32> {
        match btf.get(btf.skip_mods(type_id)?)? {
            Type::Ptr { target } => match btf.get(btf.skip_mods(*target)?)? {
                Type::Array { nelems, .. } => Ok(*nelems),
                _ => bail!("an __uint() attribute is not a pointer to an array"),
            },
            _ => bail!("an __uint() attribute is not a pointer"),
        }
    };
    let pointee_size = |type_id: u32| -> Result<u32> {
        match btf.get(btf.skip_mods(type_id)?)? {
            Type::Ptr { target } => u32::try_from(btf.resolve_size(*target)?)
                .map_err(|_| anyhow!("a __type() attribute is too large")),
            _ => bail!("a __type() attribute is not a pointer"),
        }
    };
    let (mut map_type, mut max_entries, mut flags) = (None, None, 0);
    let (mut key, mut value, mut key_size, mut value_size) = (None, None, None, None);
    for m in members {
        match m.name.as_str() {
            "type" => map_type = Some(uint(m.type_id)?),
            "max_entries" => max_entries = Some(uint(m.type_id)?),
            "map_flags" => flags = uint(m.type_id)?,
            "key" => key = Some(pointee_size(m.type_id)?),
            "value" => value = Some(pointee_size(m.type_id)?),
            "key_size" => key_size = Some(uint(m.type_id)?),
            "value_size" => value_size = Some(uint(m.type_id)?),
            "numa_node" | "pinning" => ensure!(
                uint(m.type_id)? == 0,
                "attribute '{}' is not supported (rawload pins everything under --pin-dir)",
                m.name
            ),
            other => bail!("attribute '{other}' is not supported"),
        }
    }
    let pick = |from_type: Option<u32>, explicit: Option<u32>, what: &str| -> Result<u32> {
        match (from_type, explicit) {
            (Some(a), Some(b)) if a != b => bail!("conflicting {what} sizes {a} and {b}"),
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => bail!("no {what} or {what}_size"),
        }
    };
    Ok(MapSpec {
        name: name.to_string(),
        map_type: MapType(map_type.context("no map type")?),
        key_size: pick(key, key_size, "key")?,
        value_size: pick(value, value_size, "value")?,
        max_entries: max_entries.context("no max_entries")?,
        flags,
        origin: MapOrigin::Btf,
        globals: Vec::new(),
    })
}

/// Refuses definitions no kernel would accept, so garbage never reaches
/// `BPF_MAP_CREATE`.
fn validate_map(m: &MapSpec) -> Result<()> {
    let n = &m.name;
    let known = [
        MapType::HASH,
        MapType::ARRAY,
        MapType::PERCPU_HASH,
        MapType::PERCPU_ARRAY,
        MapType::LRU_HASH,
        MapType::LRU_PERCPU_HASH,
        MapType::SOCKMAP,
        MapType::SOCKHASH,
    ];
    ensure!(
        known.contains(&m.map_type),
        "map '{n}' has type {}, which rawload does not create",
        m.map_type.0
    );
    ensure!(
        (1..=MAX_KEY_SIZE).contains(&m.key_size),
        "map '{n}' has key size {} (must be 1..={MAX_KEY_SIZE})",
        m.key_size
    );
    ensure!(
        (1..=MAX_VALUE_SIZE).contains(&m.value_size),
        "map '{n}' has value size {} (must be 1..={MAX_VALUE_SIZE})",
        m.value_size
    );
    ensure!(
        (1..=MAX_ENTRIES).contains(&m.max_entries),
        "map '{n}' has max_entries {} (must be 1..={MAX_ENTRIES})",
        m.max_entries
    );
    if matches!(m.map_type, MapType::ARRAY | MapType::PERCPU_ARRAY) {
        ensure!(m.key_size == 4, "array map '{n}' must have a 4-byte key");
    }
    if matches!(m.map_type, MapType::SOCKMAP | MapType::SOCKHASH) {
        ensure!(
            m.value_size == 4 || m.value_size == 8,
            "socket map '{n}' must have a 4- or 8-byte value, not {}",
            m.value_size
        );
    }
    Ok(())
}
