//! rawload: a small eBPF loader, written out by hand.
//!
//! Two clang-built programs make same-host TCP skip the network stack: a
//! `sock_ops` program on a cgroup puts established same-host sockets into a
//! SOCKHASH, and an `sk_msg` program on that map moves each `sendmsg()`
//! straight into the peer socket's receive queue. This crate is the loader
//! that puts them in the kernel, one visible step at a time.
//!
//! Data flows one way through the modules:
//!
//! ```text
//! ELF bytes ──elf, btf──> obj::Object ──maps, programs, reloc──> kernel objects
//!           (pure, no kernel)          (bpf(2) via sys)
//!     ──attach, pin──> cgroup + SOCKHASH attachments, /sys/fs/bpf pins
//! ```
//!
//! | module     | holds |
//! |------------|-------|
//! | [`elf`]    | ELF object -> [`obj::Object`] (sections, maps, programs, relocations) |
//! | [`btf`]    | the BTF reader behind `.maps` and kernel fields |
//! | [`kfield`] | kernel struct offsets from the running kernel's BTF (rawload's CO-RE) |
//! | [`obj`]    | the object model: map and program specs with symbolic map references |
//! | [`insn`]   | one eBPF instruction |
//! | [`disasm`] | instructions as text, as `llvm-objdump -d` prints them |
//! | [`reloc`]  | linking bpf-to-bpf calls; patching map fds into `ld_imm64` |
//! | [`sys`]    | the syscall layer, the only `unsafe` code |
//! | [`maps`], [`programs`] | maps and programs in the kernel |
//! | [`attach`], [`pin`] | attach points (cgroup, SOCKHASH) and bpffs pins |
//! | [`probe`], [`policy`] | kernel feature probes; addresses and ports to accelerate |
//! | [`loader`] | `attach` / `detach`: the pipeline, in order, with undo |
//! | [`status`], [`trace`] | reading back what is attached; trace lines |
//! | [`doctor`], [`selftest`] | what the kernel offers; an end-to-end proof on this host |
//! | [`explain`], [`narrate`] | what the loader sees in an object; `--explain` step by step |
//! | [`bench`], [`scratch`] | the measured gain (tcp vs rawload vs AF_UNIX); private cgroups and pins |
//! | [`traffic`], [`json`] | verifiable test traffic; JSON without dependencies |
//! | [`cli`]    | the command line |

pub mod attach;
pub mod bench;
pub mod btf;
pub mod cli;
pub mod disasm;
pub mod doctor;
pub mod elf;
pub mod explain;
pub mod insn;
pub mod json;
pub mod kfield;
pub mod loader;
pub mod maps;
pub mod narrate;
pub mod obj;
pub mod pin;
pub mod policy;
pub mod probe;
pub mod programs;
pub mod reloc;
pub mod scratch;
pub mod selftest;
pub mod status;
pub mod sys;
pub mod trace;
pub mod traffic;
