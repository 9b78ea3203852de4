//! The reports `rawload peer` prints, read with serde_json.
//!
//! The kernel tests read these reports through `rawload::traffic::Transfer`,
//! which parses them with rawload's own JSON reader (`rawload::json`), the
//! counterpart of the writer that printed them. Here one plain loopback
//! transfer (no root, nothing attached, a few KiB) is read with serde_json
//! as well: both readers must see the same document, so a bug shared by
//! rawload's writer and its reader cannot hide behind the other, and the
//! fields `Transfer` relies on must be there with their types.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{RAWLOAD, json, stderr};
use serde_json::Value;

/// The last line a peer printed: its report.
fn report(stdout: &str, who: &str) -> String {
    stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("the {who} peer printed nothing"))
        .to_string()
}

#[test]
fn peer_reports_read_the_same_with_serde_json() {
    let common_args = ["--bytes", "16K", "--write-size", "1-4K", "--timeout", "20"];
    let mut server = Command::new(RAWLOAD)
        .args(["peer", "serve", "--listen", "127.0.0.1:0"])
        .args(common_args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the server peer");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().expect("the server's first line").unwrap();
    let addr = first
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("unexpected server output {first:?}"))
        .to_string();
    let client = Command::new(RAWLOAD)
        .args(["peer", "connect", "--to", &addr])
        .args(common_args)
        .output()
        .expect("running the client peer");
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(server.wait().unwrap().success(), "the server peer failed");
    assert!(client.status.success(), "client: {}", stderr(&client));

    let client_line = report(&String::from_utf8_lossy(&client.stdout), "client");
    let server_line = report(&rest.join("\n"), "server");
    let mut sides = Vec::new();
    for (who, line) in [("client", &client_line), ("server", &server_line)] {
        let independent = json(line, "a peer report");
        let own = rawload::json::Json::parse(line)
            .unwrap_or_else(|e| panic!("rawload's reader refuses the {who} report: {e:#}"));
        assert_eq!(
            json(&own.to_string(), "rawload's reading of a peer report"),
            independent,
            "rawload's JSON reader and serde_json disagree on the {who} report: {line}"
        );
        assert_eq!(independent["role"], who, "{line}");
        for field in ["conns", "bytes_sent", "bytes_received", "bad_bytes"] {
            assert!(independent[field].is_u64(), "{who} {field}: {line}");
        }
        for field in ["sent_digest", "recv_digest"] {
            assert!(independent[field].is_string(), "{who} {field}: {line}");
        }
        assert_eq!(independent["bad_bytes"], 0, "{line}");
        assert_eq!(independent["errors"], Value::Array(vec![]), "{line}");
        sides.push(independent);
    }
    let [client, server] = &sides[..] else {
        unreachable!()
    };
    for (from, to) in [(client, server), (server, client)] {
        // (--bytes of payload, plus the 8-byte stream id.)
        assert!(from["bytes_sent"].as_u64() > Some(16 * 1024), "{from}");
        assert_eq!(from["bytes_sent"], to["bytes_received"], "{from}\n{to}");
        assert_eq!(from["sent_digest"], to["recv_digest"], "{from}\n{to}");
    }
}
