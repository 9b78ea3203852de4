//! Which addresses rawload may pair across namespaces: those held by
//! exactly one namespace of the host, where that namespace is the host's
//! own or is connected to it through a veth whose host end is a port of a
//! bridge (or, with `--connected CIDR`, any veth into the host's namespace:
//! routed pod networks without a bridge). The eBPF side of the rule is
//! "Across namespaces" in bpf-src/rawload.bpf.c.
//!
//! A pure function of a [`Scan`], so that the rule is tested on made-up
//! hosts as well as on real ones.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use anyhow::{Result, bail};

use super::netlink::Link;
use super::scan::{Namespace, Scan};

/// An address range, `10.244.0.0/16` or `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Cidr> {
        let Some((net, prefix)) = s.split_once('/') else {
            bail!("'{s}' is not an address range: expected ADDRESS/PREFIX, e.g. 10.244.0.0/16");
        };
        let Ok(net) = net.parse::<IpAddr>() else {
            bail!("'{net}' in '{s}' is not an IPv4 or IPv6 address");
        };
        let max = if net.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => Ok(Cidr { net, prefix: p }),
            _ => bail!("'/{prefix}' in '{s}' is not a prefix length from 0 to {max}"),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// An address and the namespace that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub ip: IpAddr,
    pub cookie: u64,
    /// "host", or the namespace's path and interface: for the narration.
    pub holder: String,
}

/// The outcome of the rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    pub owned: Vec<Owned>,
    /// Connected addresses held by more than one namespace, with how many:
    /// their connections stay apart, on TCP.
    pub shared: Vec<(IpAddr, usize)>,
}

/// Addresses that can name a namespace host-wide: not loopback, link-local
/// (one per link, the same on many), multicast or unspecified.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The interface `link` of `ns` is a veth whose peer is an interface of the
/// host's namespace: that peer, and the bridge it is a port of, if any.
fn host_end<'a>(
    ns: &Namespace,
    link: &Link,
    host: &'a Namespace,
) -> Option<(&'a Link, Option<&'a Link>)> {
    if link.kind != "veth" || link.peer_netnsid.is_none() || link.peer_netnsid != ns.host_nsid {
        return None;
    }
    let end = host
        .links
        .iter()
        .find(|l| Some(l.index) == link.peer_index && l.kind == "veth")?;
    let bridge = end
        .master
        .and_then(|m| host.links.iter().find(|l| l.index == m))
        .filter(|m| m.kind == "bridge");
    Some((end, bridge))
}

/// The connected addresses of one namespace other than the host's, each
/// with a description of the path that connects it.
fn connected(ns: &Namespace, host: &Namespace, ranges: &[Cidr]) -> Vec<(IpAddr, String)> {
    let mut out = Vec::new();
    for addr in ns.addrs.iter().filter(|a| routable(a.ip)) {
        let Some(link) = ns.links.iter().find(|l| l.index == addr.index) else {
            continue;
        };
        let Some((end, bridge)) = host_end(ns, link, host) else {
            continue;
        };
        let via = match bridge {
            Some(bridge) => format!("{} via {} on bridge {}", link.name, end.name, bridge.name),
            None if ranges.iter().any(|r| r.contains(addr.ip)) => {
                format!("{} via {} (--connected)", link.name, end.name)
            }
            None => continue,
        };
        out.push((addr.ip, format!("{} {via}", ns.path.display())));
    }
    out
}

