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

use crate::error::BtfError;

const MAGIC: u16 = 0xeb9f;
/// `sizeof(struct btf_header)` in its first version; `hdr_len` may be more.
const HEADER_SIZE: usize = 24;
/// Nesting depth after which a type chain is declared malformed (a cycle).
const MAX_DEPTH: usize = 32;

/// `BTF_KIND_*`.
pub(crate) mod kind {
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

/// The type section: a little-endian cursor over its records that reports
/// truncation instead of panicking.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let b = self
            .pos
            .checked_add(4)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or(BtfError::TypesTruncated)?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn skip(&mut self, n: usize) -> Result<(), BtfError> {
        self.pos = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or(BtfError::TypesTruncated)?;
        Ok(())
    }

    /// One record: `struct btf_type`, then what its kind appends (`vlen`
    /// members, enumerators, parameters or variables).
    fn read_type(&mut self, strings: &Strings, id: usize) -> Result<Type, BtfError> {
        let name_off = self.u32()?;
        let info = self.u32()?;
        let size_or_type = self.u32()?;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let scalar = Type::Scalar { size: size_or_type };
        Ok(match (info >> 24) & 0x1f {
            kind::INT => {
                self.skip(4)?;
                scalar
            }
            kind::FLOAT => scalar,
            kind::ENUM => {
                self.skip(8 * vlen)?;
                scalar
            }
            kind::ENUM64 => {
                self.skip(12 * vlen)?;
                scalar
            }
            kind::PTR => Type::Ptr {
                target: size_or_type,
            },
            kind::ARRAY => {
                let elem = self.u32()?;
                let _index_type = self.u32()?;
                let nelems = self.u32()?;
                Type::Array { elem, nelems }
            }
            kind::STRUCT | kind::UNION => Type::Struct {
                name: strings.name(name_off)?,
                size: size_or_type,
                members: self.members(strings, vlen, kind_flag)?,
            },
            kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                Type::Modifier {
                    target: size_or_type,
                }
            }
            kind::VAR => {
                self.skip(4)?; // linkage
                Type::Var {
                    name: strings.name(name_off)?,
                    target: size_or_type,
                }
            }
            kind::DATASEC => Type::Datasec {
                name: strings.name(name_off)?,
                vars: self.secinfos(vlen)?,
            },
            kind::FUNC_PROTO => {
                self.skip(8 * vlen)?;
                Type::Other
            }
            kind::FWD | kind::FUNC => Type::Other,
            kind::DECL_TAG => {
                self.skip(4)?;
                Type::Other
            }
            kind => return Err(BtfError::UnknownKind { kind, id }),
        })
    }

    /// `struct btf_member` x `vlen`; with the kind flag, the offset's top
    /// 8 bits are a bitfield's width.
    fn members(
        &mut self,
        strings: &Strings,
        vlen: usize,
        kind_flag: bool,
    ) -> Result<Vec<Member>, BtfError> {
        let mut members = Vec::with_capacity(vlen.min(1024));
        for _ in 0..vlen {
            let name = strings.name(self.u32()?)?;
            let type_id = self.u32()?;
            let offset = self.u32()?;
            let (bit_offset, bitfield_size) = if kind_flag {
                (offset & 0xff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            members.push(Member {
                name,
                type_id,
                bit_offset,
                bitfield_size,
            });
        }
        Ok(members)
    }

    /// `struct btf_var_secinfo` x `vlen`.
    fn secinfos(&mut self, vlen: usize) -> Result<Vec<VarSecinfo>, BtfError> {
        let mut vars = Vec::with_capacity(vlen.min(1024));
        for _ in 0..vlen {
            vars.push(VarSecinfo {
                type_id: self.u32()?,
                offset: self.u32()?,
                size: self.u32()?,
            });
        }
        Ok(vars)
    }
}

/// The string section: NUL-terminated names, by offset.
struct Strings<'a>(&'a [u8]);

