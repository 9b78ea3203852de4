//! Just enough rtnetlink (`NETLINK_ROUTE`, include/uapi/linux/rtnetlink.h)
//! to read one namespace's links and addresses, to ask which id it gives
//! another namespace, and to hear when links change.
//!
//! A request is a `struct nlmsghdr` and a family header (`struct
//! ifinfomsg`, `struct ifaddrmsg`, `struct rtgenmsg`); a dump answers with
//! a stream of messages ending in `NLMSG_DONE`, each a family header and
//! attributes (`struct rtattr`: length, type, payload, padded to 4 bytes).
//! The socket belongs to the namespace it was created in, for its whole
//! life, whatever thread uses it later: that is what [`super::scan`] uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

// include/uapi/linux/netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
// include/uapi/linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
/// Multicast groups (the legacy `RTMGRP_*` bits of `nl_groups`).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
// include/uapi/linux/if_link.h
const IFLA_LINK: u16 = 5;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
// include/uapi/linux/if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
// include/uapi/linux/net_namespace.h
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
/// `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`: flags in an attribute's type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One network interface of a namespace (`RTM_NEWLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "veth", "bridge", ... (empty for loopback, physical).
    pub kind: String,
    /// `IFLA_MASTER`: the bridge (or bond) this interface is a port of.
    pub master: Option<i32>,
    /// `IFLA_LINK`: for a veth, its peer's ifindex.
    pub peer_index: Option<i32>,
    /// `IFLA_LINK_NETNSID`: the peer lives in the namespace with this id
    /// (the id this namespace gives it); absent when it lives here.
    pub peer_netnsid: Option<i32>,
}

/// One address of a namespace (`RTM_NEWADDR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub index: i32,
    pub ip: IpAddr,
}

/// A `NETLINK_ROUTE` socket of the namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Netlink {
    /// A socket for requests, in the calling thread's namespace.
    pub fn open() -> nix::Result<Netlink> {
        Self::bound(0)
    }

    /// A socket that hears link and address changes of this namespace.
    pub fn subscribe() -> nix::Result<Netlink> {
        Self::bound(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)
    }

    fn bound(groups: u32) -> nix::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Every interface: `RTM_GETLINK` with `NLM_F_DUMP`.
    pub fn links(&mut self) -> nix::Result<Vec<Link>> {
        let mut links = Vec::new();
        self.dump(RTM_GETLINK, &[0u8; 16], |ty, body| {
            if ty == RTM_NEWLINK {
                links.extend(parse_link(body));
            }
        })?;
        Ok(links)
    }

    /// Every address, IPv4 and IPv6: `RTM_GETADDR` with `NLM_F_DUMP`.
    pub fn addrs(&mut self) -> nix::Result<Vec<Addr>> {
        let mut addrs = Vec::new();
        self.dump(RTM_GETADDR, &[0u8; 8], |ty, body| {
            if ty == RTM_NEWADDR {
                addrs.extend(parse_addr(body));
            }
        })?;
        Ok(addrs)
    }

    /// The id this namespace gives the namespace of `ns` (`RTM_GETNSID`
    /// with `NETNSA_FD`), or None when it gave it none.
    pub fn nsid_of(&mut self, ns: BorrowedFd<'_>) -> nix::Result<Option<i32>> {
        let mut body = vec![0u8; 4]; // struct rtgenmsg, padded
        push_attr(&mut body, NETNSA_FD, &(ns.as_raw_fd() as u32).to_ne_bytes());
        let mut nsid = None;
        self.request(RTM_GETNSID, 0, &body, |ty, body| {
            if ty == RTM_NEWNSID {
                nsid = attrs(body.get(4..).unwrap_or_default())
                    .find(|(t, _)| *t == NETNSA_NSID)
                    .and_then(|(_, v)| attr_i32(v))
                    .filter(|id| *id >= 0);
            }
        })?;
        Ok(nsid)
    }

    /// Reads away the change notifications that arrived (on a socket of
    /// [`Netlink::subscribe`]): only that something changed matters.
    pub fn drain(&self) {
        let mut buf = vec![0u8; 65536];
        while recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
    }

    fn dump(
        &mut self,
        ty: u16,
        family_header: &[u8],
        each: impl FnMut(u16, &[u8]),
    ) -> nix::Result<()> {
        self.request(ty, NLM_F_DUMP, family_header, each)
    }

    /// Sends one request and hands each answering message (its type and
    /// the bytes after its header) to `each`, until `NLMSG_DONE` or, for a
    /// request that is not a dump, the first answer.
    fn request(
        &mut self,
        ty: u16,
        flags: u16,
        body: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> nix::Result<()> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            for (rty, seq, payload) in messages(&buf[..n]) {
                if seq != self.seq {
                    continue;
                }
                match rty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return error_code(payload),
                    _ => each(rty, payload),
                }
                if flags & NLM_F_DUMP == 0 {
                    return Ok(());
                }
            }
        }
    }
}

/// `NLMSG_ERROR` carries a negative errno (0: an acknowledgement).
fn error_code(payload: &[u8]) -> nix::Result<()> {
    let code = attr_i32(payload).unwrap_or(-libc::EPROTO);
    match code {
        0 => Ok(()),
        c => Err(Errno::from_raw(-c)),
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one datagram: (type, sequence number, payload). Stops
/// at the first malformed length.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32_at(buf, 0)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let item = (u16_at(buf, 4)?, u32_at(buf, 8)?, &buf[NLMSG_HDRLEN..len]);
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some(item)
    })
}