/// Applies the rule to a scan.
pub fn owners(scan: &Scan, ranges: &[Cidr]) -> Owners {
    // Who holds each address, on any interface, connected or not.
    let mut holders: BTreeMap<IpAddr, Vec<u64>> = BTreeMap::new();
    for ns in std::iter::once(&scan.host).chain(&scan.others) {
        for a in ns.addrs.iter().filter(|a| routable(a.ip)) {
            let list = holders.entry(a.ip).or_default();
            if !list.contains(&ns.cookie) {
                list.push(ns.cookie);
            }
        }
    }
    let mut candidates: Vec<(IpAddr, u64, String)> = scan
        .host
        .addrs
        .iter()
        .filter(|a| routable(a.ip))
        .map(|a| (a.ip, scan.host.cookie, "host".to_string()))
        .collect();
    for ns in &scan.others {
        candidates.extend(
            connected(ns, &scan.host, ranges)
                .into_iter()
                .map(|(ip, h)| (ip, ns.cookie, h)),
        );
    }
    candidates.sort_by_key(|a| (a.0, a.1));
    candidates.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
    let mut out = Owners::default();
    for (ip, cookie, holder) in candidates {
        match holders.get(&ip).map_or(0, Vec::len) {
            1 => out.owned.push(Owned { ip, cookie, holder }),
            n => {
                if out.shared.last().map(|s| s.0) != Some(ip) {
                    out.shared.push((ip, n));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::netlink::Addr;
    use super::*;

    fn link(index: i32, name: &str, kind: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.into(),
            master: None,
            peer_index: None,
            peer_netnsid: None,
        }
    }

    fn addr(index: i32, ip: &str) -> Addr {
        Addr {
            index,
            ip: ip.parse().unwrap(),
        }
    }

    fn ns(path: &str, cookie: u64, links: Vec<Link>, addrs: Vec<Addr>) -> Namespace {
        Namespace {
            path: PathBuf::from(path),
            cookie,
            links,
            addrs,
            host_nsid: Some(0),
        }
    }

    /// A container whose eth0 (ifindex 2) is the peer of the host's `host_if`.
    fn container(path: &str, cookie: u64, host_if: i32, ip: &str) -> Namespace {
        let mut eth0 = link(2, "eth0", "veth");
        eth0.peer_index = Some(host_if);
        eth0.peer_netnsid = Some(0);
        ns(
            path,
            cookie,
            vec![link(1, "lo", ""), eth0],
            vec![addr(1, "127.0.0.1"), addr(2, ip)],
        )
    }

    /// A host with bridge br0 (ifindex 3) holding 10.0.0.1, veth ports 10
    /// and 11, and a routed veth 12 on no bridge.
    fn host() -> Namespace {
        let mut links = vec![link(1, "lo", ""), link(3, "br0", "bridge")];
        for (i, name) in [(10, "veth-a"), (11, "veth-b"), (12, "cali-c")] {
            let mut l = link(i, name, "veth");
            l.master = (i != 12).then_some(3);
            l.peer_index = Some(2);
            l.peer_netnsid = Some(i);
            links.push(l);
        }
        ns(
            "/proc/self/ns/net",
            1,
            links,
            vec![
                addr(1, "127.0.0.1"),
                addr(3, "10.0.0.1"),
                addr(3, "fe80::1"),
            ],
        )
    }

    fn ips(o: &Owners) -> Vec<(String, u64)> {
        o.owned
            .iter()
            .map(|x| (x.ip.to_string(), x.cookie))
            .collect()
    }

    #[test]
    fn bridged_containers_and_the_host_own_their_addresses() {
        let scan = Scan {
            host: host(),
            others: vec![
                container("a", 20, 10, "10.0.0.2"),
                container("b", 21, 11, "10.0.0.3"),
            ],
            unreadable: vec![],
        };
        let o = owners(&scan, &[]);
        assert_eq!(
            ips(&o),
            [
                ("10.0.0.1".into(), 1),
                ("10.0.0.2".into(), 20),
                ("10.0.0.3".into(), 21)
            ]
        );
        assert!(o.shared.is_empty());
        assert!(
            o.owned[1].holder.contains("on bridge br0"),
            "{:?}",
            o.owned[1]
        );
    }

    #[test]
    fn an_address_held_twice_is_nobodys() {
        // c holds 10.0.0.2 too, on a veth of its own into an isolated namespace.
        let mut isolated = container("c", 22, 99, "10.0.0.2");
        isolated.links[1].peer_netnsid = Some(7);
        let scan = Scan {
            host: host(),
            others: vec![
                container("a", 20, 10, "10.0.0.2"),
                container("b", 21, 11, "10.0.0.3"),
                isolated,
            ],
            unreadable: vec![],
        };
        let o = owners(&scan, &[]);
        assert_eq!(ips(&o), [("10.0.0.1".into(), 1), ("10.0.0.3".into(), 21)]);
        assert_eq!(o.shared, [("10.0.0.2".parse().unwrap(), 2)]);
    }

    #[test]
    fn routed_veths_need_connected() {
        let scan = Scan {
            host: host(),
            others: vec![container("r", 30, 12, "10.244.1.5")],
            unreadable: vec![],
        };
        assert_eq!(ips(&owners(&scan, &[])), [("10.0.0.1".into(), 1)]);
        let ranges = ["10.244.0.0/16".parse().unwrap()];
        assert_eq!(
            ips(&owners(&scan, &ranges)),
            [("10.0.0.1".into(), 1), ("10.244.1.5".into(), 30)]
        );
    }

    #[test]
    fn a_veth_into_another_namespace_is_not_the_host() {
        let mut c = container("a", 20, 10, "10.0.0.2");
        c.host_nsid = Some(5); // its veth's peer (id 0) is not the host
        let scan = Scan {
            host: host(),
            others: vec![c],
            unreadable: vec![],
        };
        assert_eq!(ips(&owners(&scan, &[])), [("10.0.0.1".into(), 1)]);
    }

    #[test]
    fn ranges() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(c.contains("10.244.255.1".parse().unwrap()));
        assert!(!c.contains("10.245.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
        assert!(
            "fd00::/8"
                .parse::<Cidr>()
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "x/8",
            "fd00::/129",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
