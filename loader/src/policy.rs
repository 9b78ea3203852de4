//! Which connections may be redirected: the data the loader writes into the
//! object's policy maps before attaching.
//!
//! - `rawload_addrs`: this host's own addresses. sock_ops only inserts a
//!   socket whose peer is a loopback address or one of these, so traffic to
//!   other hosts never pays for the sockmap path.
//! - `rawload_ports`: `--ports` and `--exclude-ports` as two 65536-bit bitmaps,
//!   allow then deny; an empty allow bitmap allows every port.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result, bail, ensure};

use crate::hostnet::netlink::Netlink;

/// The bitmap's size in bytes (one bit per port).
pub const PORT_BITMAP_BYTES: usize = 65536 / 8;

/// A set of TCP ports, parsed from "6379,8000-8080".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet(BTreeSet<u16>);

impl std::str::FromStr for PortSet {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<PortSet> {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let port = |p: &str| -> Result<u16> {
                let n: u16 = p
                    .parse()
                    .with_context(|| format!("'{p}' is not a port number"))?;
                ensure!(n != 0, "port 0 is not a port");
                Ok(n)
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (port(a.trim())?, port(b.trim())?),
                None => (port(part)?, port(part)?),
            };
            ensure!(lo <= hi, "port range {part} runs backwards");
            set.extend(lo..=hi);
        }
        if set.is_empty() {
            bail!("the port list is empty");
        }
        Ok(PortSet(set))
    }
}

impl PortSet {
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(&port)
    }

    /// The value of `rawload_ports`: `__u64 bits[1024]` in host order, bit
    /// `p % 64` of word `p / 64` set for each port `p`.
    pub fn bitmap(&self) -> Vec<u8> {
        let mut words = [0u64; PORT_BITMAP_BYTES / 8];
        for &p in &self.0 {
            words[p as usize / 64] |= 1 << (p % 64);
        }
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

impl std::fmt::Display for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Print runs as ranges: 80,8000-8080.
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end.wrapping_add(1))) && end != u16::MAX {
                end = iter.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// `--ports` and `--exclude-ports` as the value of `rawload_ports`: an
/// allow bitmap then a deny bitmap. A connection is accelerated if one of its
/// ports is allowed (when there is an allow list) and neither is denied: the
/// client side of a connection has an ephemeral port, so "one of" is what
/// makes `--ports 6379` mean "connections to 6379".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortPolicy {
    pub allow: Option<PortSet>,
    pub deny: Option<PortSet>,
}

impl PortPolicy {
    pub fn is_empty(&self) -> bool {
        self.allow.is_none() && self.deny.is_none()
    }

    /// The map value: `__u64 allow[1024]; __u64 deny[1024];`.
    pub fn map_value(&self) -> Vec<u8> {
        let none = vec![0u8; PORT_BITMAP_BYTES];
        let mut v = self
            .allow
            .as_ref()
            .map_or_else(|| none.clone(), PortSet::bitmap);
        v.extend(self.deny.as_ref().map_or(none, PortSet::bitmap));
        v
    }
}

/// An address as the BPF programs key it: IPv6 form, IPv4 as ::ffff:a.b.c.d,
/// bytes in network order.
pub fn key_address(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// This host's addresses (in the loader's network namespace), over
/// netlink (`RTM_GETADDR`).
pub fn host_addresses() -> Result<Vec<IpAddr>> {
    let addrs = Netlink::open()
        .and_then(|mut nl| nl.addrs())
        .context("listing this host's addresses (RTM_GETADDR)")?;
    let mut out: BTreeSet<IpAddr> = addrs.into_iter().map(|a| a.ip).collect();
    // Loopback is matched in the program itself; the wildcard never occurs.
    out.retain(|ip| !ip.is_loopback() && !ip.is_unspecified());
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        let p: PortSet = "6379, 8000-8002,80".parse().unwrap();
        assert!(p.contains(6379) && p.contains(8001) && !p.contains(8003));
        assert_eq!(p.to_string(), "80,6379,8000-8002");
        let bits = p.bitmap();
        assert_eq!(bits.len(), PORT_BITMAP_BYTES);
        let word = u64::from_ne_bytes(bits[8..16].try_into().unwrap()); // ports 64..127
        assert_eq!(word, 1 << (80 - 64));
        for bad in ["", "0", "70000", "9-3", "x", "1-"] {
            assert!(bad.parse::<PortSet>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!("65535".parse::<PortSet>().unwrap().to_string(), "65535");
    }

    #[test]
    fn port_policies() {
        let only = PortPolicy {
            allow: Some("6379".parse().unwrap()),
            deny: None,
        };
        let value = only.map_value();
        assert_eq!(value[6379 / 8], 1 << (6379 % 8));
        assert_eq!(value.iter().map(|b| b.count_ones()).sum::<u32>(), 1);
        let never = PortPolicy {
            allow: None,
            deny: Some("8080".parse().unwrap()),
        };
        let value = never.map_value();
        assert_eq!(value.len(), 2 * PORT_BITMAP_BYTES);
        assert!(value[..PORT_BITMAP_BYTES].iter().all(|&b| b == 0));
        assert_eq!(value[PORT_BITMAP_BYTES + 8080 / 8], 1 << (8080 % 8));
    }

    #[test]
    fn v4_addresses_are_mapped() {
        let k = key_address("127.0.0.1".parse().unwrap());
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);
    }
}
