//! Why rawload-obj refuses an object: one [`Error`] variant per failure a
//! user can hit, with the names and places needed to find it.
//!
//! The variants follow the pipeline: the file ([`Error::NotBpfObject`],
//! [`Error::Elf`]), its sections, its maps, its relocations and calls, the
//! programs and globals the loader asks for, and the kernel fields it fills.
//! Where one thing can be wrong in several ways, the variant names the
//! thing (a map, a relocation) and a `problem` enum says what is wrong with
//! it, so a caller or a test matches
//! `Error::InvalidMap { problem: MapProblem::KeySize { size: 0, .. }, .. }`,
//! not a substring. The limits a value broke travel with it (`max`), so the
//! message can say them without this module reaching into the readers.
//!
//! Messages say what to do where there is something to do (`compile with
//! clang -g`). An error that wraps another (an `object` read failure, a
//! malformed BTF type) returns it from [`std::error::Error::source`] and does
//! not repeat it in its own message: `anyhow`'s `{:#}`, which the command
//! prints, joins the chain with `: `. The loader takes these with `?` into
//! `anyhow`; nothing here depends on it.
//!
//! Written by hand (no `thiserror`): the crate's one dependency is `object`.

use std::fmt;

use object::Architecture;

use crate::insn::MAX_INSNS;
use crate::uapi::{MapType, ProgType};

/// The result of everything in this crate (`E` for the few steps that
/// return one of the problem enums, which their caller wraps).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading an object or answering the
/// loader's questions about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not an eBPF ELF object this host can load.
    NotBpfObject(NotBpf),
    /// The `object` crate cannot read a section or a symbol.
    Elf {
        item: ElfItem,
        source: object::read::Error,
    },
    /// An instruction section whose name is no program type rawload loads.
    UnsupportedSection { section: String },
    /// A function symbol whose bytes are not whole instructions inside its
    /// section.
    FunctionBounds {
        function: String,
        section: String,
        offset: u64,
        size: u64,
    },
    /// The object has no program of a type rawload loads.
    NoPrograms,
    /// The `license` section has no terminating NUL.
    LicenseNotTerminated,
    /// The `version` section is not one `u32`.
    VersionSize { size: usize },
    /// The object's `.BTF` section cannot be parsed.
    Btf(BtfError),
    /// The `maps` or `.maps` section as a whole.
    MapSection(MapSectionProblem),
    /// One map definition, by the map's name.
    InvalidMap { map: String, problem: MapProblem },
    /// A global data section that no array map value can hold.
    DataSection {
        section: String,
        size: u64,
        max: u32,
    },
    /// A relocation that cannot be applied: where it is (`section+offset`),
    /// the symbol it names once that is known, and what is wrong.
    Relocation {
        section: String,
        offset: u64,
        symbol: Option<String>,
        problem: RelocProblem,
    },
    /// A bpf-to-bpf call inside one section (which needs no relocation)
    /// that does not land on the start of a function.
    Call { function: String, insn: usize },
    /// A program that cannot be linked with the functions it calls.
    Link {
        program: String,
        problem: LinkProblem,
    },
    /// The object has no program of a type the loader needs.
    MissingProgram {
        prog_type: ProgType,
        section: &'static str,
    },
    /// The object has two programs of a type the loader loads once.
    DuplicateProgram {
        prog_type: ProgType,
        first: String,
        second: String,
    },
    /// A global variable that cannot be set (or does not fit its section).
    Global {
        name: String,
        problem: GlobalProblem,
    },
    /// At load time: a map reference whose map has no file descriptor.
    MissingMapFd {
        program: String,
        map: usize,
        symbol: String,
    },
    /// At load time: a map reference past the end of its program.
    MapRefOutOfRange { program: String, insn: usize },
    /// Two objects of one set ([`crate::combine`]) that cannot be loaded
    /// together, by their names, and why.
    Combine {
        first: String,
        second: String,
        problem: CombineProblem,
    },
    /// A `kfield_*` global that does not declare a kernel field the way
    /// [`crate::kfield`] reads it.
    KFieldGlobal(KFieldGlobalProblem),
    /// A kernel struct field the program reads that the kernel's BTF does
    /// not have, or has in a shape the program cannot load.
    KernelField {
        strukt: String,
        path: Vec<String>,
        problem: KFieldProblem,
    },
}

