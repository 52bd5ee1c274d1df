//! httpwg (`cargo install httpwg-cli --locked`, the h2spec replacement)
//! against `ouli replay`: httpwg starts the server itself (`httpwg -a ADDR
//! -- SERVER ARGS...`), waits until it listens, then runs its 107 RFC 9113
//! cases at once, one connection each.
//!
//! The recording answers `GET /` and `POST /` with a body of at least 5
//! bytes (one flow-control case needs that); other requests are misses
//! (599), which no case minds. A plain hyper 1.x server passes 82 cases
//! on this machine: Ouli must pass at least as many.

use crate::client::{connect, request};
use crate::support::process::OULI;
use crate::support::{config_toml, start_proxy_with, stop_proxy, TempDir};
use crate::tools::{find_tool, run};
use crate::upstream::Upstream;
use bytes::Bytes;
use ouli_core::proxy::Mode;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// What a plain hyper 1.x server passes.
const HYPER_BASELINE: usize = 82;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpwg_conformance_at_least_as_good_as_hyper() {
    let Some(httpwg) = find_tool("httpwg") else {
        return;
    };
    let up = Upstream::start().await;
    let tmp = TempDir::new("httpwg");
    let dir = tmp.recordings();
    let endpoint = "target_protocol = \"h2c\"\non_repeat = \"repeat_last\"";
    let proxy = start_proxy_with(Mode::Record, &dir, &config_toml(up.port(), "", endpoint)).await;
    let send = connect(proxy.addr()).await;
    for method in ["GET", "POST"] {
        let resp = request(&send, "default", method, "/", Bytes::new()).await;
        assert_eq!(resp.body_str(), "hello from the upstream\n");
    }
    drop(send);
    stop_proxy(proxy).await;
    let up_port = up.port();
    up.stop().await;

    // httpwg needs a fixed address: take a free port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = tmp.join("httpwg.toml");
    // Replay never contacts the upstream: the stopped one's port will do.
    let toml = format!(
        "[[endpoints]]\nsource_port = {port}\ntarget_host = \"127.0.0.1\"\n\
         target_port = {}\n{endpoint}\n",
        up_port
    );
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(&httpwg);
    cmd.arg("-v")
        .arg("-a")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--frame-timeout", "1000", "--connect-timeout", "2000", "--"])
        .arg(OULI)
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg("--recording-dir")
        .arg(&dir)
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1");
    let (_, stdout, stderr) = run(cmd, Duration::from_secs(180)).await;
    let log = strip_ansi(&format!("{stdout}\n{stderr}"));
    let ran: BTreeSet<&str> = names(&log, "Running test: ");
    let passed: BTreeSet<&str> = names(&log, "Test passed: ");
    let failed: Vec<String> = log
        .split("Test failed: ")
        .skip(1)
        .map(|chunk| {
            let mut lines = chunk.lines().map(str::trim).filter(|l| !l.is_empty());
            let name = lines.next().unwrap_or("?");
            let reason = lines.next().unwrap_or("?");
            format!("{name}: {reason}")
        })
        .collect();
    let panicked: Vec<&&str> = ran
        .iter()
        .filter(|n| !passed.contains(*n) && !failed.iter().any(|f| f.starts_with(**n)))
        .collect();
    let summary = log
        .lines()
        .find(|l| l.contains("Passed ") && l.contains(" tests in "))
        .unwrap_or("(no summary line)");
    eprintln!("httpwg: {summary}");
    for f in &failed {
        eprintln!("httpwg failed: {f}");
    }
    for p in &panicked {
        eprintln!("httpwg failed (its task panicked): {p}");
    }
    assert!(
        ran.len() >= 100,
        "httpwg ran only {} cases; log:\n{log}",
        ran.len()
    );
    assert!(
        passed.len() >= HYPER_BASELINE,
        "httpwg: {} of {} cases passed, fewer than hyper's {HYPER_BASELINE}\n{summary}\nfailed: {failed:#?}\npanicked: {panicked:#?}",
        passed.len(),
        ran.len()
    );
}

fn names<'a>(log: &'a str, marker: &str) -> BTreeSet<&'a str> {
    log.lines()
        .filter_map(|l| l.split_once(marker).map(|(_, n)| n.trim()))
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
