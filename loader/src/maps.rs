//! Maps in the kernel: created from a [`MapSpec`], or reopened from a pin.
//!
//! Creating a map is one `BPF_MAP_CREATE`. Global-data maps then get their
//! initial bytes with `BPF_MAP_UPDATE_ELEM` (key 0), and `.rodata` is frozen
//! with `BPF_MAP_FREEZE`, which is what lets the verifier treat its contents
//! as constants.

use rawload_obj::uapi::MapType;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

use crate::sys::{BPF_ANY, BPF_F_RDONLY_PROG, MapCreateArgs, MapFd, MapMeta};
use rawload_obj::obj::{MapOrigin, MapSpec};

/// A map that exists in the kernel.
#[derive(Debug)]
pub struct Map {
    fd: MapFd,
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Map {
    /// `BPF_MAP_CREATE` for `spec`, then fill (and freeze) global data.
    /// `max_entries` overrides the object's value (`--max-sockets`).
    pub fn create(spec: &MapSpec, max_entries: Option<u32>) -> Result<Map> {
        let args = MapCreateArgs {
            map_type: spec.map_type,
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries: max_entries.unwrap_or(spec.max_entries),
            flags: spec.flags,
            name: &spec.name,
        };
        let fd = MapFd::create(&args).with_context(|| {
            format!(
                "creating map '{}' ({}, key {} B, value {} B, {} entries)",
                spec.name,
                args.map_type.name(),
                args.key_size,
                args.value_size,
                args.max_entries
            )
        })?;
        let map = Map { fd };
        if let MapOrigin::Data { init, .. } = &spec.origin {
            map.fd
                .update(&0u32.to_ne_bytes(), init, BPF_ANY)
                .with_context(|| format!("writing the initial value of '{}'", spec.name))?;
            if spec.flags & BPF_F_RDONLY_PROG != 0 {
                map.fd
                    .freeze()
                    .with_context(|| format!("freezing '{}' (needs Linux 5.2)", spec.name))?;
            }
        }
        Ok(map)
    }

    /// Adopts an open map descriptor (from a pin or an id).
    pub fn from_fd(fd: OwnedFd) -> Result<Map> {
        Ok(Map {
            fd: MapFd::from_fd(fd).context("reading map info")?,
        })
    }

    pub fn meta(&self) -> &MapMeta {
        self.fd.meta()
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }

    pub fn is_socket_map(&self) -> bool {
        matches!(self.meta().map_type, MapType::SOCKHASH | MapType::SOCKMAP)
    }

    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.fd
            .update(key, value, BPF_ANY)
            .with_context(|| format!("updating map '{}'", self.meta().name))
    }

    /// Removes `key`; false when it was not there.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        self.fd
            .delete(key)
            .with_context(|| format!("deleting from map '{}'", self.meta().name))
    }

    /// The value stored at `key`, if any (all CPUs' values for per-CPU maps).
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut value = vec![0u8; self.fd.value_buf_len()];
        let found = self
            .fd
            .lookup(key, &mut value)
            .with_context(|| format!("reading map '{}'", self.meta().name))?;
        Ok(found.then_some(value))
    }

    /// All keys, walked with `BPF_MAP_GET_NEXT_KEY` (works on every map
    /// type, SOCKHASH included, on every kernel). Bounded by `max_entries`
    /// so a map that changes under us cannot loop forever.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>> {
        let key_size = self.meta().key_size as usize;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut next = vec![0u8; key_size];
        while keys.len() <= self.meta().max_entries as usize {
            let more = self
                .fd
                .next_key(keys.last().map(Vec::as_slice), &mut next)
                .with_context(|| format!("listing keys of '{}'", self.meta().name))?;
            if !more {
                break;
            }
            keys.push(next.clone());
        }
        Ok(keys)
    }
}