/// Why the bytes are not an eBPF object for this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotBpf {
    /// Not an object file the `object` crate can read at all.
    Unreadable(object::read::Error),
    /// An object file, but not ELF.
    NotElf,
    /// ELF for another machine (`e_machine` is not `EM_BPF`).
    Machine(Architecture),
    BigEndian,
    Elf32,
    /// No `.symtab`: programs and maps are found by their symbols.
    NoSymbolTable,
}

/// The part of the ELF file the `object` crate could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfItem {
    SectionName { index: usize },
    Section { name: String },
    SymbolName { index: usize },
}

/// What is wrong with the `maps` or `.maps` section as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSectionProblem {
    /// `maps` has no symbol naming a definition.
    NoLegacySymbols,
    /// The symbols have no size (clang < 9) and `maps` does not divide
    /// into that many equal definitions.
    Indivisible { size: usize, maps: usize },
    /// `.maps` without the `.BTF` that describes it.
    NoBtf,
    /// `.BTF` has no `DATASEC` named `.maps`.
    NotInBtf,
    /// An entry of the `.maps` `DATASEC` that is not a `VAR`.
    NotAVariable { type_id: u32 },
}

/// What is wrong with one map definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapProblem {
    /// A `static` legacy map: the loader finds maps by global symbols.
    Static,
    /// The symbol points outside the `maps` section.
    OutsideSection,
    /// Shorter than `struct bpf_map_def`.
    DefinitionSize {
        size: usize,
        needs: usize,
    },
    /// Sets the fields after `map_flags` (id, pinning, inner map, NUMA node).
    UnsupportedFields,
    /// Described in `.BTF` but without a symbol in `.maps`.
    NoSymbol,
    /// The BTF type of the variable is not a struct.
    NotAStruct,
    /// An attribute that should be `__uint(attr, N)` (a pointer to `int[N]`).
    NotUint {
        attr: String,
    },
    /// An attribute that should be `__type(attr, T)` (a `T *`).
    NotType {
        attr: String,
    },
    /// A `__type()` larger than any map key or value.
    TypeTooLarge {
        attr: String,
        size: u64,
    },
    UnsupportedAttribute {
        attr: String,
    },
    /// `__type(key, T)` and `__uint(key_size, N)` disagree.
    ConflictingSizes {
        what: &'static str,
        from_type: u32,
        explicit: u32,
    },
    /// `type` or `max_entries` is absent.
    MissingAttribute {
        attr: &'static str,
    },
    /// Neither `__type(what, T)` nor `__uint(what_size, N)`.
    MissingSize {
        what: &'static str,
    },
    /// The map's BTF description refers to types that do not make sense.
    Btf(BtfError),
    /// A map type rawload does not create.
    UnknownType(MapType),
    /// Sizes and counts outside what any kernel accepts (`1..=max`).
    KeySize {
        size: u32,
        max: u32,
    },
    ValueSize {
        size: u32,
        max: u32,
    },
    MaxEntries {
        entries: u32,
        max: u32,
    },
    /// An array whose key is not a 4-byte index.
    ArrayKeySize(u32),
    /// A sockmap or sockhash whose value is not a 4- or 8-byte socket.
    SocketValueSize(u32),
}

/// What is wrong with a BTF blob (the object's `.BTF` or a kernel's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BtfError {
    HeaderTruncated {
        size: usize,
    },
    Magic {
        magic: u16,
    },
    Version {
        version: u8,
    },
    /// The header's type or string section lies outside the blob.
    OutsideBlob {
        part: &'static str,
    },
    TypesTruncated,
    NameOutside {
        offset: u32,
    },
    NameNotTerminated {
        offset: u32,
    },
    UnknownKind {
        kind: u32,
        id: usize,
    },
    NoSuchType {
        id: u32,
    },
    /// More modifiers or arrays in a row than any real type has: a cycle.
    TooDeep {
        id: u32,
    },
    /// A size or offset that does not fit the integer holding it.
    Overflow {
        id: u32,
    },
    /// A type without a size (a function, a forward declaration).
    NoSize {
        id: u32,
    },
}

