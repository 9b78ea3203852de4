//! rawload: the command and its tools, the last stage of the pipeline.
//!
//! `rawload attach` and `detach` drive the loader (the `rawload-loader`
//! crate); the rest read back what is attached, prove it works, or measure
//! it. Data flows one way: this crate uses the loader and the object model
//! (`rawload-obj`), never the reverse.
//!
//! | module     | holds |
//! |------------|-------|
//! | [`cli`]    | the command line |
//! | [`status`], [`trace`] | reading back what is attached; trace lines |
//! | [`doctor`], [`selftest`] | what the kernel offers; an end-to-end proof on this host |
//! | [`explain`] | what the loader sees in an object |
//! | [`bench`], [`scratch`] | the measured gain (tcp vs rawload vs AF_UNIX); private cgroups and pins |
//! | [`traffic`], [`json`] | verifiable test traffic; JSON without dependencies |

#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod doctor;
pub mod explain;
pub mod json;
pub mod scratch;
pub mod selftest;
pub mod status;
pub mod trace;
pub mod traffic;
