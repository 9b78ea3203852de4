//! Kernel struct fields for the programs: where each one sits in a kernel,
//! read from that kernel's BTF (the loader reads the running kernel's).
//!
//! The sk_msg and sock_ops programs read a few fields of the kernel's
//! `struct sock` (how many bytes wait to be read, the socket buffer sizes)
//! through the pointer `bpf_skc_to_tcp_sock()` returns. Those fields sit at
//! a different offset in every kernel build, so the object cannot know them.
//! libbpf solves this with CO-RE: clang records each field access in
//! `.BTF.ext`, and libbpf rewrites the instruction's offset at load time.
//! rawload does the same with less machinery: the program declares one
//! `.rodata` constant per field, named after the field's path,
//!
//! ```c
//! const volatile struct kfield kfield_sock__sk_backlog__rmem_alloc = { .width = 4 };
//! ```
//!
//! and the loader writes the field's offset (and, for a bitfield, its shift
//! and width) into it before loading. `.rodata` is frozen, so the verifier
//! folds the offset into the load like any constant and checks the access
//! against the kernel's BTF. `width` is the size of the load the program
//! does; a field that does not fit it is an error here, not a verifier
//! rejection.

use crate::btf::{Btf, Member, Type};
use crate::error::{BtfError, Error, KFieldGlobalProblem, KFieldProblem, Result};

/// Globals with this prefix are kernel fields.
pub const PREFIX: &str = "kfield_";
/// Size of `struct kfield` in bpf-src/rawload.bpf.c.
pub const SIZE: usize = 8;

/// One `struct kfield`: what the program needs to read the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KField {
    /// Bytes from the start of the struct to the first byte loaded.
    pub offset: u32,
    /// Bytes loaded (1 or 4), as the program declared it.
    pub width: u8,
    /// The field's first bit within the loaded value.
    pub shift: u8,
    /// The field's width in bits.
    pub bits: u8,
}

impl KField {
    /// The declared load width, from the global's initial bytes.
    pub fn declared_width(init: &[u8]) -> Result<u8> {
        if init.len() != SIZE {
            return Err(Error::KFieldGlobal(KFieldGlobalProblem::Size {
                size: init.len(),
                expected: SIZE,
            }));
        }
        match init[4] {
            w @ (1 | 4) => Ok(w),
            width => Err(Error::KFieldGlobal(KFieldGlobalProblem::Width { width })),
        }
    }

    /// The bytes of `struct kfield` (native byte order, as the program reads it).
    pub fn to_bytes(self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        b[..4].copy_from_slice(&self.offset.to_ne_bytes());
        b[4] = self.width;
        b[5] = self.shift;
        b[6] = self.bits;
        b
    }
}

/// Splits a global's name into the struct and the member path:
/// `kfield_sock__sk_backlog__rmem_alloc` -> ("sock", ["sk_backlog", "rmem_alloc"]).
pub fn parse_name(global: &str) -> Result<(&str, Vec<&str>)> {
    let bad = || {
        Error::KFieldGlobal(KFieldGlobalProblem::Name {
            global: global.to_string(),
        })
    };
    let mut parts = global.strip_prefix(PREFIX).ok_or_else(bad)?.split("__");
    let strukt = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
    let path: Vec<&str> = parts.collect();
    if path.is_empty() || path.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    Ok((strukt, path))
}

/// Where `strukt.path` is in `btf`, read with a `width`-byte load.
pub fn resolve(btf: &Btf, strukt: &str, path: &[&str], width: u8) -> Result<KField> {
    locate(btf, strukt, path, width).map_err(|problem| Error::KernelField {
        strukt: strukt.to_string(),
        path: path.iter().map(|p| p.to_string()).collect(),
        problem,
    })
}

