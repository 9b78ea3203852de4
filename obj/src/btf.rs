//! A minimal reader of BTF (`.BTF`, include/uapi/linux/btf.h), enough to
//! understand BTF-defined maps.
//!
//! clang records each map declared in `SEC(".maps")` as a `VAR` inside a
//! `DATASEC` named `.maps`. The map's attributes are encoded in the *types* of
//! the struct's members: `__uint(max_entries, 256)` is a pointer to an array of
//! 256 ints, `__type(key, struct k)` is a pointer to `struct k`. The section's
//! bytes are all zero; the information lives only here.
//!
//! rawload reads BTF on the host only and never loads it into the kernel:
//! old kernels reject the BTF kinds a new clang emits, and SOCKHASH refuses
//! key/value BTF anyway.

use anyhow::{Context, Result, bail, ensure};

const MAGIC: u16 = 0xeb9f;
/// Nesting depth after which a type chain is declared malformed (a cycle).
const MAX_DEPTH: usize = 32;

/// `BTF_KIND_*`.
mod kind {
    pub const INT: u32 = 1;
    pub const PTR: u32 = 2;
    pub const ARRAY: u32 = 3;
    pub const STRUCT: u32 = 4;
    pub const UNION: u32 = 5;
    pub const ENUM: u32 = 6;
    pub const FWD: u32 = 7;
    pub const TYPEDEF: u32 = 8;
    pub const VOLATILE: u32 = 9;
    pub const CONST: u32 = 10;
    pub const RESTRICT: u32 = 11;
    pub const FUNC: u32 = 12;
    pub const FUNC_PROTO: u32 = 13;
    pub const VAR: u32 = 14;
    pub const DATASEC: u32 = 15;
    pub const FLOAT: u32 = 16;
    pub const DECL_TAG: u32 = 17;
    pub const TYPE_TAG: u32 = 18;
    pub const ENUM64: u32 = 19;
}

/// A struct or union member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    /// Offset in bits from the start of the struct.
    pub bit_offset: u32,
    /// Width in bits of a bitfield, 0 for an ordinary member (BTF stores it
    /// in the top 8 bits of the offset when the struct's kind flag is set).
    pub bitfield_size: u32,
}

/// One entry of a `DATASEC`: a variable and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSecinfo {
    pub type_id: u32,
    pub offset: u32,
    pub size: u32,
}

/// The parts of each type this reader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Type {
    /// INT, ENUM, ENUM64, FLOAT: a sized scalar.
    Scalar {
        size: u32,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        nelems: u32,
    },
    Struct {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    /// TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG: same type as `target`.
    Modifier {
        target: u32,
    },
    Var {
        name: String,
        target: u32,
    },
    Datasec {
        name: String,
        vars: Vec<VarSecinfo>,
    },
    /// FWD, FUNC, FUNC_PROTO, DECL_TAG: nothing rawload needs.
    Other,
}

/// Parsed BTF: `types[id]`, with id 0 being `void`.
#[derive(Debug, Clone)]
pub struct Btf {
    types: Vec<Type>,
}

/// A little-endian cursor that reports truncation instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32> {
        let end = self.pos.checked_add(4).context("BTF offset overflow")?;
        let b = self
            .data
            .get(self.pos..end)
            .context("BTF type section is truncated")?;
        self.pos = end;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        let end = self.pos.checked_add(n).context("BTF offset overflow")?;
        ensure!(end <= self.data.len(), "BTF type section is truncated");
        self.pos = end;
        Ok(())
    }
}

