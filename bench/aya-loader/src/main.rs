//! Benchmark baseline: does what `rawload attach` / `rawload detach` do for
//! prebuilt/rawload.bpf.o, with aya instead of rawload's own loader.
//!
//! ```text
//! aya-loader attach --cgroup CG --pin-dir DIR [--object FILE]
//! aya-loader detach --cgroup CG --pin-dir DIR
//! ```
//!
//! attach, in rawload's order: maps (cfg_netns_cookie = 1 in .rodata, this
//! host's addresses in rawload_addrs), both programs loaded, sk_msg attached
//! to the SOCKHASH rawload_socks, pins, sock_ops attached to the cgroup last.
//!
//! Difference to rawload: on kernels with cgroup bpf_links (5.7+) aya 0.14
//! attaches sock_ops through a bpf_link, not BPF_PROG_ATTACH, so the link is
//! pinned too (`link_sockops`): a link lives only as long as an fd or a pin
//! holds it; a cgroup link is always attached in the kernel's multi mode
//! (BPF_F_ALLOW_MULTI), see the comment at the attach.
//! sk_msg goes on the map with BPF_PROG_ATTACH, as rawload does. detach
//! removes the link pin (which detaches sock_ops) and then every other pin.

use std::error::Error;
use std::fs;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use aya::EbpfLoader;
use aya::maps::sock::SockMapFd;
use aya::maps::{HashMap, Map, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, SkMsg, SockOps};

type Res<T> = Result<T, Box<dyn Error>>;

const OBJECT: &str = "/work/main/prebuilt/rawload.bpf.o";
const SOCK_OPS: &str = "rawload_sockops";
const SK_MSG: &str = "rawload_sk_msg";
const SOCKS_MAP: &str = "rawload_socks";
const ADDRS_MAP: &str = "rawload_addrs";
const LINK_PIN: &str = "link_sockops";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut cgroup, mut pin_dir, mut object) = (None, None, PathBuf::from(OBJECT));
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().map(PathBuf::from);
        match a.as_str() {
            "--cgroup" => cgroup = val(),
            "--pin-dir" => pin_dir = val(),
            "--object" => object = val().unwrap_or_default(),
            _ => usage(),
        }
    }
    let (Some(cgroup), Some(pin_dir)) = (cgroup, pin_dir) else { usage() };
    let res = match args.first().map(String::as_str) {
        Some("attach") => attach(&object, &cgroup, &pin_dir),
        Some("detach") => detach(&pin_dir),
        _ => usage(),
    };
    if let Err(e) = res {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        eprintln!("aya-loader: {msg}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: aya-loader attach|detach --cgroup CGROUP --pin-dir DIR [--object FILE]");
    std::process::exit(2)
}

