//! One verified transfer between two `rawload peer` processes, and the
//! loopback byte counters that show whether it crossed the TCP/IP stack.
//!
//! Both peers are separate processes that join the given cgroup before they
//! open a socket, because a socket belongs to the cgroup of the process that
//! created it, and only sockets of the attached cgroup are redirected.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::json::Json;

/// Loopback RX + TX bytes from /proc/net/dev (of the caller's namespace).
pub fn lo_bytes() -> Result<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").context("reading /proc/net/dev")?;
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .context("/proc/net/dev has no lo line")?;
    let fields: Vec<u64> = line
        .split_once(':')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match (fields.first(), fields.get(8)) {
        (Some(rx), Some(tx)) => Ok(rx + tx),
        _ => bail!("cannot parse the lo line of /proc/net/dev: {line}"),
    }
}

/// Kills a child we started if it is still running when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Reaped {
    fn wait_until(&mut self, deadline: Instant, what: &str) -> Result<()> {
        loop {
            if self.0.try_wait().context("waiting for a peer")?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the {what} did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The outcome of one transfer.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub client: Json,
    pub server: Json,
    /// Growth of the loopback RX+TX byte counters during the transfer.
    pub lo_delta: u64,
    /// Bytes moved in both directions together.
    pub payload: u64,
}

fn field_u64(v: &Json, k: &str) -> u64 {
    v.get(k).and_then(Json::as_u64).unwrap_or(u64::MAX)
}

fn field_str<'a>(v: &'a Json, k: &str) -> &'a str {
    v.get(k).and_then(Json::as_str).unwrap_or("")
}

impl Transfer {
    /// Everything wrong with the transfer: corrupted or missing bytes,
    /// errors, digests that differ. Empty when intact.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, side) in [("client", &self.client), ("server", &self.server)] {
            if field_u64(side, "bad_bytes") != 0 {
                out.push(format!(
                    "{name} received bytes that differ from what was sent: {side}"
                ));
            }
            match side.get("errors").and_then(Json::as_array) {
                Some([]) => {}
                _ => out.push(format!("{name} reported errors: {side}")),
            }
        }
        for (from, to, a, b) in [
            ("client", "server", &self.client, &self.server),
            ("server", "client", &self.server, &self.client),
        ] {
            if field_u64(a, "bytes_sent") != field_u64(b, "bytes_received") {
                out.push(format!(
                    "{from} sent {} B, {to} received {} B",
                    field_u64(a, "bytes_sent"),
                    field_u64(b, "bytes_received")
                ));
            }
            if field_str(a, "sent_digest") != field_str(b, "recv_digest") {
                out.push(format!("{from}->{to} digests differ"));
            }
        }
        out
    }

    /// The digests of the client->server and server->client streams.
    pub fn digests(&self) -> (String, String) {
        (
            field_str(&self.client, "sent_digest").to_string(),
            field_str(&self.server, "sent_digest").to_string(),
        )
    }

    /// Blocking reads that returned EAGAIN early, on both sides (see
    /// docs/KERNEL-ISSUES.md).
    pub fn spurious_eagain(&self) -> u64 {
        [&self.client, &self.server]
            .iter()
            .map(|s| s.get("spurious_eagain").and_then(Json::as_u64).unwrap_or(0))
            .sum()
    }
}

/// Two peers and how to run them.
#[derive(Debug, Clone)]
pub struct Pair<'a> {
    /// The rawload binary.
    pub exe: &'a Path,
    /// The cgroups the server and the client join.
    pub server_cgroup: &'a Path,
    pub client_cgroup: &'a Path,
    pub listen: &'a str,
    /// The client connects here, on the port the server got unless
    /// `connect_port` says otherwise (a DNAT rule in between).
    pub connect_host: &'a str,
    pub connect_port: Option<u16>,
    /// Options for each side (`--bytes`, `--reader`, ...).
    pub server_args: Vec<String>,
    pub client_args: Vec<String>,
    pub limit: Duration,
}

/// Runs `<exe> peer serve` on `listen` and `<exe> peer connect` to
/// `connect_host` (on the port the server got), both in `cgroup`, with
/// `bytes` of payload each way per connection plus any `extra` peer options.
pub fn run_pair(
    exe: &Path,
    cgroup: &Path,
    listen: &str,
    connect_host: &str,
    bytes: u64,
    extra: &[&str],
    limit: Duration,
) -> Result<Transfer> {
    let mut args = vec!["--bytes".to_string(), bytes.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Pair {
        exe,
        server_cgroup: cgroup,
        client_cgroup: cgroup,
        listen,
        connect_host,
        connect_port: None,
        server_args: args.clone(),
        client_args: args,
        limit,
    }
    .run()
}

impl Pair<'_> {
    /// Runs both peers to completion and collects their reports.
    pub fn run(&self) -> Result<Transfer> {
        let deadline = Instant::now() + self.limit;
        let lo_before = lo_bytes()?;
        let mut server = Reaped(
            Command::new(self.exe)
                .args(["peer", "serve", "--listen", self.listen, "--cgroup"])
                .arg(self.server_cgroup)
                .args(&self.server_args)
                .stdout(Stdio::piped())
                .spawn()
                .context("starting the server peer")?,
        );
        let mut server_lines =
            BufReader::new(server.0.stdout.take().context("server stdout")?).lines();
        let first = server_lines
            .next()
            .context("the server peer exited before listening")?
            .context("reading the server peer")?;
        let bound: SocketAddr = first
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("unexpected server output {first:?}"))?;
        let port = self.connect_port.unwrap_or(bound.port());
        let to = match self.connect_host.contains(':') {
            true => format!("[{}]:{port}", self.connect_host),
            false => format!("{}:{port}", self.connect_host),
        };
        let mut client = Reaped(
            Command::new(self.exe)
                .args(["peer", "connect", "--to", &to, "--cgroup"])
                .arg(self.client_cgroup)
                .args(&self.client_args)
                .stdout(Stdio::piped())
                .spawn()
                .context("starting the client peer")?,
        );
        // Drain both outputs while the peers run: a report larger than the
        // pipe buffer would otherwise block its writer forever.
        let client_lines = BufReader::new(client.0.stdout.take().context("client stdout")?).lines();
        let server_out =
            std::thread::spawn(move || server_lines.map_while(Result::ok).collect::<Vec<_>>());
        let client_out =
            std::thread::spawn(move || client_lines.map_while(Result::ok).collect::<Vec<_>>());
        client.wait_until(deadline, "client peer")?;
        server.wait_until(deadline, "server peer")?;
        let lo_delta = lo_bytes()?.saturating_sub(lo_before);
        let last_report = |out: std::thread::JoinHandle<Vec<String>>, who: &str| -> Result<Json> {
            let lines = out
                .join()
                .map_err(|_| anyhow::anyhow!("reading the {who} peer's output failed"))?;
            let line = lines
                .last()
                .with_context(|| format!("the {who} peer printed no report"))?;
            Json::parse(line).with_context(|| format!("the {who} peer printed {line:?}"))
        };
        let server_json = last_report(server_out, "server")?;
        let client_json = last_report(client_out, "client")?;
        let payload = field_u64(&client_json, "bytes_sent")
            .saturating_add(field_u64(&server_json, "bytes_sent"));
        Ok(Transfer {
            client: client_json,
            server: server_json,
            lo_delta,
            payload,
        })
    }
}
