//! The phase that asks the kernel what it offers and writes the answers into
//! the object's `.rodata` before anything is created: network-namespace
//! keys, the backpressure bound, where the kernel's struct sock fields are,
//! whether redirected bytes count as unread, whether FIONREAD needs the
//! sk_skb verdict, and the port policy.

use anyhow::{Context, Result, bail};
use rawload_obj::kfield::{self, KField};
use rawload_obj::obj::Object;
use rawload_obj::uapi::ProgType;

use super::{
    AttachOptions, CrossNetns, DEFAULT_STREAM_BYTES, FionreadFix, NetnsKeys, ReadAccounting,
    StreamPolicy,
};
use crate::attach::Cgroup;
use crate::contract::{CONNS_MAP, global};
use crate::narrate;
use crate::policy::PortPolicy;
use crate::probe::{self, Memlock};

/// What the probes decided.
pub struct Config {
    pub memlock: Memlock,
    pub netns_keys: NetnsKeys,
    pub cross_netns: CrossNetns,
    pub streams: StreamPolicy,
    pub reads: ReadAccounting,
    pub fionread: FionreadFix,
}

/// Probes the kernel and sets the object's configuration globals.
pub fn configure(
    obj: &mut Object,
    opts: &AttachOptions,
    cgroup: &Cgroup,
    ports: &PortPolicy,
) -> Result<Config> {
    let memlock = probe::raise_memlock();
    narrate!(
        "4. raise RLIMIT_MEMLOCK (kernels before 5.11 charge BPF memory to it): {}",
        match memlock {
            Memlock::Raised => "raised to unlimited".to_string(),
            Memlock::Refused(e) => format!("refused ({e}), harmless on 5.11+"),
        }
    );
    let netns_keys = netns_keys(obj, opts, cgroup)?;
    let cross_netns = cross_netns(obj, opts, netns_keys)?;
    let streams = stream_policy(obj, opts)?;
    let reads = read_accounting(obj)?;
    let fionread = fionread_fix(obj)?;
    if ports.allow.is_some() {
        obj.set_global(global::PORT_ALLOW, &1u32.to_ne_bytes())?;
    }
    if ports.deny.is_some() {
        obj.set_global(global::PORT_DENY, &1u32.to_ne_bytes())?;
    }
    conn_slots(obj, opts)?;
    Ok(Config {
        memlock,
        netns_keys,
        cross_netns,
        streams,
        reads,
        fionread,
    })
}

/// Whether socket keys include the network namespace
/// (`cfg_netns_cookie`): only with `bpf_get_netns_cookie` (5.15), or on the
/// operator's word that one namespace is all there is.
fn netns_keys(obj: &mut Object, opts: &AttachOptions, cgroup: &Cgroup) -> Result<NetnsKeys> {
    narrate!(
        "5. probe bpf_get_netns_cookie: load one tiny sock_ops and one sk_msg program calling it"
    );
    let cookie =
        probe::netns_cookie().map_err(|e| anyhow::anyhow!("probing the kernel: {}", e.desc()))?;
    let keys = match (obj.global(global::NETNS_COOKIE).is_some(), cookie) {
        (false, _) => NetnsKeys::NotInObject,
        (true, true) => NetnsKeys::Yes,
        (true, false) if opts.single_netns => NetnsKeys::NoKernelSupport,
        (true, false) => bail!(
            "this kernel cannot tell network namespaces apart in sock_ops/sk_msg (bpf_get_netns_cookie arrived in 5.15), \
             so two namespaces holding the same connection (containers each talking to their own 127.0.0.1:PORT) \
             could receive each other's bytes; if every process in {} shares one network namespace, attach with --single-netns",
            cgroup.path.display()
        ),
    };
    narrate!(
        "   -> {}",
        match keys {
            NetnsKeys::Yes => "present: .rodata cfg_netns_cookie = 1, keys include the namespace",
            NetnsKeys::NoKernelSupport => "absent: cfg_netns_cookie stays 0 (--single-netns)",
            NetnsKeys::NotInObject => "not used by this object",
        }
    );
    if keys == NetnsKeys::Yes {
        obj.set_global(global::NETNS_COOKIE, &1u32.to_ne_bytes())?;
    }
    Ok(keys)
}

/// Whether sockets of different namespaces may pair (`cfg_cross_netns`):
/// only where keys hold the namespace, unless the operator said no.
fn cross_netns(obj: &mut Object, opts: &AttachOptions, keys: NetnsKeys) -> Result<CrossNetns> {
    let cross = match (
        obj.global(global::CROSS_NETNS).is_some(),
        keys,
        opts.cross_netns,
    ) {
        (false, _, _) => CrossNetns::NotInObject,
        (true, NetnsKeys::Yes, true) => CrossNetns::On,
        (true, NetnsKeys::Yes, false) => CrossNetns::Off,
        (true, _, _) => CrossNetns::NoNetnsKeys,
    };
    narrate!(
        "   -> .rodata cfg_cross_netns = {} ({cross:?}: {})",
        u32::from(cross == CrossNetns::On),
        match cross {
            CrossNetns::On => "namespaces pair where rawload_owners proves both addresses",
            CrossNetns::Off => "--no-cross-netns",
            CrossNetns::NoNetnsKeys => "without netns cookies no socket's namespace is known",
            CrossNetns::NotInObject => "not used by this object",
        }
    );
    if cross == CrossNetns::On {
        obj.set_global(global::CROSS_NETNS, &1u32.to_ne_bytes())?;
    }
    Ok(cross)
}