/// What is wrong with one relocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelocProblem {
    OutsideFunctions,
    Misaligned,
    NotElf,
    NoSymbol,
    MissingSymbol {
        index: usize,
    },
    UnsupportedType {
        r_type: u32,
    },
    /// An `R_BPF_64_64` on an instruction that is not `ld_imm64`.
    NotLdImm64 {
        code: u8,
    },
    /// An `R_BPF_64_32` on an instruction that is not a bpf-to-bpf call.
    NotCall {
        code: u8,
    },
    /// The symbol is not defined here (an `extern` variable).
    Extern,
    /// Into `maps`, but not at the start of a definition.
    NoLegacyMap {
        offset: u64,
    },
    /// Into `.maps`, at a symbol `.BTF` does not describe.
    NotInBtf,
    /// Into a section that holds neither maps nor global data.
    NotData {
        target: String,
    },
    /// Past the end of a global data section.
    OutsideData {
        target: String,
        offset: i64,
        size: u64,
    },
    /// A call to a function that is not defined here.
    CallExtern,
    CallBeforeSection,
    /// A call to an address that is not the start of a function.
    CallTarget {
        target: String,
        offset: u64,
    },
}

/// Why a program cannot be linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkProblem {
    /// More than [`MAX_INSNS`] instructions with its callees.
    TooManyInsns,
    /// A call whose distance does not fit `imm`.
    CallTooFar { insn: usize },
}

/// Why two objects cannot be loaded as one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CombineProblem {
    /// Both declare the map `map`, differently: `field` (a
    /// `struct bpf_map_def` member) is `first` in one and `second` in the
    /// other.
    MapDiffers {
        map: String,
        field: &'static str,
        first: u32,
        second: u32,
    },
    /// Both have a program of this type; rawload loads one of each.
    Program { prog_type: ProgType },
    /// Both define this global variable; the loader sets globals by name.
    Global { name: String },
    /// Their licenses differ; every program is loaded with the set's one.
    License { first: String, second: String },
    /// Both would create a global data map of this name (objects with the
    /// same file name).
    DataMap { map: String },
}

/// Why a global variable cannot be set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalProblem {
    NotFound,
    Size { size: usize, given: usize },
    OutsideSection { section: String },
    NotData,
}

/// What is wrong with a `kfield_*` global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KFieldGlobalProblem {
    /// Not the size of `struct kfield`.
    Size { size: usize, expected: usize },
    /// A load width rawload cannot fill.
    Width { width: u8 },
    /// A name that is not a struct and member path.
    Name { global: String },
}