fn le_u32(data: &[u8], at: usize) -> Result<u32> {
    let b = data.get(at..at + 4).context("BTF header is truncated")?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    /// Parses a `.BTF` section.
    pub fn parse(data: &[u8]) -> Result<Btf> {
        ensure!(data.len() >= 24, "BTF header is truncated");
        let magic = u16::from_le_bytes([data[0], data[1]]);
        ensure!(
            magic == MAGIC,
            "BTF magic is {magic:#06x}, expected {MAGIC:#06x} (big-endian or corrupt BTF)"
        );
        ensure!(data[2] == 1, "unsupported BTF version {}", data[2]);
        // hdr_len, not 24: newer headers append fields (e.g. layout_off).
        let hdr_len = le_u32(data, 4)? as usize;
        let (type_off, type_len) = (le_u32(data, 8)? as usize, le_u32(data, 12)? as usize);
        let (str_off, str_len) = (le_u32(data, 16)? as usize, le_u32(data, 20)? as usize);
        let section = |off: usize, len: usize, what: &str| -> Result<&[u8]> {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .and_then(|(start, end)| data.get(start..end))
                .with_context(|| format!("BTF {what} section lies outside .BTF"))
        };
        let types_data = section(type_off, type_len, "type")?;
        let strings = section(str_off, str_len, "string")?;

        let name = |off: u32| -> Result<String> {
            let rest = strings
                .get(off as usize..)
                .with_context(|| format!("BTF name offset {off} is outside the string section"))?;
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .context("BTF string is not NUL-terminated")?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        };

        let mut r = Reader {
            data: types_data,
            pos: 0,
        };
        let mut types = vec![Type::Other]; // id 0: void
        while r.pos < types_data.len() {
            let name_off = r.u32()?;
            let info = r.u32()?;
            let size_or_type = r.u32()?;
            let k = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let t = match k {
                kind::INT => {
                    r.skip(4)?;
                    Type::Scalar { size: size_or_type }
                }
                kind::FLOAT => Type::Scalar { size: size_or_type },
                kind::ENUM => {
                    r.skip(8 * vlen)?;
                    Type::Scalar { size: size_or_type }
                }
                kind::ENUM64 => {
                    r.skip(12 * vlen)?;
                    Type::Scalar { size: size_or_type }
                }
                kind::PTR => Type::Ptr {
                    target: size_or_type,
                },
                kind::ARRAY => {
                    let elem = r.u32()?;
                    let _index_type = r.u32()?;
                    let nelems = r.u32()?;
                    Type::Array { elem, nelems }
                }
                kind::STRUCT | kind::UNION => {
                    let mut members = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        let m_name = r.u32()?;
                        let type_id = r.u32()?;
                        let offset = r.u32()?;
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (offset & 0xff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        members.push(Member {
                            name: name(m_name)?,
                            type_id,
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    Type::Struct {
                        name: name(name_off)?,
                        size: size_or_type,
                        members,
                    }
                }
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    Type::Modifier {
                        target: size_or_type,
                    }
                }
                kind::VAR => {
                    r.skip(4)?; // linkage
                    Type::Var {
                        name: name(name_off)?,
                        target: size_or_type,
                    }
                }
                kind::DATASEC => {
                    let mut vars = Vec::with_capacity(vlen.min(1024));
                    for _ in 0..vlen {
                        vars.push(VarSecinfo {
                            type_id: r.u32()?,
                            offset: r.u32()?,
                            size: r.u32()?,
                        });
                    }
                    Type::Datasec {
                        name: name(name_off)?,
                        vars,
                    }
                }
                kind::FUNC_PROTO => {
                    r.skip(8 * vlen)?;
                    Type::Other
                }
                kind::FWD | kind::FUNC => Type::Other,
                kind::DECL_TAG => {
                    r.skip(4)?;
                    Type::Other
                }
                other => bail!("unknown BTF kind {other} (type {})", types.len()),
            };
            types.push(t);
        }
        Ok(Btf { types })
    }

    pub fn get(&self, id: u32) -> Result<&Type> {
        self.types
            .get(id as usize)
            .with_context(|| format!("BTF type id {id} does not exist"))
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    pub fn skip_mods(&self, mut id: u32) -> Result<u32> {
        for _ in 0..MAX_DEPTH {
            match self.get(id)? {
                Type::Modifier { target } => id = *target,
                _ => return Ok(id),
            }
        }
        bail!("BTF type chain at id {id} is too deep (a cycle?)")
    }

    /// Size in bytes of a type (libbpf's `btf__resolve_size`): pointers are
    /// 8 bytes on BPF, arrays multiply.
    pub fn resolve_size(&self, id: u32) -> Result<u64> {
        let mut id = id;
        let mut count: u64 = 1;
        for _ in 0..MAX_DEPTH {
            let size = match self.get(id)? {
                Type::Scalar { size } | Type::Struct { size, .. } => *size as u64,
                Type::Ptr { .. } => 8,
                Type::Array { elem, nelems } => {
                    count = count
                        .checked_mul(*nelems as u64)
                        .context("BTF array size overflows")?;
                    id = *elem;
                    continue;
                }
                Type::Modifier { target } | Type::Var { target, .. } => {
                    id = *target;
                    continue;
                }
                Type::Datasec { .. } | Type::Other => {
                    bail!("BTF type id {id} has no size")
                }
            };
            return count.checked_mul(size).context("BTF type size overflows");
        }
        bail!("BTF type chain at id {id} is too deep (a cycle?)")
    }

    /// The variables of the DATASEC named `name`, if there is one.
    pub fn datasec(&self, name: &str) -> Option<&[VarSecinfo]> {
        self.types.iter().find_map(|t| match t {
            Type::Datasec { name: n, vars } if n == name => Some(vars.as_slice()),
            _ => None,
        })
    }

    /// The id of the first struct or union named `name`.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| matches!(t, Type::Struct { name: n, .. } if n == name))
            .map(|i| i as u32)
    }

    /// The members of the struct named `name`, if there is one.
    pub fn struct_members(&self, name: &str) -> Option<&[Member]> {
        self.types.iter().find_map(|t| match t {
            Type::Struct {
                name: n, members, ..
            } if n == name => Some(members.as_slice()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from raw type records and a string table.
    fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&type_bytes);
        out.extend_from_slice(strings);
        out
    }

    const fn info(kind: u32, vlen: u32) -> u32 {
        (kind << 24) | vlen
    }

    #[test]
    fn sizes_follow_pointers_arrays_and_modifiers() {
        // 1: int (4), 2: int[256], 3: ptr -> 2, 4: const -> 2
        let types = [
            1,
            info(kind::INT, 0),
            4,
            32, //
            0,
            info(kind::ARRAY, 0),
            0,
            1,
            1,
            256, //
            0,
            info(kind::PTR, 0),
            2, //
            0,
            info(kind::CONST, 0),
            2,
        ];
        let btf = Btf::parse(&blob(&types, b"\0int\0")).unwrap();
        assert_eq!(btf.resolve_size(1).unwrap(), 4);
        assert_eq!(btf.resolve_size(2).unwrap(), 1024);
        assert_eq!(btf.resolve_size(3).unwrap(), 8);
        assert_eq!(btf.resolve_size(4).unwrap(), 1024);
        assert_eq!(btf.skip_mods(4).unwrap(), 2);
    }

    #[test]
    fn malformed_blobs_are_errors() {
        assert!(Btf::parse(&[0u8; 10]).is_err());
        let mut bad_magic = blob(&[], b"\0");
        bad_magic[0] = 0;
        assert!(Btf::parse(&bad_magic).is_err());
        // a struct claiming 3 members but holding none
        assert!(Btf::parse(&blob(&[0, info(kind::STRUCT, 3), 8], b"\0")).is_err());
        // an unknown kind
        assert!(Btf::parse(&blob(&[0, info(30, 0), 0], b"\0")).is_err());
        // a name offset past the string table
        assert!(Btf::parse(&blob(&[99, info(kind::VAR, 0), 0, 0], b"\0")).is_err());
        // a typedef cycle is reported, not followed forever
        let cyc = Btf::parse(&blob(&[0, info(kind::TYPEDEF, 0), 1], b"\0")).unwrap();
        assert!(cyc.resolve_size(1).is_err());
        assert!(cyc.skip_mods(1).is_err());
    }
}
