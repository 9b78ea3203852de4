//! `rawload explain [OBJECT]`: what the loader sees in an eBPF object and
//! what it would do with it, without touching the kernel (no root needed).
//!
//! The report follows the pipeline: the ELF sections and their roles, the
//! maps (and which section defined them), each program after call linking,
//! disassembled, with every map reference shown as in the object and as
//! patched (example fds stand in for the real ones), and the attach steps.
//! Calls are shown already linked, with the offset the linker computed; in
//! the object they read `call -1` plus an `R_BPF_64_32` relocation.
//!
//! Several objects (the seeds' two) are shown one after the other, their
//! references patched with the example fds of the set they form, then how
//! they combine: which maps are one map shared by name, and where each
//! object's references to it land.

use std::fmt::Write as _;

use anyhow::Result;

use rawload_loader::pipeline::{self, ObjectSource};
use rawload_loader::sys::BPF_F_RDONLY_PROG;
use rawload_obj::combine::{self, Combined};
use rawload_obj::disasm;
use rawload_obj::insn::{INSN_SIZE, Insn};
use rawload_obj::obj::{MapOrigin, MapRef, Object, ProgramSpec, RefKind};
use rawload_obj::reloc;
use rawload_obj::uapi::ProgType;

/// The example fd of map `i` in the listing: real fds exist only at load time.
const EXAMPLE_FD_BASE: i32 = 100;

fn origin_text(origin: &MapOrigin) -> String {
    match origin {
        MapOrigin::Legacy => "legacy `maps` section (struct bpf_map_def)".into(),
        MapOrigin::Btf => "`.maps`, described in .BTF".into(),
        MapOrigin::Data { section, .. } => format!("global data section {section}"),
    }
}

/// The example fd of the set's map `i`.
fn example_fd(i: usize) -> i32 {
    EXAMPLE_FD_BASE + i as i32
}

/// Writes the whole report: each object, how they combine (when there are
/// several), and the attach steps for the set.
pub fn explain(sources: &[ObjectSource]) -> Result<String> {
    let set = combine::combine(pipeline::read_objects(sources)?)?;
    let mut o = String::new();
    let mut objects = Vec::with_capacity(sources.len());
    for (source, input) in sources.iter().zip(&set.inputs) {
        // Read again: each object as it is, before the set renumbered it.
        let bytes = source.bytes()?;
        let obj = source.parse()?;
        let _ = writeln!(o, "rawload explain: {source}, {} bytes\n", bytes.len());
        sections_text(&mut o, &obj);
        maps_text(&mut o, &obj);
        let fds: Vec<i32> = input.maps.iter().map(|&i| example_fd(i)).collect();
        for p in &obj.programs {
            program_text(&mut o, &obj, p, &reloc::apply(p, &fds)?);
        }
        o.push('\n');
        objects.push(obj);
    }
    if objects.len() > 1 {
        combined_text(&mut o, &objects, &set);
    }
    let _ = writeln!(o, "{}", next_steps(&set.object));
    Ok(o)
}

/// The set the objects form: its maps, each with the objects that declare
/// it, then every map reference of every object and the map it lands on.
fn combined_text(o: &mut String, objects: &[Object], set: &Combined) {
    let _ = writeln!(
        o,
        "the {} objects as one set: a map declared by name in several is created once and shared\n\
         (bpftool: `prog load ... pinmaps DIR`, then `map name NAME pinned DIR/NAME`); global data stays per object",
        objects.len()
    );
    for (i, m) in set.object.maps.iter().enumerate() {
        let by = set.declared_by(i);
        let how = match by.as_slice() {
            [one] => format!("{one} only"),
            many => format!("shared by name: {}", many.join(", ")),
        };
        let _ = writeln!(o, "  #{i} {:<16} fd {}  {how}", m.name, example_fd(i));
    }
    let _ = writeln!(o, "relocations across the objects:");
    for (obj, input) in objects.iter().zip(&set.inputs) {
        for p in &obj.programs {
            for r in &p.map_refs {
                let to = input.maps[r.map];
                let _ = writeln!(
                    o,
                    "  {} {} insn {:>3}: {} (its map #{}) -> set map #{to} {}, fd {}",
                    input.name,
                    p.name,
                    r.insn,
                    r.symbol,
                    r.map,
                    set.object.maps[to].name,
                    example_fd(to)
                );
            }
        }
    }
    o.push('\n');
}

/// Every ELF section and its role, then the license.
fn sections_text(o: &mut String, obj: &Object) {
    let _ = writeln!(
        o,
        "ELF sections (what clang wrote, and what the loader makes of each)"
    );
    for s in &obj.sections {
        let _ = writeln!(o, "  {:<18} {:>6} B  {}", s.name, s.size, s.role.describe());
    }
    let _ = writeln!(
        o,
        "license \"{}\" (GPL-only helpers need a GPL-compatible one), kern_version {}\n",
        obj.license.to_string_lossy(),
        obj.kern_version
    );
}

/// Every map: its shape, where its definition came from, its globals.
fn maps_text(o: &mut String, obj: &Object) {
    let _ = writeln!(
        o,
        "maps ({}), created with BPF_MAP_CREATE before any program loads",
        obj.maps.len()
    );
    for (i, m) in obj.maps.iter().enumerate() {
        let flags = if m.flags & BPF_F_RDONLY_PROG != 0 {
            ", BPF_F_RDONLY_PROG (frozen after filling)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "  #{i} {:<16} {:<12} key {:>2} B, value {:>5} B, {:>5} entries{flags}\n      from {}",
            m.name,
            m.map_type.name(),
            m.key_size,
            m.value_size,
            m.max_entries,
            origin_text(&m.origin)
        );
        for g in &m.globals {
            let _ = writeln!(
                o,
                "      global {} at offset {} ({} B)",
                g.name, g.offset, g.size
            );
        }
    }
}