/// Why a kernel struct field cannot be read as the program declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KFieldProblem {
    NoStruct,
    NoMember {
        member: String,
    },
    /// Not at a byte boundary, and not a bitfield.
    Unaligned,
    /// Not a bitfield, and not the size of the program's load.
    Size {
        size: u64,
        width: u8,
    },
    /// A bitfield that does not fit the program's load.
    DoesNotFit {
        shift: u32,
        bits: u32,
        width: u8,
    },
    Btf(BtfError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotBpfObject(why) => write!(f, "{why}"),
            Error::Elf { item, .. } => write!(f, "cannot read {item}"),
            Error::UnsupportedSection { section } => write!(
                f,
                "program section '{section}' is not supported: rawload loads sockops, sk_msg and sk_skb programs"
            ),
            Error::FunctionBounds {
                function,
                section,
                offset,
                size,
            } => write!(
                f,
                "function '{function}' ({section}+{offset:#x}, {size} bytes) is not whole instructions inside its section"
            ),
            Error::NoPrograms => write!(f, "the object has no sockops, sk_msg or sk_skb program"),
            Error::LicenseNotTerminated => {
                write!(f, "the license section is not NUL-terminated")
            }
            Error::VersionSize { size } => {
                write!(f, "the version section is {size} bytes, expected 4")
            }
            Error::Btf(_) => write!(f, "the object's .BTF section is malformed"),
            Error::MapSection(problem) => write!(f, "{problem}"),
            Error::InvalidMap { map, problem } => write!(f, "map '{map}' {problem}"),
            Error::DataSection { section, size, max } => write!(
                f,
                "global data section '{section}' is {size} bytes; the value of its array map holds 1 to {max}"
            ),
            Error::Relocation {
                section,
                offset,
                symbol,
                problem,
            } => relocation(f, section, *offset, symbol.as_deref(), problem),
            Error::Call { function, insn } => write!(
                f,
                "function '{function}' instruction {insn} calls an address that is not the start of a function"
            ),
            Error::Link { program, problem } => {
                write!(f, "cannot link program '{program}': {problem}")
            }
            Error::MissingProgram { prog_type, section } => write!(
                f,
                "the object has no {} program (expected a SEC(\"{section}\") function)",
                prog_type.name()
            ),
            Error::DuplicateProgram {
                prog_type,
                first,
                second,
            } => write!(
                f,
                "the object has more than one {} program ({first} and {second}); rawload loads at most one",
                prog_type.name()
            ),
            Error::Global { name, problem } => global(f, name, problem),
            Error::MissingMapFd {
                program,
                map,
                symbol,
            } => write!(
                f,
                "program '{program}' uses map #{map} ('{symbol}'), which was not created"
            ),
            Error::MapRefOutOfRange { program, insn } => write!(
                f,
                "program '{program}' has a map reference at instruction {insn}, past its end"
            ),
            Error::Combine {
                first,
                second,
                problem,
            } => combine(f, first, second, problem),
            Error::KFieldGlobal(problem) => write!(f, "{problem}"),
            Error::KernelField {
                strukt,
                path,
                problem,
            } => kernel_field(f, strukt, path, problem),
        }
    }
}

fn relocation(
    f: &mut fmt::Formatter<'_>,
    section: &str,
    offset: u64,
    symbol: Option<&str>,
    problem: &RelocProblem,
) -> fmt::Result {
    write!(f, "relocation at {section}+{offset:#x}")?;
    if let Some(symbol) = symbol {
        write!(f, " (symbol '{symbol}')")?;
    }
    write!(f, " {problem}")
}

fn combine(f: &mut fmt::Formatter<'_>, a: &str, b: &str, problem: &CombineProblem) -> fmt::Result {
    match problem {
        CombineProblem::MapDiffers {
            map,
            field,
            first,
            second,
        } => write!(
            f,
            "map '{map}' is declared in {a} with {field} {} and in {b} with {field} {}; \
             a map shared by name must be declared the same in every object",
            map_field(field, *first),
            map_field(field, *second)
        ),
        CombineProblem::Program { prog_type } => write!(
            f,
            "{a} and {b} both have a {} program; rawload loads one of each type, so leave one of them out",
            prog_type.name()
        ),
        CombineProblem::Global { name } => write!(
            f,
            "{a} and {b} both define the global variable '{name}'; the loader sets globals by name, so rename one"
        ),
        CombineProblem::License { first, second } => write!(
            f,
            "{a} has license \"{first}\" and {b} \"{second}\"; the programs are loaded with one license, so the objects must declare the same"
        ),
        CombineProblem::DataMap { map } => write!(
            f,
            "{a} and {b} would both create the global data map '{map}' (two objects with one file name); rename one file"
        ),
    }
}

/// A `struct bpf_map_def` field's value as a C programmer writes it.
fn map_field(field: &str, value: u32) -> String {
    match field {
        "type" => MapType(value).name().to_string(),
        "map_flags" => format!("{value:#x}"),
        _ => value.to_string(),
    }
}

fn global(f: &mut fmt::Formatter<'_>, name: &str, problem: &GlobalProblem) -> fmt::Result {
    match problem {
        GlobalProblem::NotFound => write!(f, "the object has no global variable '{name}'"),
        GlobalProblem::Size { size, given } => write!(
            f,
            "global '{name}' is {size} bytes, cannot set it from {given} bytes"
        ),
        GlobalProblem::OutsideSection { section } => {
            write!(f, "global '{name}' lies outside its section '{section}'")
        }
        GlobalProblem::NotData => write!(f, "'{name}' is not in a data section"),
    }
}