fn attach(object: &Path, cgroup: &Path, pin_dir: &Path) -> Res<()> {
    if pin_dir.exists() {
        return Err(format!("{} exists: detach first", pin_dir.display()).into());
    }
    let cgroup = fs::File::open(cgroup).map_err(|e| format!("{}: {e}", cgroup.display()))?;
    // rawload sets this when the kernel has bpf_get_netns_cookie (5.15+).
    let mut ebpf = EbpfLoader::new()
        .override_global("cfg_netns_cookie", &1u32, true)
        .load_file(object)?;
    {
        let mut addrs: HashMap<_, [u8; 16], u8> =
            HashMap::try_from(ebpf.map_mut(ADDRS_MAP).ok_or("no rawload_addrs map")?)?;
        for ip in host_addresses()? {
            let key = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            addrs.insert(key, 1, 0)?;
        }
    }
    let Some(Map::SockHash(socks)) = ebpf.take_map(SOCKS_MAP) else {
        return Err("no SOCKHASH rawload_socks".into());
    };
    let sock_ops: &mut SockOps = prog(&mut ebpf, SOCK_OPS)?.try_into()?;
    sock_ops.load()?;
    let sk_msg: &mut SkMsg = prog(&mut ebpf, SK_MSG)?.try_into()?;
    sk_msg.load()?;

    // Pins go first into a fresh directory; any failure removes them all, and
    // whatever is then unpinned goes away when this process exits.
    fs::DirBuilder::new().mode(0o700).create(pin_dir)?;
    let res = (|| -> Res<()> {
        let sk_msg: &mut SkMsg = prog(&mut ebpf, SK_MSG)?.try_into()?;
        let id = sk_msg.attach(sock_map_fd(&socks))?;
        // aya 0.14 attaches sk_msg with BPF_PROG_ATTACH; the pinned map keeps
        // it. Forgetting the link keeps its Drop from detaching at exit.
        std::mem::forget(sk_msg.take_link(id)?);
        sk_msg.pin(pin_dir.join("prog_sk_msg"))?;
        prog(&mut ebpf, SOCK_OPS)?.pin(pin_dir.join("prog_sockops"))?;
        socks.pin(pin_dir.join(pin_name(SOCKS_MAP)))?;
        for (name, map) in ebpf.maps() {
            map.pin(pin_dir.join(pin_name(name)))?;
        }
        let sock_ops: &mut SockOps = prog(&mut ebpf, SOCK_OPS)?.try_into()?;
        // Not AllowMultiple: aya 0.14 passes it as BPF_F_ALLOW_MULTI in
        // link_create.flags, which the kernel refuses (EINVAL). A cgroup
        // bpf_link is attached in multi mode anyway (cgroup_bpf_link_attach
        // passes BPF_F_ALLOW_MULTI itself), so this is rawload's mode.
        let id = sock_ops.attach(&cgroup, CgroupAttachMode::Single)?;
        let link: FdLink = sock_ops.take_link(id)?.try_into()?;
        link.pin(pin_dir.join(LINK_PIN))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = remove_pins(pin_dir);
    }
    res
}

/// `SockHash::try_from` wants 4-byte values (an fd) and refuses
/// rawload_socks, whose values are 8 bytes (a lookup from user space returns
/// the socket cookie). Its fd() does only this cast, which
/// `#[repr(transparent)] struct SockMapFd(MapFd)` makes sound.
fn sock_map_fd(map: &MapData) -> &SockMapFd {
    // SAFETY: SockMapFd is #[repr(transparent)] over MapFd (aya 0.14).
    unsafe { std::mem::transmute::<&aya::maps::MapFd, &SockMapFd>(map.fd()) }
}

fn prog<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> Res<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).ok_or_else(|| format!("no program {name}").into())
}

/// bpffs refuses '.' in names: ".rodata" is pinned as "map_rodata".
fn pin_name(map: &str) -> String {
    format!("map_{}", map.trim_start_matches('.').replace('.', "_"))
}

fn detach(pin_dir: &Path) -> Res<()> {
    if !pin_dir.exists() {
        return Ok(());
    }
    // The sock_ops link first: no new socket enters the map after it.
    // unpin drops the pin's reference, dropping the fd the last one, which
    // detaches the link synchronously.
    let path = pin_dir.join(LINK_PIN);
    if path.exists() {
        drop(PinnedLink::from_pin(&path)?.unpin()?);
    }
    // aya has no detach for an sk_msg attachment it did not make in this
    // process; removing the map pins drops the SOCKHASH's last user
    // reference, and the kernel then releases its sk_msg program
    // (sock_map_release_progs): the same end state as BPF_PROG_DETACH.
    remove_pins(pin_dir)
}

fn remove_pins(pin_dir: &Path) -> Res<()> {
    for entry in fs::read_dir(pin_dir)? {
        fs::remove_file(entry?.path())?;
    }
    fs::remove_dir(pin_dir)?;
    Ok(())
}

/// This host's addresses, as rawload collects them: getifaddrs(3) without
/// loopback and the unspecified address, deduplicated.
fn host_addresses() -> Res<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed by freeifaddrs below;
    // each ifa_addr is read as the sockaddr type its family says.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match (*sa).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out.retain(|ip| !ip.is_loopback() && !ip.is_unspecified() && *ip != IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    out.sort();
    out.dedup();
    Ok(out)
}
