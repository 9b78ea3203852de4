//! Relocation: turning functions with symbolic references into loadable
//! instruction arrays.
//!
//! Two steps, at two moments:
//!
//! - [`link`] (parse time, no kernel): a program is its own function plus
//!   every function it calls, directly or not, appended once each after it.
//!   Each bpf-to-bpf `call` gets `imm = callee_start - call_index - 1`.
//!   Only reachable functions are appended, since the verifier rejects
//!   unreachable instructions.
//! - [`apply`] (load time): every `ld_imm64` that refers to a map gets the
//!   map's file descriptor in `imm` and a `src_reg` saying how to read it:
//!   `BPF_PSEUDO_MAP_FD` (the map itself) or `BPF_PSEUDO_MAP_VALUE` (an
//!   address inside its value, for global variables; the offset goes into the
//!   second slot's `imm`). The kernel swaps the fd for a real pointer.

use std::os::fd::RawFd;

use crate::error::{Error, LinkProblem, Result};
use crate::insn::{INSN_SIZE, Insn, MAX_INSNS, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};
use crate::obj::{MapRef, Placement, ProgramSpec, RefKind};

/// A function found in an instruction section, before linking.
#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub section: String,
    pub section_index: usize,
    /// Byte offset of the function in its section.
    pub offset: u64,
    pub insns: Vec<Insn>,
    pub relocs: Vec<FnReloc>,
}

impl Function {
    pub fn byte_len(&self) -> u64 {
        (self.insns.len() * INSN_SIZE) as u64
    }
}

/// A reference recorded from a relocation, relative to its function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FnReloc {
    /// `insns[insn]` is an `ld_imm64` of map `map`.
    Map {
        insn: usize,
        map: usize,
        kind: RefKind,
        symbol: String,
    },
    /// `insns[insn]` calls function `callee` (an index into the function list).
    Call { insn: usize, callee: usize },
}

/// Links `functions[main]` with everything it calls.
pub fn link(
    functions: &[Function],
    main: usize,
) -> Result<(Vec<Insn>, Vec<MapRef>, Vec<Placement>)> {
    let link_error = |problem| Error::Link {
        program: functions[main].name.clone(),
        problem,
    };
    let mut insns = functions[main].insns.clone();
    // (function, start index in `insns`), in order of placement.
    let mut placed: Vec<(usize, usize)> = vec![(main, 0)];
    let mut map_refs = Vec::new();
    let mut next = 0;
    while let Some(&(f, start)) = placed.get(next) {
        next += 1;
        for reloc in &functions[f].relocs {
            match reloc {
                FnReloc::Map {
                    insn,
                    map,
                    kind,
                    symbol,
                } => map_refs.push(MapRef {
                    insn: start + insn,
                    map: *map,
                    kind: *kind,
                    symbol: symbol.clone(),
                }),
                FnReloc::Call { insn, callee } => {
                    let callee_start = match placed.iter().find(|(g, _)| g == callee) {
                        Some(&(_, s)) => s,
                        None => {
                            let s = insns.len();
                            insns.extend_from_slice(&functions[*callee].insns);
                            if insns.len() > MAX_INSNS {
                                return Err(link_error(LinkProblem::TooManyInsns));
                            }
                            placed.push((*callee, s));
                            s
                        }
                    };
                    let at = start + insn;
                    let delta = callee_start as i64 - at as i64 - 1;
                    insns[at].imm = i32::try_from(delta)
                        .map_err(|_| link_error(LinkProblem::CallTooFar { insn: at }))?;
                }
            }
        }
    }
    let layout = placed
        .iter()
        .map(|&(f, start)| Placement {
            name: functions[f].name.clone(),
            start,
            len: functions[f].insns.len(),
        })
        .collect();
    Ok((insns, map_refs, layout))
}