fn kernel_field(
    f: &mut fmt::Formatter<'_>,
    strukt: &str,
    path: &[String],
    problem: &KFieldProblem,
) -> fmt::Result {
    let field = format!("struct {strukt}.{}", path.join("."));
    match problem {
        KFieldProblem::NoStruct => write!(f, "the kernel's BTF has no struct {strukt}"),
        KFieldProblem::NoMember { member } => {
            write!(f, "the kernel's struct {strukt} has no member '{member}'")?;
            if path.len() > 1 {
                write!(f, " (looking for {field})")?;
            }
            Ok(())
        }
        KFieldProblem::Unaligned => write!(f, "{field} is not byte-aligned"),
        KFieldProblem::Size { size, width } => {
            write!(f, "{field} is {size} bytes; the program loads {width}")
        }
        KFieldProblem::DoesNotFit { shift, bits, width } => write!(
            f,
            "{field} ({bits} bits at bit {shift}) does not fit a {width}-byte load"
        ),
        KFieldProblem::Btf(_) => write!(f, "{field}: the kernel's BTF is malformed"),
    }
}

impl fmt::Display for NotBpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotBpf::Unreadable(_) => write!(f, "not a readable ELF object"),
            NotBpf::NotElf => write!(
                f,
                "not an ELF file: eBPF objects are the ELF files clang -target bpf -c writes"
            ),
            NotBpf::Machine(arch) => write!(
                f,
                "the ELF machine is {arch:?}, not BPF (EM_BPF, 247): compile with clang -target bpf"
            ),
            NotBpf::BigEndian => write!(
                f,
                "the object is big-endian eBPF; this host loads little-endian programs (clang -target bpfel)"
            ),
            NotBpf::Elf32 => write!(f, "the object is 32-bit ELF; eBPF objects are ELF64"),
            NotBpf::NoSymbolTable => write!(
                f,
                "the object has no symbol table (stripped?): rawload finds programs and maps by their symbols"
            ),
        }
    }
}

impl fmt::Display for ElfItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfItem::SectionName { index } => write!(f, "the name of section #{index}"),
            ElfItem::Section { name } => write!(f, "section '{name}'"),
            ElfItem::SymbolName { index } => write!(f, "the name of symbol #{index}"),
        }
    }
}

impl fmt::Display for MapSectionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapSectionProblem::NoLegacySymbols => write!(f, "the maps section has no map symbols"),
            MapSectionProblem::Indivisible { size, maps } => write!(
                f,
                "the maps section ({size} bytes) does not divide into {maps} equal definitions"
            ),
            MapSectionProblem::NoBtf => write!(
                f,
                "the object has a .maps section but no .BTF: compile with clang -g"
            ),
            MapSectionProblem::NotInBtf => write!(f, ".BTF does not describe the .maps section"),
            MapSectionProblem::NotAVariable { type_id } => {
                write!(f, "a .maps entry (BTF type {type_id}) is not a variable")
            }
        }
    }
}

