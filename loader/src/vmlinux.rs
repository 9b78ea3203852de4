//! The running kernel's own BTF, `/sys/kernel/btf/vmlinux` (5.4+, with
//! `CONFIG_DEBUG_INFO_BTF`): the types of every kernel struct, where the
//! loader finds the fields its programs read ([`rawload_obj::kfield`]).

use anyhow::{Context, Result};
use rawload_obj::btf::Btf;

/// Where the running kernel publishes its BTF.
pub const PATH: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF, or why there is none.
pub fn btf() -> Result<Btf> {
    let data = std::fs::read(PATH).with_context(|| {
        format!("reading {PATH} (a kernel built without CONFIG_DEBUG_INFO_BTF has none)")
    })?;
    Btf::parse(&data).with_context(|| format!("reading {PATH}"))
}