/// Returns the program's instructions with every map reference patched to
/// the descriptor in `map_fds` (indexed like `Object::maps`).
pub fn apply(prog: &ProgramSpec, map_fds: &[RawFd]) -> Result<Vec<Insn>> {
    let mut insns = prog.insns.clone();
    for r in &prog.map_refs {
        let Some(&fd) = map_fds.get(r.map) else {
            return Err(Error::MissingMapFd {
                program: prog.name.clone(),
                map: r.map,
                symbol: r.symbol.clone(),
            });
        };
        if r.insn + 1 >= insns.len() {
            return Err(Error::MapRefOutOfRange {
                program: prog.name.clone(),
                insn: r.insn,
            });
        }
        let (src, second_imm) = match r.kind {
            RefKind::Map => (PSEUDO_MAP_FD, 0),
            RefKind::Value { offset } => (PSEUDO_MAP_VALUE, offset as i32),
        };
        insns[r.insn].set_src(src);
        insns[r.insn].imm = fd;
        insns[r.insn + 1].imm = second_imm;
    }
    Ok(insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bpf-to-bpf call as clang leaves it, for a relocation to name the callee.
    fn call() -> Insn {
        Insn::pseudo_call(-1)
    }

    fn func(name: &str, insns: Vec<Insn>, relocs: Vec<FnReloc>) -> Function {
        Function {
            name: name.into(),
            section: ".text".into(),
            section_index: 1,
            offset: 0,
            insns,
            relocs,
        }
    }

    #[test]
    fn callees_are_appended_once_and_calls_point_at_them() {
        // main calls a twice and b once; a calls b.
        let functions = vec![
            func(
                "main",
                vec![call(), call(), call(), Insn::exit()],
                vec![
                    FnReloc::Call { insn: 0, callee: 1 },
                    FnReloc::Call { insn: 1, callee: 2 },
                    FnReloc::Call { insn: 2, callee: 1 },
                ],
            ),
            func(
                "a",
                vec![call(), Insn::exit()],
                vec![FnReloc::Call { insn: 0, callee: 2 }],
            ),
            func("b", vec![Insn::exit()], vec![]),
            func("unused", vec![Insn::exit()], vec![]),
        ];
        let (insns, _, layout) = link(&functions, 0).unwrap();
        let names: Vec<_> = layout.iter().map(|p| (p.name.as_str(), p.start)).collect();
        assert_eq!(names, [("main", 0), ("a", 4), ("b", 6)]);
        assert_eq!(insns.len(), 7);
        assert_eq!(insns[0].imm, 3); // 0 -> 4
        assert_eq!(insns[1].imm, 4); // 1 -> 6
        assert_eq!(insns[2].imm, 1); // 2 -> 4
        assert_eq!(insns[4].imm, 1); // a's call: 4 -> 6
    }

    #[test]
    fn programs_longer_than_the_kernel_allows_are_refused() {
        let functions = vec![
            func(
                "main",
                vec![call(), Insn::exit()],
                vec![FnReloc::Call { insn: 0, callee: 1 }],
            ),
            func("huge", vec![Insn::exit(); MAX_INSNS - 1], vec![]),
        ];
        assert_eq!(
            link(&functions, 0).unwrap_err(),
            Error::Link {
                program: "main".into(),
                problem: LinkProblem::TooManyInsns
            }
        );
    }

    #[test]
    fn map_references_get_fds() {
        let [ld, ld2] = Insn::ld_imm64(1, 0);
        let functions = vec![func(
            "main",
            vec![ld, ld2, ld, ld2, Insn::exit()],
            vec![
                FnReloc::Map {
                    insn: 0,
                    map: 0,
                    kind: RefKind::Map,
                    symbol: "m".into(),
                },
                FnReloc::Map {
                    insn: 2,
                    map: 1,
                    kind: RefKind::Value { offset: 12 },
                    symbol: ".rodata".into(),
                },
            ],
        )];
        let (insns, map_refs, layout) = link(&functions, 0).unwrap();
        let prog = ProgramSpec {
            name: "main".into(),
            section: "sockops".into(),
            kind: crate::obj::PROGRAM_KINDS[0],
            insns,
            map_refs,
            layout,
        };
        let patched = apply(&prog, &[7, 9]).unwrap();
        assert_eq!(
            (patched[0].src(), patched[0].imm, patched[1].imm),
            (1, 7, 0)
        );
        assert_eq!(
            (patched[2].src(), patched[2].imm, patched[3].imm),
            (2, 9, 12)
        );
        assert_eq!(
            apply(&prog, &[7]),
            Err(Error::MissingMapFd {
                program: "main".into(),
                map: 1,
                symbol: ".rodata".into()
            })
        );
    }
}
