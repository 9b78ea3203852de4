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
use crate::obj::{MapOrigin, MapSpec, Object};

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
        map_owners: Vec::new(),
        program_owners: Vec::new(),
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

/// The combined object as it grows, with the object that brought each of
/// its maps and programs (for messages). Each object is checked against
/// the set so far.
struct Builder {
    object: Object,
    map_owners: Vec<String>,
    program_owners: Vec<usize>,
    inputs: Vec<Input>,
}

impl Builder {
    fn add(&mut self, name: String, mut object: Object) -> Result<()> {
        self.agree(&name, &object)?;
        let mut maps = Vec::with_capacity(object.maps.len());
        for spec in std::mem::take(&mut object.maps) {
            maps.push(self.add_map(&name, spec)?);
        }
        for program in &mut object.programs {
            for r in &mut program.map_refs {
                r.map = maps[r.map];
            }
            self.program_owners.push(self.inputs.len());
        }
        self.object.programs.append(&mut object.programs);
        self.object.sections.append(&mut object.sections);
        self.inputs.push(Input { name, maps });
        Ok(())
    }

    /// What `object` must agree on with the set besides its maps: the
    /// license, one program per type, globals of distinct names.
    fn agree(&self, name: &str, object: &Object) -> Result<()> {
        let error = |first: &str, problem| Error::Combine {
            first: first.to_string(),
            second: name.to_string(),
            problem,
        };
        if object.license != self.object.license {
            return Err(error(
                &self.inputs[0].name,
                CombineProblem::License {
                    first: self.object.license.to_string_lossy().into_owned(),
                    second: object.license.to_string_lossy().into_owned(),
                },
            ));
        }
        for p in &object.programs {
            let prog_type = p.kind.prog_type;
            let earlier = self
                .object
                .programs
                .iter()
                .position(|q| q.kind.prog_type == prog_type);
            if let Some(i) = earlier {
                let owner = &self.inputs[self.program_owners[i]].name;
                return Err(error(owner, CombineProblem::Program { prog_type }));
            }
        }
        for g in object.globals() {
            if let Some((map, _)) = self.object.global(&g.name) {
                let problem = CombineProblem::Global {
                    name: g.name.clone(),
                };
                return Err(error(&self.map_owners[map], problem));
            }
        }
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
            self.map_owners.push(object.to_string());
            maps.push(spec);
            return Ok(maps.len() - 1);
        };
        let error = |problem| Error::Combine {
            first: self.map_owners[i].clone(),
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

/// `seed_redir` of `seed_redir.o` (or of `seed_redir.bpf.o`).
fn stem(object: &str) -> &str {
    object.split('.').next().unwrap_or(object)
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
