//! The network namespaces of this host and the addresses each one owns:
//! what `rawload_owners` holds, so that sockets of two containers on one
//! bridge can pair while identical addresses in isolated namespaces never
//! do (the rule: [`owners`]; the eBPF side: "Across namespaces" in
//! bpf-src/rawload.bpf.c).
//!
//! ```text
//! /proc/*/ns/net, /run/netns/* --scan (setns, netlink)--> Scan --owners--> Owners --sync--> rawload_owners
//! ```
//!
//! Containers come and go after `attach`: `attach --hold` listens for link
//! changes of the host's namespace (a new veth port on a bridge) and scans
//! again, and again every few seconds (addresses are set inside the
//! containers, where the host hears nothing); `rawload refresh` does one
//! scan. In between, a new container's connections keep plain TCP.

mod hold;
pub mod netlink;
pub mod owners;
pub mod scan;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

pub use hold::hold;
pub use owners::{Cidr, Owners};

use crate::contract::OWNERS_MAP;
use crate::maps::Map;
use crate::pin::{self, PinDir};
use crate::policy::key_address;

/// What a sync changed in `rawload_owners`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Synced {
    pub owners: Owners,
    pub added: usize,
    pub removed: usize,
    /// Addresses that did not fit the map.
    pub dropped: usize,
}

/// Scans the host and applies the rule.
pub fn discover(ranges: &[Cidr]) -> Result<Owners> {
    Ok(owners::owners(&scan::scan()?, ranges))
}

/// Makes `map` hold exactly `owners`: stale addresses out first, then the
/// new and changed ones (a socket that joins in between finds an address
/// missing, never a wrong owner, and keeps TCP).
pub fn sync(map: &Map, owners: Owners) -> Result<Synced> {
    let wanted: BTreeMap<[u8; 16], u64> = owners
        .owned
        .iter()
        .map(|o| (key_address(o.ip), o.cookie))
        .collect();
    let mut synced = Synced::default();
    let mut present = BTreeMap::new();
    for key in map.keys()? {
        let value = map.lookup(&key)?.unwrap_or_default();
        let (Ok(k), Ok(v)) = (
            <[u8; 16]>::try_from(key.as_slice()),
            <[u8; 8]>::try_from(value.as_slice()),
        ) else {
            continue;
        };
        let cookie = u64::from_ne_bytes(v);
        if wanted.get(&k) == Some(&cookie) {
            present.insert(k, cookie);
        } else {
            map.delete(&k)?;
            synced.removed += 1;
        }
    }
    let room = (map.meta().max_entries as usize).saturating_sub(present.len());
    for (k, cookie) in wanted.iter().filter(|(k, _)| !present.contains_key(*k)) {
        if synced.added == room {
            synced.dropped += 1;
            continue;
        }
        map.update(k, &cookie.to_ne_bytes())?;
        synced.added += 1;
    }
    synced.owners = owners;
    Ok(synced)
}

/// The pinned `rawload_owners` of the attachment in `pin_dir`, if it has
/// one (attached with cross-namespace pairing).
pub fn owners_map(pin_dir: &Path) -> Result<Option<Map>> {
    let Some(dir) = PinDir::existing(pin_dir)? else {
        return Ok(None);
    };
    dir.get(&pin::map_pin_name(OWNERS_MAP))?
        .map(Map::from_fd)
        .transpose()
}

/// `rawload refresh`, and each scan of `attach --hold`: scans and syncs the
/// pinned `rawload_owners` of an attachment.
pub fn refresh(pin_dir: &Path, ranges: &[Cidr]) -> Result<Synced> {
    let map = owners_map(pin_dir)?.with_context(|| {
        format!(
            "{} holds no {OWNERS_MAP} map: attach first (without --no-cross-netns, on 5.15+)",
            pin_dir.display()
        )
    })?;
    sync(&map, discover(ranges)?)
}