/// Completes "map 'name' ...".
impl fmt::Display for MapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapProblem::Static => write!(f, "is static; map definitions must be global"),
            MapProblem::OutsideSection => write!(f, "lies outside the maps section"),
            MapProblem::DefinitionSize { size, needs } => write!(
                f,
                "definition is {size} bytes; struct bpf_map_def needs {needs}"
            ),
            MapProblem::UnsupportedFields => write!(
                f,
                "sets fields after map_flags (id, pinning, inner map, numa node) that rawload does not support"
            ),
            MapProblem::NoSymbol => write!(f, "is in .BTF but has no symbol in .maps"),
            MapProblem::NotAStruct => write!(f, "has a BTF type that is not a struct"),
            MapProblem::NotUint { attr } => write!(
                f,
                "attribute '{attr}' is not an __uint() (a pointer to an array)"
            ),
            MapProblem::NotType { attr } => {
                write!(f, "attribute '{attr}' is not a __type() (a pointer)")
            }
            MapProblem::TypeTooLarge { attr, size } => {
                write!(f, "attribute '{attr}' is a type of {size} bytes, too large")
            }
            MapProblem::UnsupportedAttribute { attr } if attr == "pinning" => write!(
                f,
                "attribute 'pinning' is not supported (rawload pins everything under --pin-dir)"
            ),
            MapProblem::UnsupportedAttribute { attr } => {
                write!(f, "attribute '{attr}' is not supported")
            }
            MapProblem::ConflictingSizes {
                what,
                from_type,
                explicit,
            } => write!(
                f,
                "has a {what} of {from_type} bytes but {what}_size {explicit}"
            ),
            MapProblem::MissingAttribute { attr } => write!(f, "has no {attr} attribute"),
            MapProblem::MissingSize { what } => write!(f, "has no {what} or {what}_size"),
            MapProblem::Btf(_) => write!(f, "has a malformed BTF description"),
            MapProblem::UnknownType(t) => {
                write!(f, "has type {}, which rawload does not create", t.0)
            }
            MapProblem::KeySize { size, max } => {
                write!(f, "has key size {size} (must be 1..={max})")
            }
            MapProblem::ValueSize { size, max } => {
                write!(f, "has value size {size} (must be 1..={max})")
            }
            MapProblem::MaxEntries { entries, max } => {
                write!(f, "has max_entries {entries} (must be 1..={max})")
            }
            MapProblem::ArrayKeySize(n) => {
                write!(f, "is an array, whose key must be 4 bytes, not {n}")
            }
            MapProblem::SocketValueSize(n) => write!(
                f,
                "is a socket map, which must have a 4- or 8-byte value, not {n}"
            ),
        }
    }
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::HeaderTruncated { size } => {
                write!(f, "BTF header is truncated ({size} bytes)")
            }
            BtfError::Magic { magic } => write!(
                f,
                "BTF magic is {magic:#06x}, expected 0xeb9f (big-endian or corrupt BTF)"
            ),
            BtfError::Version { version } => write!(f, "unsupported BTF version {version}"),
            BtfError::OutsideBlob { part } => write!(f, "BTF {part} section lies outside the BTF"),
            BtfError::TypesTruncated => write!(f, "BTF type section is truncated"),
            BtfError::NameOutside { offset } => {
                write!(f, "BTF name offset {offset} is outside the string section")
            }
            BtfError::NameNotTerminated { offset } => {
                write!(f, "BTF string at offset {offset} is not NUL-terminated")
            }
            BtfError::UnknownKind { kind, id } => write!(f, "unknown BTF kind {kind} (type {id})"),
            BtfError::NoSuchType { id } => write!(f, "BTF type id {id} does not exist"),
            BtfError::TooDeep { id } => {
                write!(f, "BTF type chain at id {id} is too deep (a cycle?)")
            }
            BtfError::Overflow { id } => {
                write!(f, "BTF type id {id} has a size or offset that overflows")
            }
            BtfError::NoSize { id } => write!(f, "BTF type id {id} has no size"),
        }
    }
}