/// The backpressure bound (`cfg_stream_bytes`).
fn stream_policy(obj: &mut Object, opts: &AttachOptions) -> Result<StreamPolicy> {
    let streams = match (
        obj.global(global::STREAM_BYTES).is_some(),
        opts.stream_bytes,
    ) {
        (false, _) => StreamPolicy::NotInObject,
        (true, Some(0)) => StreamPolicy::NeverAsked,
        (true, Some(n)) => StreamPolicy::After(n),
        (true, None) => StreamPolicy::After(DEFAULT_STREAM_BYTES),
    };
    narrate!(
        "   -> .rodata cfg_stream_bytes = {} ({streams:?})",
        streams.bytes()
    );
    if streams.bytes() > 0 {
        obj.set_global(global::STREAM_BYTES, &streams.bytes().to_ne_bytes())?;
    }
    Ok(streams)
}

/// Fills the object's kernel fields (`kfield_*`) from the running kernel's
/// BTF and probes whether redirected bytes count as unread there; sets
/// `cfg_kfields` and `cfg_rmem_counts_redirect` accordingly.
fn read_accounting(obj: &mut Object) -> Result<ReadAccounting> {
    let names: Vec<String> = obj
        .globals()
        .filter(|g| g.name.starts_with(kfield::PREFIX))
        .map(|g| g.name.clone())
        .collect();
    if names.is_empty() || obj.global(global::KFIELDS).is_none() {
        return Ok(ReadAccounting::NotInObject);
    }
    narrate!(
        "5b. find {} fields of the kernel's struct sock in {} (rawload's CO-RE: one .rodata constant each)",
        names.len(),
        crate::vmlinux::PATH
    );
    if let Err(e) = fill_kfields(obj, &names) {
        narrate!("   -> {e:#}: the programs will not read them");
        return Ok(ReadAccounting::NoKernelFields(format!("{e:#}")));
    }
    obj.set_global(global::KFIELDS, &1u32.to_ne_bytes())?;
    narrate!("5c. probe: are bytes redirected into a socket counted in its sk_rmem_alloc?");
    let counted = probe::redirect_counts_in_rmem()?;
    narrate!(
        "   -> {counted:?}: .rodata {} = {}",
        global::RMEM_COUNTS_REDIRECT,
        u32::from(counted == Some(true))
    );
    Ok(match counted {
        Some(true) => {
            obj.set_global(global::RMEM_COUNTS_REDIRECT, &1u32.to_ne_bytes())?;
            ReadAccounting::Exact
        }
        Some(false) => ReadAccounting::NotCounted,
        None => ReadAccounting::Unknown,
    })
}

/// Resolves each `kfield_*` global against the kernel's BTF and writes it.
fn fill_kfields(obj: &mut Object, names: &[String]) -> Result<()> {
    let btf = crate::vmlinux::btf()?;
    for name in names {
        let init = obj
            .global_bytes(name)
            .context("a kfield global without bytes")?;
        let width = KField::declared_width(init).with_context(|| name.clone())?;
        let (strukt, path) = kfield::parse_name(name)?;
        let field = kfield::resolve(&btf, strukt, &path, width)?;
        narrate!(
            "   {name}: offset {} (bits {}..{})",
            field.offset,
            field.shift,
            field.shift + field.bits
        );
        obj.set_global(name, &field.to_bytes())?;
    }
    Ok(())
}

/// Sizes `rawload_conns` like the socket map (`--max-sockets`: one state
/// per socket) and tells the programs how many slots it has
/// (`cfg_conn_slots`): they pick a socket's slots from a hash of its key
/// scaled to that number, so both come from this one place.
fn conn_slots(obj: &mut Object, opts: &AttachOptions) -> Result<()> {
    let Some(i) = obj.map_index(CONNS_MAP) else {
        return Ok(());
    };
    let slots = opts.max_sockets.unwrap_or(obj.maps[i].max_entries);
    obj.maps[i].max_entries = slots;
    if obj.global(global::CONN_SLOTS).is_some() {
        obj.set_global(global::CONN_SLOTS, &slots.to_ne_bytes())?;
    }
    Ok(())
}

/// Probes FIONREAD where the object can fix it with its sk_skb verdict, and
/// sets `cfg_skb_verdict` when the verdict will be attached.
fn fionread_fix(obj: &mut Object) -> Result<FionreadFix> {
    if obj.optional_program(ProgType::SK_SKB)?.is_none()
        || obj.global(global::SKB_VERDICT).is_none()
    {
        return Ok(FionreadFix::NotInObject);
    }
    narrate!(
        "5d. probe FIONREAD for TCP bytes on a socket in a SOCKHASH (decides the sk_skb verdict)"
    );
    let fix = match probe::fionread_counts_tcp()? {
        Some(true) => FionreadFix::NotNeeded,
        Some(false) => FionreadFix::Verdict,
        None => FionreadFix::VerdictUnknown,
    };
    narrate!("   -> {fix:?}");
    if fix.attached() {
        obj.set_global(global::SKB_VERDICT, &1u32.to_ne_bytes())?;
    }
    Ok(fix)
}
