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

use anyhow::{Context, Result, bail, ensure};

use crate::btf::{Btf, Type};

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
        ensure!(
            init.len() == SIZE,
            "a kfield global is {} bytes, expected {SIZE} (struct kfield)",
            init.len()
        );
        match init[4] {
            w @ (1 | 4) => Ok(w),
            w => bail!("a kfield global declares a {w}-byte load; rawload loads 1 or 4 bytes"),
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
    let rest = global
        .strip_prefix(PREFIX)
        .with_context(|| format!("'{global}' is not a kfield global"))?;
    let mut parts = rest.split("__");
    let strukt = parts.next().filter(|s| !s.is_empty());
    let path: Vec<&str> = parts.collect();
    match strukt {
        Some(s) if !path.is_empty() && path.iter().all(|p| !p.is_empty()) => Ok((s, path)),
        _ => bail!(
            "'{global}' does not name a field: expected kfield_<struct>__<member>[__<member>...]"
        ),
    }
}

/// Where `strukt.path` is in `btf`, read with a `width`-byte load.
pub fn resolve(btf: &Btf, strukt: &str, path: &[&str], width: u8) -> Result<KField> {
    let dotted = || format!("struct {strukt}.{}", path.join("."));
    let mut id = btf
        .struct_id(strukt)
        .with_context(|| format!("the kernel's BTF has no struct {strukt}"))?;
    let mut bit: u32 = 0;
    let mut bitfield = 0;
    for name in path {
        let (member_bit, member) = find_member(btf, id, name)?
            .with_context(|| format!("the kernel's {} has no member '{name}'", dotted()))?;
        bit = bit.checked_add(member_bit).context("BTF offset overflow")?;
        bitfield = member.bitfield_size;
        id = btf.skip_mods(member.type_id)?;
    }
    let (shift, bits) = if bitfield > 0 {
        (bit % 8, bitfield)
    } else {
        ensure!(bit % 8 == 0, "{} is not byte-aligned", dotted());
        let size = btf.resolve_size(id)?;
        ensure!(
            size == u64::from(width),
            "{} is {size} bytes; the program loads {width}",
            dotted()
        );
        (0, size as u32 * 8)
    };
    ensure!(
        shift + bits <= u32::from(width) * 8,
        "{} ({bits} bits at bit {shift}) does not fit a {width}-byte load",
        dotted()
    );
    Ok(KField {
        offset: bit / 8,
        width,
        shift: shift as u8,
        bits: bits as u8,
    })
}

/// The member `name` of the struct or union `id`, looking inside anonymous
/// members too (kernels move fields into anonymous unions): its bit offset
/// from the start of `id`, and the member.
fn find_member<'a>(
    btf: &'a Btf,
    id: u32,
    name: &str,
) -> Result<Option<(u32, &'a crate::btf::Member)>> {
    let Type::Struct { members, .. } = btf.get(id)? else {
        bail!("BTF type {id} is not a struct or union");
    };
    for m in members {
        if m.name == name {
            return Ok(Some((m.bit_offset, m)));
        }
        if m.name.is_empty() {
            let inner = btf.skip_mods(m.type_id)?;
            if let Some((bit, found)) = find_member(btf, inner, name)? {
                return Ok(Some((m.bit_offset + bit, found)));
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
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn widths_come_from_the_initial_bytes() {
        let mut init = [0u8; SIZE];
        init[4] = 4;
        assert_eq!(KField::declared_width(&init).unwrap(), 4);
        init[4] = 2;
        assert!(KField::declared_width(&init).is_err());
        assert!(KField::declared_width(&[0u8; 4]).is_err());
    }
}
