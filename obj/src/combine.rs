//! Several objects loaded as one set, the way the seeds load theirs with
//! bpftool: `prog load bpf_sockops.o ... pinmaps DIR` creates the sock_ops
//! object's maps and pins them, then `prog load bpf_redir.o ... map name
//! sock_ops_map pinned DIR/sock_ops_map` makes the sk_msg object use that
//! same map instead of creating its own. [`combine`] does it before any
//! kernel object exists: every object declares the maps it uses, a map
//! declared by name in two objects becomes one map, and each object's
//! `ld_imm64` map references are renumbered to point at it.
//!
//! The result is one [`Object`], so everything after it (configuration,
//! `BPF_MAP_CREATE`, relocation, pins) works as for a single object. What
//! the objects must agree on is checked here, so a mismatch is refused
//! before the kernel is asked for anything:
//!
//! - a shared map: the fields of `struct bpf_map_def` (type, key and value
//!   size, max_entries, map_flags); a legacy `maps` definition and a BTF
//!   `.maps` one of the same shape are the same map;
//! - global data (`.rodata`, `.data`, `.bss`) is never shared: each
//!   object's becomes its own map, named after the object
//!   (`seed_redir.bss`), as libbpf names them (`<object>.bss`);
//! - global variables are set by name, so a name may be in one object only;
//! - one license (`BPF_PROG_LOAD` takes each program's, and the set has
//!   one), and one program of each type.
//!
//! `kern_version` is the first object's: kernels check it for kprobes
//! only, never for the program types rawload loads. The objects' BTF is
//! not merged: the combined object has none, each object was checked on
//! its own.

use crate::error::{CombineProblem, Error, Result};
use crate::obj::{MapOrigin, MapSpec, Object, PROGRAM_KINDS};

/// The objects as one, and where each object's maps went.
#[derive(Debug, Clone)]
pub struct Combined {
    pub object: Object,
    pub inputs: Vec<Input>,
}

/// One object of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// How the user names it (its file name).
    pub name: String,
    /// For each of its maps, the index of that map in the combined object.
    pub maps: Vec<usize>,
}

impl Combined {
    /// The objects that declare the combined map `map` (two or more: shared).
    pub fn declared_by(&self, map: usize) -> Vec<&str> {
        self.inputs
            .iter()
            .filter(|i| i.maps.contains(&map))
            .map(|i| i.name.as_str())
            .collect()
    }
}

/// Combines `(name, object)` pairs, in order. One object comes back as it
/// is. Fails on the first disagreement, naming both objects.
pub fn combine(mut objects: Vec<(String, Object)>) -> Result<Combined> {
    if objects.len() == 1 {
        let (name, object) = objects.remove(0);
        let maps = (0..object.maps.len()).collect();
        return Ok(Combined {
            object,
            inputs: vec![Input { name, maps }],
        });
    }
    agree(&objects)?;
    let first = &objects[0].1;
    let mut set = Builder {
        object: Object {
            license: first.license.clone(),
            kern_version: first.kern_version,
            maps: Vec::new(),
            programs: Vec::new(),
            sections: Vec::new(),
            btf: None,
        },
        owners: Vec::new(),
        inputs: Vec::new(),
    };
    for (name, object) in objects {
        set.add(name, object)?;
    }
    Ok(Combined {
        object: set.object,
        inputs: set.inputs,
    })
}

/// What every pair of objects must agree on besides their maps.
fn agree(objects: &[(String, Object)]) -> Result<()> {
    for (i, (a, x)) in objects.iter().enumerate() {
        for (b, y) in &objects[i + 1..] {
            let error = |problem| Error::Combine {
                first: a.clone(),
                second: b.clone(),
                problem,
            };
            if x.license != y.license {
                return Err(error(CombineProblem::License {
                    first: x.license.to_string_lossy().into_owned(),
                    second: y.license.to_string_lossy().into_owned(),
                }));
            }
            if let Some(kind) = PROGRAM_KINDS.iter().find(|k| {
                let has = |o: &Object| o.programs.iter().any(|p| p.kind.prog_type == k.prog_type);
                has(x) && has(y)
            }) {
                return Err(error(CombineProblem::Program {
                    prog_type: kind.prog_type,
                }));
            }
            if let Some(g) = x.globals().find(|g| y.global(&g.name).is_some()) {
                return Err(error(CombineProblem::Global {
                    name: g.name.clone(),
                }));
            }
        }
    }
    Ok(())
}

/// The combined object as it grows, with the object that declared each of
/// its maps first (for messages).
struct Builder {
    object: Object,
    owners: Vec<String>,
    inputs: Vec<Input>,
}

impl Builder {
    fn add(&mut self, name: String, mut object: Object) -> Result<()> {
        let mut maps = Vec::with_capacity(object.maps.len());
        for spec in std::mem::take(&mut object.maps) {
            maps.push(self.add_map(&name, spec)?);
        }
        for program in &mut object.programs {
            for r in &mut program.map_refs {
                r.map = maps[r.map];
            }
        }
        self.object.programs.append(&mut object.programs);
        self.object.sections.append(&mut object.sections);
        self.inputs.push(Input { name, maps });
        Ok(())
    }

    /// The index of `spec` in the set: a map of the same name declared
    /// earlier (it must have the same shape), or a new one.
    fn add_map(&mut self, object: &str, mut spec: MapSpec) -> Result<usize> {
        let data = |m: &MapSpec| matches!(m.origin, MapOrigin::Data { .. });
        if data(&spec) {
            spec.name = format!("{}{}", stem(object), spec.name);
        }
        let maps = &mut self.object.maps;
        let Some(i) = maps.iter().position(|m| m.name == spec.name) else {
            self.owners.push(object.to_string());
            maps.push(spec);
            return Ok(maps.len() - 1);
        };
        let error = |problem| Error::Combine {
            first: self.owners[i].clone(),
            second: object.to_string(),
            problem,
        };
        if data(&spec) || data(&maps[i]) {
            return Err(error(CombineProblem::DataMap { map: spec.name }));
        }
        match differing_field(&maps[i], &spec) {
            Some((field, first, second)) => Err(error(CombineProblem::MapDiffers {
                map: spec.name,
                field,
                first,
                second,
            })),
            None => Ok(i),
        }
    }
}

/// `seed_redir` of `seed_redir.o` (or of `dir/seed_redir.bpf.o`).
fn stem(object: &str) -> &str {
    let file = object.rsplit('/').next().unwrap_or(object);
    file.split('.').next().unwrap_or(file)
}

/// The first `struct bpf_map_def` field in which two definitions differ:
/// its name and both values.
fn differing_field(a: &MapSpec, b: &MapSpec) -> Option<(&'static str, u32, u32)> {
    [
        ("type", a.map_type.0, b.map_type.0),
        ("key_size", a.key_size, b.key_size),
        ("value_size", a.value_size, b.value_size),
        ("max_entries", a.max_entries, b.max_entries),
        ("map_flags", a.flags, b.flags),
    ]
    .into_iter()
    .find(|(_, x, y)| x != y)
}