fn locate(btf: &Btf, strukt: &str, path: &[&str], width: u8) -> Result<KField, KFieldProblem> {
    let mut id = btf.struct_id(strukt).ok_or(KFieldProblem::NoStruct)?;
    let mut bit: u32 = 0;
    let mut bitfield = 0;
    for name in path {
        let (member_bit, member) =
            find_member(btf, id, name)?.ok_or_else(|| KFieldProblem::NoMember {
                member: name.to_string(),
            })?;
        bit = bit
            .checked_add(member_bit)
            .ok_or(KFieldProblem::Btf(BtfError::Overflow { id }))?;
        bitfield = member.bitfield_size;
        id = btf.skip_mods(member.type_id)?;
    }
    let (shift, bits) = if bitfield > 0 {
        (bit % 8, bitfield)
    } else {
        if bit % 8 != 0 {
            return Err(KFieldProblem::Unaligned);
        }
        let size = btf.resolve_size(id)?;
        if size != u64::from(width) {
            return Err(KFieldProblem::Size { size, width });
        }
        (0, size as u32 * 8)
    };
    if shift + bits > u32::from(width) * 8 {
        return Err(KFieldProblem::DoesNotFit { shift, bits, width });
    }
    Ok(KField {
        offset: bit / 8,
        width,
        shift: shift as u8,
        bits: bits as u8,
    })
}

/// The member `name` of the struct or union `id`, looking inside anonymous
/// members too (kernels move fields into anonymous unions): its bit offset
/// from the start of `id`, and the member. A type that is not a struct or
/// union has no members (an unnamed bitfield's padding is an int).
fn find_member<'a>(
    btf: &'a Btf,
    id: u32,
    name: &str,
) -> Result<Option<(u32, &'a Member)>, BtfError> {
    find_member_within(btf, id, name, MAX_ANONYMOUS_NESTING)
}

/// Anonymous structs and unions inside one another deeper than any kernel
/// nests them: malformed BTF (a cycle) rather than recursion without end.
const MAX_ANONYMOUS_NESTING: usize = 32;

fn find_member_within<'a>(
    btf: &'a Btf,
    id: u32,
    name: &str,
    depth: usize,
) -> Result<Option<(u32, &'a Member)>, BtfError> {
    let Type::Struct { members, .. } = btf.get(id)? else {
        return Ok(None);
    };
    let below = depth.checked_sub(1).ok_or(BtfError::TooDeep { id })?;
    for m in members {
        if m.name == name {
            return Ok(Some((m.bit_offset, m)));
        }
        if m.name.is_empty() {
            let inner = btf.skip_mods(m.type_id)?;
            if let Some((bit, found)) = find_member_within(btf, inner, name, below)? {
                let bit = m
                    .bit_offset
                    .checked_add(bit)
                    .ok_or(BtfError::Overflow { id })?;
                return Ok(Some((bit, found)));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_paths() {
        assert_eq!(
            parse_name("kfield_sock__sk_backlog__rmem_alloc").unwrap(),
            ("sock", vec!["sk_backlog", "rmem_alloc"])
        );
        assert_eq!(
            parse_name("kfield_sock__sk_rcvbuf").unwrap(),
            ("sock", vec!["sk_rcvbuf"])
        );
        for bad in ["kfield_sock", "kfield___x", "kfield_sock__", "cfg_x"] {
            assert_eq!(
                parse_name(bad),
                Err(Error::KFieldGlobal(KFieldGlobalProblem::Name {
                    global: bad.to_string()
                }))
            );
        }
    }

    #[test]
    fn widths_come_from_the_initial_bytes() {
        let mut init = [0u8; SIZE];
        init[4] = 4;
        assert_eq!(KField::declared_width(&init).unwrap(), 4);
        init[4] = 2;
        assert_eq!(
            KField::declared_width(&init),
            Err(Error::KFieldGlobal(KFieldGlobalProblem::Width { width: 2 }))
        );
        assert!(matches!(
            KField::declared_width(&[0u8; 4]),
            Err(Error::KFieldGlobal(KFieldGlobalProblem::Size {
                size: 4,
                ..
            }))
        ));
    }

    #[test]
    fn an_anonymous_member_that_contains_itself_is_an_error() {
        use crate::btf::kind;
        use crate::btf::tests::{blob, info};
        // 1: struct s { struct s /* anonymous member */; } (a cycle)
        let types = [1, info(kind::STRUCT, 1), 4, 0, 1, 0];
        let btf = Btf::parse(&blob(&types, b"\0s\0")).unwrap();
        assert!(matches!(
            resolve(&btf, "s", &["x"], 4),
            Err(Error::KernelField {
                problem: KFieldProblem::Btf(BtfError::TooDeep { id: 1 }),
                ..
            })
        ));
    }
}