/// Completes "relocation at section+offset (symbol 's') ...".
impl fmt::Display for RelocProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelocProblem::OutsideFunctions => write!(f, "is outside every function"),
            RelocProblem::Misaligned => write!(f, "is not on an instruction boundary"),
            RelocProblem::NotElf => write!(f, "is not an ELF relocation"),
            RelocProblem::NoSymbol => write!(f, "has no symbol"),
            RelocProblem::MissingSymbol { index } => {
                write!(f, "refers to symbol #{index}, which does not exist")
            }
            RelocProblem::UnsupportedType { r_type } => write!(
                f,
                "has type {r_type}, which rawload does not handle (only R_BPF_64_64 and R_BPF_64_32)"
            ),
            RelocProblem::NotLdImm64 { code } => {
                write!(f, "is on instruction {code:#04x}, not on an ld_imm64")
            }
            RelocProblem::NotCall { code } => {
                write!(f, "is on instruction {code:#04x}, not on a bpf-to-bpf call")
            }
            RelocProblem::Extern => write!(
                f,
                "names a symbol not defined in this object (extern variables are not supported)"
            ),
            RelocProblem::NoLegacyMap { offset } => write!(
                f,
                "points at maps+{offset:#x}, where no map definition starts"
            ),
            RelocProblem::NotInBtf => write!(f, "names a map in .maps that .BTF does not describe"),
            RelocProblem::NotData { target } => write!(
                f,
                "points into section '{target}', which holds neither maps nor global data"
            ),
            RelocProblem::OutsideData {
                target,
                offset,
                size,
            } => write!(
                f,
                "points at offset {offset}, outside '{target}' ({size} bytes)"
            ),
            RelocProblem::CallExtern => {
                write!(f, "calls a function that is not defined in this object")
            }
            RelocProblem::CallBeforeSection => write!(f, "calls before the start of its section"),
            RelocProblem::CallTarget { target, offset } => write!(
                f,
                "calls {target}+{offset:#x}, which is not the start of a function"
            ),
        }
    }
}

impl fmt::Display for KFieldGlobalProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KFieldGlobalProblem::Size { size, expected } => write!(
                f,
                "a kfield global is {size} bytes, expected {expected} (struct kfield)"
            ),
            KFieldGlobalProblem::Width { width } => write!(
                f,
                "a kfield global declares a {width}-byte load; rawload loads 1 or 4 bytes"
            ),
            KFieldGlobalProblem::Name { global } => write!(
                f,
                "'{global}' does not name a kernel field: expected kfield_<struct>__<member>[__<member>...]"
            ),
        }
    }
}

impl fmt::Display for LinkProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkProblem::TooManyInsns => write!(
                f,
                "more than {MAX_INSNS} instructions with its callees (the kernel's limit)"
            ),
            LinkProblem::CallTooFar { insn } => {
                write!(f, "the call at instruction {insn} is too far to encode")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NotBpfObject(NotBpf::Unreadable(source)) | Error::Elf { source, .. } => {
                Some(source)
            }
            Error::Btf(source)
            | Error::InvalidMap {
                problem: MapProblem::Btf(source),
                ..
            }
            | Error::KernelField {
                problem: KFieldProblem::Btf(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}

impl std::error::Error for BtfError {}

/// `?` on a [`crate::btf::Btf`] query: in the object's `.BTF` ...
impl From<BtfError> for Error {
    fn from(e: BtfError) -> Error {
        Error::Btf(e)
    }
}

/// ... in the BTF that describes one map ...
impl From<BtfError> for MapProblem {
    fn from(e: BtfError) -> MapProblem {
        MapProblem::Btf(e)
    }
}

/// ... or in the kernel's BTF.
impl From<BtfError> for KFieldProblem {
    fn from(e: BtfError) -> KFieldProblem {
        KFieldProblem::Btf(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `anyhow`'s `{:#}` prints: each message of the chain, joined.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut text = e.to_string();
        let mut next = e.source();
        while let Some(s) = next {
            text += &format!(": {s}");
            next = s.source();
        }
        text
    }

    #[test]
    fn wrapped_errors_are_sources_not_repeated() {
        let e = Error::InvalidMap {
            map: "socks".into(),
            problem: MapProblem::Btf(BtfError::NoSuchType { id: 9 }),
        };
        assert_eq!(
            chain(&e),
            "map 'socks' has a malformed BTF description: BTF type id 9 does not exist"
        );
        let e = Error::Relocation {
            section: "sockops".into(),
            offset: 0x40,
            symbol: Some("counters".into()),
            problem: RelocProblem::NotLdImm64 { code: 0xb7 },
        };
        assert_eq!(
            chain(&e),
            "relocation at sockops+0x40 (symbol 'counters') is on instruction 0xb7, not on an ld_imm64"
        );
    }

    #[test]
    fn errors_cross_threads_into_anyhow() {
        fn is_send_sync<T: std::error::Error + Send + Sync + 'static>() {}
        is_send_sync::<Error>();
        is_send_sync::<BtfError>();
    }
}
