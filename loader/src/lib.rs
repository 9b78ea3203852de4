//! rawload-loader: the object model into the kernel, and back out.
//!
//! The second stage of rawload's pipeline: an [`rawload_obj::obj::Object`]
//! becomes maps and programs with file descriptors, then attachments (the
//! cgroup's sock_ops hook, the SOCKHASH's sk_msg and sk_skb hooks) and pins
//! under `/sys/fs/bpf`, in an order where an interrupted run leaves nothing
//! `detach` cannot clean up. The only `unsafe` code of rawload is in [`sys`].
//!
//! ```text
//! Object --maps, programs (reloc::apply)--> kernel objects --attach, pin--> cgroup + SOCKHASH + /sys/fs/bpf
//! ```
//!
//! | module       | holds |
//! |--------------|-------|
//! | [`sys`]      | the syscall layer: one `#[repr(C)]` block and one function per `bpf(2)` command |
//! | [`maps`], [`programs`] | maps and programs in the kernel |
//! | [`attach`], [`pin`] | attach points (cgroup, SOCKHASH) and bpffs pins |
//! | [`probe`], [`vmlinux`] | kernel feature probes; the running kernel's own BTF |
//! | [`policy`]   | which addresses and ports are accelerated |
//! | [`hostnet`]  | the host's network namespaces and the addresses each owns (pairing across namespaces) |
//! | [`privileges`] | capabilities, and the stop signals held back during changes |
//! | [`contract`] | what the loader and rawload's C programs agree on |
//! | [`pipeline`] | `attach` and `detach`: the steps in order, each undone if a later one fails |
//! | [`narrate`]  | `--explain`: the steps and every `bpf(2)` call, as they happen |

// The compiler keeps the promise above: `unsafe` anywhere but `sys` fails
// the build.
#![deny(unsafe_code)]

pub mod attach;
pub mod contract;
pub mod hostnet;
pub mod maps;
pub mod narrate;
pub mod pin;
pub mod pipeline;
pub mod policy;
pub mod privileges;
pub mod probe;
pub mod programs;
#[allow(unsafe_code)]
pub mod sys;
pub mod vmlinux;
