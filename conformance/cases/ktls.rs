//! Kernel TLS switched on after the connection is established (so after
//! rawload has put it into its map), the way TLS libraries do it after
//! their handshake.

use anyhow::{Result, bail};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};

use super::{Case, Ctx, Mode, Unsupported};
use crate::net::{Sock, compare, pattern, read_exact, send_all};
use crate::obs::Obs;

pub const KTLS: Case = Case {
    name: "ktls",
    does: "(14) TCP_ULP \"tls\" and TLS 1.2 AES-GCM-128 TX/RX keys (fixed test keys, both ends) \
           after the connection is established; 64 KiB each way",
    same_when: "setup succeeds and both directions arrive intact. If plain TCP cannot do kTLS \
                (no tls module, CONFIG_TLS off), the case is unsupported on this kernel",
    run: ktls,
    cross: None,
};

/// Fixed test keys: `seed` picks the direction.
fn crypto(seed: u8) -> sockopt::TlsCryptoInfo {
    let info = libc::tls12_crypto_info_aes_gcm_128 {
        info: libc::tls_crypto_info {
            version: libc::TLS_1_2_VERSION,
            cipher_type: libc::TLS_CIPHER_AES_GCM_128,
        },
        iv: [seed; 8],
        key: [seed.wrapping_add(1); 16],
        salt: [seed.wrapping_add(2); 4],
        rec_seq: [0; 8],
    };
    sockopt::TlsCryptoInfo::Aes128Gcm(info)
}

/// One setup step. Over plain TCP a failure means the kernel cannot do
/// kTLS (unsupported); under rawload it is an observation.
fn step(ctx: &Ctx, o: &mut Obs, name: &str, r: nix::Result<()>) -> Result<bool> {
    match (r, ctx.mode) {
        (Ok(()), _) => Ok(true),
        (Err(e), Mode::Tcp) => bail!(Unsupported(format!(
            "{name}: {e:?} over plain TCP: this kernel cannot do kTLS{}",
            match e {
                Errno::ENOENT => " (no tls ULP: CONFIG_TLS off or the tls module not loaded)",
                _ => " (crypto for AES-GCM missing?)",
            }
        ))),
        (Err(e), Mode::Rawload) => {
            o.fact(name, format!("{e:?}"));
            Ok(false)
        }
    }
}

fn setup(ctx: &Ctx, o: &mut Obs, client: &Sock, server: &Sock) -> Result<bool> {
    let steps: [(&str, &Sock, u8); 4] = [
        ("client_tx", client, 1),
        ("server_rx", server, 1),
        ("server_tx", server, 7),
        ("client_rx", client, 7),
    ];
    for (name, sock) in [("client_ulp", client), ("server_ulp", server)] {
        if !step(
            ctx,
            o,
            name,
            setsockopt(sock, sockopt::TcpUlp::default(), b"tls"),
        )? {
            return Ok(false);
        }
    }
    for (name, sock, seed) in steps {
        let r = match name.ends_with("tx") {
            true => setsockopt(sock, sockopt::TcpTlsTx, &crypto(seed)),
            false => setsockopt(sock, sockopt::TcpTlsRx, &crypto(seed)),
        };
        if !step(ctx, o, name, r)? {
            return Ok(false);
        }
    }
    o.fact("setup", "ok");
    Ok(true)
}

fn ktls(ctx: &Ctx) -> Result<Obs> {
    let p = ctx.pair()?;
    let mut o = Obs::default();
    if !setup(ctx, &mut o, &p.client, &p.server)? {
        return Ok(o);
    }
    let n = 64 * 1024;
    for (name, from, to, seed) in [
        ("client_to_server", &p.client, &p.server, 17),
        ("server_to_client", &p.server, &p.client, 18),
    ] {
        let data = pattern(seed, n);
        let (got, end) = std::thread::scope(|s| -> Result<_> {
            let sender = s.spawn(|| send_all(from, &data));
            let read = read_exact(to, n, ctx.grace() * 4)?;
            let sent = sender
                .join()
                .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
            o.fact(&format!("{name}_send"), crate::net::res(sent));
            Ok(read)
        })?;
        o.fact(name, compare(&got, &data, &end));
    }
    Ok(o)
}
