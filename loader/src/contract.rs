//! What the loader and rawload's own eBPF programs (bpf-src/rawload.bpf.c)
//! agree on: the embedded objects, the names of their maps and
//! configuration globals, and the order of their counters.
//!
//! The C side cannot import these names, so [`check`] holds the object to
//! them when it is loaded: a field renamed or moved in `struct counters`
//! fails the attach with a message, instead of shifting every counter
//! `rawload status` shows.

use anyhow::{Result, bail, ensure};
use rawload_obj::obj::Object;

/// The objects built from `bpf-src/` by `make bpf`, embedded so that the
/// static binary needs no other file.
pub static RELEASE_OBJECT: &[u8] = include_bytes!("../../prebuilt/rawload.bpf.o");
pub static DEBUG_OBJECT: &[u8] = include_bytes!("../../prebuilt/rawload-debug.bpf.o");

/// This host's addresses, filled by the loader (`policy`).
pub const ADDRS_MAP: &str = "rawload_addrs";
/// Addresses proven unique on this host, each with the netns cookie of the
/// namespace holding it, filled by the loader (`netns`).
pub const OWNERS_MAP: &str = "rawload_owners";
/// The `--ports` / `--exclude-ports` bitmaps.
pub const PORTS_MAP: &str = "rawload_ports";
/// Each socket's state, in the slots of an array; sized like the socket map.
pub const CONNS_MAP: &str = "rawload_conns";
/// The per-CPU counters, in [`COUNTER_NAMES`] order.
pub const STATS_MAP: &str = "rawload_stats";

/// The `.rodata` configuration globals (`const volatile __u32`).
pub mod global {
    pub const NETNS_COOKIE: &str = "cfg_netns_cookie";
    pub const PORT_ALLOW: &str = "cfg_port_allow";
    pub const PORT_DENY: &str = "cfg_port_deny";
    pub const STREAM_BYTES: &str = "cfg_stream_bytes";
    pub const KFIELDS: &str = "cfg_kfields";
    pub const RMEM_COUNTS_REDIRECT: &str = "cfg_rmem_counts_redirect";
    pub const SKB_VERDICT: &str = "cfg_skb_verdict";
    pub const CROSS_NETNS: &str = "cfg_cross_netns";
    /// How many slots `rawload_conns` has.
    pub const CONN_SLOTS: &str = "cfg_conn_slots";
    /// Every one, for [`super::check`].
    pub const ALL: [&str; 9] = [
        NETNS_COOKIE,
        PORT_ALLOW,
        PORT_DENY,
        STREAM_BYTES,
        KFIELDS,
        RMEM_COUNTS_REDIRECT,
        SKB_VERDICT,
        CROSS_NETNS,
        CONN_SLOTS,
    ];
}

/// The fields of `struct counters`, in order.
pub const COUNTER_NAMES: [&str; 25] = [
    "sockets_inserted",
    "insert_exists",
    "insert_full",
    "insert_busy",
    "insert_other",
    "skipped_remote",
    "skipped_port",
    "skipped_sent",
    "skipped_peer",
    "peers_removed",
    "msgs_redirected",
    "bytes_redirected",
    "msgs_missed",
    "bytes_missed",
    "msgs_tcp_only",
    "bytes_tcp_only",
    "streams_to_tcp",
    "left_unpaired",
    "left_peer_gone",
    "left_tcp",
    "state_missing",
    "oneway_to_tcp",
    "follow_to_tcp",
    "skipped_netns",
    "joined_netns",
];

/// Holds an object to the contract where it takes part in it: a counters
/// map must match [`COUNTER_NAMES`] (its BTF, field by field), and the
/// configuration globals it has must be 4-byte values. Other objects (a
/// seed's, `--object`) pass as long as they use none of these names.
pub fn check(obj: &Object) -> Result<()> {
    if let Some(i) = obj.map_index(STATS_MAP) {
        let fields = obj
            .btf
            .as_ref()
            .and_then(|btf| btf.struct_members("counters"))
            .map(|members| members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>());
        let Some(fields) = fields else {
            bail!("the object has a {STATS_MAP} map but no BTF for struct counters");
        };
        counters_match(&fields)?;
        ensure!(
            obj.maps[i].value_size as usize == COUNTER_NAMES.len() * 8,
            "{STATS_MAP} holds {} bytes per CPU, not {} counters",
            obj.maps[i].value_size,
            COUNTER_NAMES.len()
        );
    }
    for name in global::ALL {
        if let Some((_, g)) = obj.global(name) {
            ensure!(
                g.size == 4,
                "global {name} is {} bytes, not a __u32",
                g.size
            );
        }
    }
    Ok(())
}

/// The fields of the object's `struct counters`, against [`COUNTER_NAMES`].
fn counters_match(fields: &[&str]) -> Result<()> {
    ensure!(
        fields == COUNTER_NAMES,
        "the object's struct counters has fields {fields:?}; rawload expects {COUNTER_NAMES:?} (bpf-src/rawload.bpf.c and loader/src/contract.rs disagree)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_objects_keep_the_contract() {
        for bytes in [RELEASE_OBJECT, DEBUG_OBJECT] {
            let obj = rawload_obj::elf::parse(bytes).unwrap();
            check(&obj).unwrap();
            for name in global::ALL {
                assert!(obj.global(name).is_some(), "{name}");
            }
            for map in [ADDRS_MAP, OWNERS_MAP, PORTS_MAP, CONNS_MAP, STATS_MAP] {
                assert!(obj.map_index(map).is_some(), "{map}");
            }
        }
    }

    #[test]
    fn a_renamed_counter_fails_loudly() {
        let mut fields = COUNTER_NAMES.to_vec();
        fields[19] = "left_both";
        let e = counters_match(&fields).unwrap_err();
        assert!(format!("{e:#}").contains("left_both"), "{e:#}");
        fields.swap(0, 1);
        fields[19] = "left_tcp";
        assert!(counters_match(&fields).is_err(), "two counters swapped");
    }
}