/// One program, disassembled, each relocated instruction shown before and
/// after patching, each bpf-to-bpf call with its target.
fn program_text(o: &mut String, obj: &Object, p: &ProgramSpec, patched: &[Insn]) {
    let _ = writeln!(
        o,
        "\nprogram {} (section `{}`: {}, attach type {})",
        p.name,
        p.section,
        p.kind.prog_type.name(),
        p.kind.expected_attach_type.0
    );
    let _ = writeln!(
        o,
        "  {} instructions after linking: {}",
        p.insns.len(),
        p.layout
            .iter()
            .map(|f| format!("{} [{}..{})", f.name, f.start, f.start + f.len))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        o,
        "  {} map references; shown as in the object, then as patched (map #i gets example fd {EXAMPLE_FD_BASE}+i)",
        p.map_refs.len()
    );
    for line in disasm::disassemble(&p.insns) {
        if let Some(f) = p.layout.iter().find(|f| f.start == line.index) {
            let _ = writeln!(o, "\n  <{}>:", f.name);
        }
        let _ = writeln!(o, "  {line}");
        if let Some(r) = p.map_refs.iter().find(|r| r.insn == line.index) {
            map_ref_text(o, obj, r, patched);
        } else if p.insns[line.index].is_pseudo_call() {
            call_text(o, p, line.index);
        }
    }
}

/// A map reference as patched, and what it refers to.
fn map_ref_text(o: &mut String, obj: &Object, r: &MapRef, patched: &[Insn]) {
    let how = match r.kind {
        RefKind::Map => "BPF_PSEUDO_MAP_FD: the map itself".to_string(),
        RefKind::Value { offset } => format!("BPF_PSEUDO_MAP_VALUE: {offset} bytes into its value"),
    };
    let after = disasm::Line {
        index: r.insn,
        bytes: patched[r.insn..r.insn + 2]
            .iter()
            .flat_map(|i| i.to_bytes())
            .collect(),
        text: disasm::insn_text(patched, r.insn),
    };
    let _ = writeln!(
        o,
        "  {after}\n{:>12}^ {} -> map #{} {} ({how})",
        "", r.symbol, r.map, obj.maps[r.map].name
    );
}

/// Where a bpf-to-bpf call at `index` goes.
fn call_text(o: &mut String, p: &ProgramSpec, index: usize) {
    let target = (index as i64 + 1 + p.insns[index].imm as i64) as usize;
    let callee = p
        .layout
        .iter()
        .find(|f| f.start == target)
        .map_or("?", |f| f.name.as_str());
    let _ = writeln!(
        o,
        "{:>12}^ bpf-to-bpf call to {callee} (imm = {target} - {index} - 1)",
        ""
    );
}

/// The attach sequence for this object.
fn next_steps(obj: &Object) -> String {
    let sock_ops = obj.program(ProgType::SOCK_OPS).map(|p| p.name.clone());
    let sk_msg = obj.program(ProgType::SK_MSG).map(|p| p.name.clone());
    let (Ok(sock_ops), Ok(sk_msg)) = (sock_ops, sk_msg) else {
        return "rawload attach needs exactly one sockops and one sk_msg program; this object cannot be attached".into();
    };
    let socket_map = obj
        .program(ProgType::SK_MSG)
        .ok()
        .and_then(|p| pipeline::socket_map(obj, p).ok())
        .map_or("?".to_string(), |i| obj.maps[i].name.clone());
    let sk_skb = match obj.optional_program(ProgType::SK_SKB) {
        Ok(Some(p)) => format!(
            ", and {} (BPF_SK_SKB_STREAM_VERDICT) where step 1 found FIONREAD blind to TCP bytes",
            p.name
        ),
        _ => String::new(),
    };
    let insns: usize = obj.programs.iter().map(|p| p.insns.len()).sum();
    let programs: Vec<&str> = obj.programs.iter().map(|p| p.name.as_str()).collect();
    format!(
        "what `rawload attach` does with it (see `rawload attach --explain`):\n\
         \x20 1. probe the kernel: bpf_get_netns_cookie, struct sock's field offsets in /sys/kernel/btf/vmlinux,\n\
         \x20    whether redirected bytes count in sk_rmem_alloc, whether FIONREAD counts TCP bytes on a socket\n\
         \x20    in a SOCKHASH; the answers become .rodata constants, the last one decides step 4\n\
         \x20 2. BPF_MAP_CREATE x{maps}; fill global data; BPF_MAP_FREEZE .rodata; fill the policy maps\n\
         \x20    (this host's addresses, the port policy, and which network namespace owns which address)\n\
         \x20 3. patch the map fds into the ld_imm64 instructions above; BPF_PROG_LOAD {} ({insns} instructions, {bytes} bytes)\n\
         \x20 4. BPF_PROG_ATTACH {sk_msg} to {socket_map} (BPF_SK_MSG_VERDICT){sk_skb}\n\
         \x20 5. BPF_OBJ_PIN the attach record, the programs and every map under the pin directory\n\
         \x20 6. BPF_PROG_ATTACH {sock_ops} to the cgroup (BPF_CGROUP_SOCK_OPS, BPF_F_ALLOW_MULTI)",
        programs.join(", "),
        maps = obj.maps.len(),
        bytes = insns * INSN_SIZE,
    )
}