/// The attributes in `buf`: (type without flags, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(buf, 0)? as usize;
        if len < 4 || len > buf.len() {
            return None;
        }
        let item = (u16_at(buf, 2)? & NLA_TYPE_MASK, &buf[4..len]);
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some(item)
    })
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

fn attr_i32(v: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn attr_str(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// A `RTM_NEWLINK` body: `struct ifinfomsg` (16 bytes; ifi_index at 4),
/// then attributes.
fn parse_link(body: &[u8]) -> Option<Link> {
    let mut link = Link {
        index: attr_i32(body.get(4..8)?)?,
        name: String::new(),
        kind: String::new(),
        master: None,
        peer_index: None,
        peer_netnsid: None,
    };
    for (ty, v) in attrs(body.get(16..)?) {
        match ty {
            IFLA_IFNAME => link.name = attr_str(v),
            IFLA_MASTER => link.master = attr_i32(v),
            IFLA_LINK => link.peer_index = attr_i32(v),
            IFLA_LINK_NETNSID => link.peer_netnsid = attr_i32(v),
            IFLA_LINKINFO => {
                if let Some((_, kind)) = attrs(v).find(|(t, _)| *t == IFLA_INFO_KIND) {
                    link.kind = attr_str(kind);
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// A `RTM_NEWADDR` body: `struct ifaddrmsg` (8 bytes: family, prefix
/// length, flags, scope, ifa_index), then attributes. IPv4 names the
/// interface's own address in `IFA_LOCAL` (`IFA_ADDRESS` is the peer's on
/// point-to-point links), IPv6 in `IFA_ADDRESS`.
fn parse_addr(body: &[u8]) -> Option<Addr> {
    let family = *body.first()? as i32;
    let index = attr_i32(body.get(4..8)?)?;
    let mut address = None;
    let mut local = None;
    for (ty, v) in attrs(body.get(8..)?) {
        match ty {
            IFA_ADDRESS => address = Some(v),
            IFA_LOCAL => local = Some(v),
            _ => {}
        }
    }
    let ip = match family {
        libc::AF_INET => {
            let b: [u8; 4] = local.or(address)?.get(..4)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        libc::AF_INET6 => {
            let b: [u8; 16] = address?.get(..16)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(Addr { index, ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn a_veth_port_of_a_bridge() {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&7i32.to_ne_bytes());
        push_attr(&mut body, IFLA_IFNAME, b"veth0\0");
        push_attr(&mut body, IFLA_MASTER, &3i32.to_ne_bytes());
        push_attr(&mut body, IFLA_LINK, &2i32.to_ne_bytes());
        push_attr(&mut body, IFLA_LINK_NETNSID, &0i32.to_ne_bytes());
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, b"veth\0");
        push_attr(&mut body, IFLA_LINKINFO | 0x8000, &info);
        let datagram = [
            message(RTM_NEWLINK, 1, &body),
            message(NLMSG_DONE, 1, &[0; 4]),
        ]
        .concat();
        let msgs: Vec<_> = messages(&datagram).collect();
        assert_eq!(msgs.len(), 2);
        let link = parse_link(msgs[0].2).unwrap();
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "veth0".into(),
                kind: "veth".into(),
                master: Some(3),
                peer_index: Some(2),
                peer_netnsid: Some(0),
            }
        );
    }

    #[test]
    fn addresses_of_both_families() {
        let mut v4 = vec![libc::AF_INET as u8, 24, 0, 0];
        v4.extend_from_slice(&5u32.to_ne_bytes());
        push_attr(&mut v4, IFA_ADDRESS, &[10, 0, 0, 9]);
        push_attr(&mut v4, IFA_LOCAL, &[10, 0, 0, 2]);
        assert_eq!(
            parse_addr(&v4),
            Some(Addr {
                index: 5,
                ip: "10.0.0.2".parse().unwrap()
            })
        );
        let mut v6 = vec![libc::AF_INET6 as u8, 64, 0, 0];
        v6.extend_from_slice(&5u32.to_ne_bytes());
        push_attr(
            &mut v6,
            IFA_ADDRESS,
            &"fd00::2".parse::<Ipv6Addr>().unwrap().octets(),
        );
        assert_eq!(
            parse_addr(&v6).unwrap().ip,
            "fd00::2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn truncated_input_is_no_panic() {
        let datagram = message(RTM_NEWLINK, 1, &[0u8; 20]);
        for cut in 0..datagram.len() {
            for (_, _, payload) in messages(&datagram[..cut]) {
                let _ = parse_link(payload);
                let _ = parse_addr(payload);
            }
        }
        assert_eq!(
            error_code(&(-libc::ENOENT).to_ne_bytes()),
            Err(Errno::ENOENT)
        );
        assert_eq!(error_code(&[]), Err(Errno::EPROTO));
    }

    #[test]
    fn the_links_of_this_namespace() {
        // Reading is unprivileged: loopback is always there.
        let links = Netlink::open().unwrap().links().unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
    }
}