impl Strings<'_> {
    fn name(&self, offset: u32) -> Result<String, BtfError> {
        let rest = self
            .0
            .get(offset as usize..)
            .ok_or(BtfError::NameOutside { offset })?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(BtfError::NameNotTerminated { offset })?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

/// Checks `struct btf_header` and returns the type and string sections.
fn split(data: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    let header = data
        .get(..HEADER_SIZE)
        .ok_or(BtfError::HeaderTruncated { size: data.len() })?;
    let magic = u16::from_le_bytes([header[0], header[1]]);
    if magic != MAGIC {
        return Err(BtfError::Magic { magic });
    }
    if header[2] != 1 {
        return Err(BtfError::Version { version: header[2] });
    }
    // hdr_len, type_off, type_len, str_off, str_len
    let field = |i: usize| {
        let b = &header[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    // After hdr_len, not after 24 bytes: newer headers append fields
    // (e.g. layout_off).
    let part = |off: usize, len: usize, part: &'static str| {
        field(1)
            .checked_add(off)
            .and_then(|start| Some((start, start.checked_add(len)?)))
            .and_then(|(start, end)| data.get(start..end))
            .ok_or(BtfError::OutsideBlob { part })
    };
    Ok((
        part(field(2), field(3), "type")?,
        part(field(4), field(5), "string")?,
    ))
}

impl Btf {
    /// Parses a BTF blob (an object's `.BTF` section, or a kernel's
    /// `/sys/kernel/btf/vmlinux`).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let (types_data, strings) = split(data)?;
        let strings = Strings(strings);
        let mut reader = Reader {
            data: types_data,
            pos: 0,
        };
        let mut types = vec![Type::Other]; // id 0: void
        while reader.pos < types_data.len() {
            types.push(reader.read_type(&strings, types.len())?);
        }
        Ok(Btf { types })
    }

    pub fn get(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::NoSuchType { id })
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    pub fn skip_mods(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            match self.get(id)? {
                Type::Modifier { target } => id = *target,
                _ => return Ok(id),
            }
        }
        Err(BtfError::TooDeep { id })
    }

    /// Size in bytes of a type (libbpf's `btf__resolve_size`): pointers are
    /// 8 bytes on BPF, arrays multiply.
    pub fn resolve_size(&self, id: u32) -> Result<u64, BtfError> {
        let mut id = id;
        let mut count: u64 = 1;
        for _ in 0..MAX_DEPTH {
            let size = match self.get(id)? {
                Type::Scalar { size } | Type::Struct { size, .. } => *size as u64,
                Type::Ptr { .. } => 8,
                Type::Array { elem, nelems } => {
                    count = count
                        .checked_mul(*nelems as u64)
                        .ok_or(BtfError::Overflow { id })?;
                    id = *elem;
                    continue;
                }
                Type::Modifier { target } | Type::Var { target, .. } => {
                    id = *target;
                    continue;
                }
                Type::Datasec { .. } | Type::Other => return Err(BtfError::NoSize { id }),
            };
            return count.checked_mul(size).ok_or(BtfError::Overflow { id });
        }
        Err(BtfError::TooDeep { id })
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
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob from raw type records and a string table.
    pub(crate) fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
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

    pub(crate) const fn info(kind: u32, vlen: u32) -> u32 {
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
        let parse = |types: &[u32], strings: &[u8]| Btf::parse(&blob(types, strings)).unwrap_err();
        assert_eq!(
            Btf::parse(&[0u8; 10]).unwrap_err(),
            BtfError::HeaderTruncated { size: 10 }
        );
        let mut bad_magic = blob(&[], b"\0");
        bad_magic[0] = 0;
        assert!(matches!(
            Btf::parse(&bad_magic),
            Err(BtfError::Magic { magic: 0xeb00 })
        ));
        let mut past_end = blob(&[], b"\0");
        past_end[20] = 9; // str_len
        assert_eq!(
            Btf::parse(&past_end).unwrap_err(),
            BtfError::OutsideBlob { part: "string" }
        );
        // a struct claiming 3 members but holding none
        assert_eq!(
            parse(&[0, info(kind::STRUCT, 3), 8], b"\0"),
            BtfError::TypesTruncated
        );
        assert_eq!(
            parse(&[0, info(30, 0), 0], b"\0"),
            BtfError::UnknownKind { kind: 30, id: 1 }
        );
        assert_eq!(
            parse(&[99, info(kind::VAR, 0), 0, 0], b"\0"),
            BtfError::NameOutside { offset: 99 }
        );
        assert_eq!(
            parse(&[1, info(kind::VAR, 0), 0, 0], b"\0int"),
            BtfError::NameNotTerminated { offset: 1 }
        );
        // a typedef cycle is reported, not followed forever
        let cyc = Btf::parse(&blob(&[0, info(kind::TYPEDEF, 0), 1], b"\0")).unwrap();
        assert_eq!(cyc.resolve_size(1), Err(BtfError::TooDeep { id: 1 }));
        assert_eq!(cyc.skip_mods(1), Err(BtfError::TooDeep { id: 1 }));
        assert_eq!(cyc.get(2), Err(BtfError::NoSuchType { id: 2 }));
        assert_eq!(cyc.resolve_size(0), Err(BtfError::NoSize { id: 0 }));
    }
}
